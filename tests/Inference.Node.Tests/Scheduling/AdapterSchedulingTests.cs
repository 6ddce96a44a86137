using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;
using Xunit;

namespace Serving.Inference.Node.Tests.Scheduling;

/// <summary>Adapter slots in the scheduler: rows get their adapter, slots rotate, nobody starves.</summary>
public sealed class AdapterSchedulingTests : IDisposable
{
    private readonly DecoderModel _model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 128, Threads = 1, AdapterSlots = 4 });
    private readonly ITokenizer _tokenizer;
    private readonly List<IDisposable> _owned = [];

    public AdapterSchedulingTests() => _tokenizer = TokenizerLoader.Load(Models.TinyGpt2, _model.Config.VocabSize);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _model.Dispose();
    }

    /// <summary>A random rank-<paramref name="rank"/> adapter on all four GPT-2 projections of every layer.</summary>
    internal static AdapterRef RandomAdapter(ModelConfig c, int seed, int rank = 4)
    {
        var rng = new Random(seed);
        var modules = new List<LoraModule>();
        int d = c.HiddenSize, f = c.IntermediateSize;
        foreach (var (name, inDim, outDim) in new[] { ("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, f), ("mlp.c_proj", f, d) })
        {
            for (var l = 0; l < c.NumLayers; l++)
            {
                var a = new float[rank * inDim];
                var b = new float[outDim * rank];
                for (var i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
                for (var i = 0; i < b.Length; i++) b[i] = (float)(rng.NextDouble() * 2 - 1);
                modules.Add(new LoraModule(name, l, rank, 1f, a, b));
            }
        }
        return new AdapterRef($"t/a{seed}@1", AdapterFactors.FromLora(c, modules));
    }

    private GenerationScheduler Scheduler(int rows, SchedulerOptions? options = null)
    {
        var decoder = new BatchDecoder(_model, rows);
        var scheduler = new GenerationScheduler(decoder, _tokenizer, options);
        _owned.Add(scheduler);
        _owned.Add(decoder);
        return scheduler;
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens, AdapterRef? adapter) => new()
    {
        PromptTokens = prompt,
        Sampling = new SamplingParameters { MaxTokens = maxTokens, Temperature = 0f, IgnoreEos = true },
        Logprobs = true,
        Adapter = adapter,
    };

    private static GenerationHandle Submit(GenerationScheduler s, GenerationRequest r)
    {
        Assert.Equal(SubmitStatus.Accepted, s.Submit(r, out var h));
        return h!;
    }

    private sealed class Tracked(GenerationHandle handle, long submittedAt)
    {
        public GenerationHandle Handle { get; } = handle;
        public long SubmittedAt { get; } = submittedAt;
        public long FirstTokenAt { get; set; } = -1;
        public List<int> Tokens { get; } = [];
    }

    private static void Pump(GenerationScheduler s, IEnumerable<Tracked> tracked)
    {
        foreach (var t in tracked)
        {
            while (t.Handle.Events.TryRead(out var e))
            {
                if (e.Kind != GenerationEventKind.Token || e.TokenId < 0) continue;
                if (t.FirstTokenAt < 0) t.FirstTokenAt = s.Status.Steps;
                t.Tokens.Add(e.TokenId);
            }
        }
    }

    private List<int> Alone(GenerationRequest r)
    {
        var s = Scheduler(rows: 1);
        var t = new Tracked(Submit(s, r), 0);
        for (var i = 0; i < 500 && !t.Handle.Events.Completion.IsCompleted; i++)
        {
            s.Step();
            Pump(s, [t]);
        }
        Assert.True(t.Handle.Events.Completion.IsCompleted);
        return t.Tokens;
    }

    [Fact]
    public void TwentyAdaptersOnFourSlots_AllComplete_WithTheirOwnTokens_AndBoundedWaits()
    {
        const int maxTokens = 6;
        var c = _model.Config;
        var adapters = Enumerable.Range(0, 20).Select(i => RandomAdapter(c, seed: 100 + i)).ToArray();
        var requests = adapters.Select((a, i) => Request([1 + i, 2, 3], maxTokens, a))
            .Concat([Request([7, 8, 9], maxTokens, null), Request([9, 8, 7], maxTokens, null)]).ToArray();

        var s = Scheduler(rows: 8);
        var tracked = requests.Select(r => new Tracked(Submit(s, r), 0)).ToList();
        var steps = 0;
        for (; steps < 2000 && tracked.Any(t => !t.Handle.Events.Completion.IsCompleted); steps++)
        {
            s.Step();
            Pump(s, tracked);
            Assert.True(s.Status.DeviceAdapters.Count <= 4);
        }
        Assert.All(tracked, t => Assert.True(t.Handle.Events.Completion.IsCompleted));

        // Each request produced exactly what it produces alone (its rows ran with its own adapter).
        for (var i = 0; i < requests.Length; i++) Assert.Equal(Alone(requests[i]), tracked[i].Tokens);
        // Adapters matter: the first adapter's request differs from the same prompt on the base model.
        Assert.NotEqual(Alone(requests[0] with { Adapter = null }), tracked[0].Tokens);

        // Bounded wait: 20 adapters through 4 slots is 5 rounds of at most (prompt + maxTokens + 1) iterations each.
        var round = 3 + maxTokens + 1;
        var bound = (20 / 4) * round + 1;
        Assert.All(tracked, t => Assert.True(t.FirstTokenAt <= bound, $"a request waited until step {t.FirstTokenAt} (bound {bound})"));
    }

    [Fact]
    public void HotAdapterTraffic_DoesNotStarveAColdAdapter()
    {
        var c = _model.Config;
        var hot = RandomAdapter(c, seed: 1);
        var cold = RandomAdapter(c, seed: 2);
        const int fairness = 5, maxTokens = 8;
        // One slot: the hot adapter's stream of requests would hold it forever without the fairness rule.
        using var model = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 128, Threads = 1, AdapterSlots = 1 });
        using var decoder = new BatchDecoder(model, 4);
        using var s = new GenerationScheduler(decoder, _tokenizer, new SchedulerOptions { AdapterFairnessSteps = fairness });
        var tracked = new List<Tracked>();
        for (var i = 0; i < 3; i++) tracked.Add(new Tracked(Submit(s, Request([1, 2], maxTokens, hot)), 0));
        s.Step();
        var coldRequest = new Tracked(Submit(s, Request([3, 4], maxTokens, cold)), s.Status.Steps);
        tracked.Add(coldRequest);
        for (var step = 0; step < 200 && !coldRequest.Handle.Events.Completion.IsCompleted; step++)
        {
            // Keep the hot adapter busy: a new hot request every step.
            if (s.Status.Waiting < 8) tracked.Add(new Tracked(Submit(s, Request([5, 6], maxTokens, hot)), s.Status.Steps));
            s.Step();
            Pump(s, tracked);
        }
        Assert.True(coldRequest.Handle.Events.Completion.IsCompleted, "the cold adapter's request never finished");
        var waited = coldRequest.FirstTokenAt - coldRequest.SubmittedAt;
        Assert.True(waited <= fairness + maxTokens + 4, $"the cold request waited {waited} steps");
        Assert.Equal(Alone(Request([3, 4], maxTokens, cold)), coldRequest.Tokens);
    }

    [Fact]
    public void TenantWithABacklog_DoesNotDelayALightlyServedTenant()
    {
        const int maxTokens = 6;
        var s = Scheduler(rows: 2);
        GenerationRequest For(string tenant, int i) => Request([1 + i, 2], maxTokens, null) with { Tenant = tenant };
        // Tenant A queues 12 requests; then tenant B sends 2.
        var a = Enumerable.Range(0, 12).Select(i => new Tracked(Submit(s, For("a", i)), 0)).ToList();
        var b = Enumerable.Range(0, 2).Select(i => new Tracked(Submit(s, For("b", i)), 0)).ToList();
        var all = a.Concat(b).ToList();
        for (var step = 0; step < 500 && all.Any(t => !t.Handle.Events.Completion.IsCompleted); step++)
        {
            s.Step();
            Pump(s, all);
        }
        Assert.All(all, t => Assert.True(t.Handle.Events.Completion.IsCompleted));
        // FIFO would start B after all 12 of A's; least-served-first starts both of B's among the first few.
        var order = all.OrderBy(t => t.FirstTokenAt).ToList();
        Assert.True(order.IndexOf(b[0]) <= 3 && order.IndexOf(b[1]) <= 5,
            $"B's requests started {order.IndexOf(b[0])}th and {order.IndexOf(b[1])}th");
        // Within a tenant the order stays FIFO.
        Assert.Equal(a.Select(t => t.FirstTokenAt).Order(), a.Select(t => t.FirstTokenAt));
    }

    [Fact]
    public void AdapterThatDoesNotFit_OrANodeWithoutSlots_IsRefusedAtSubmit()
    {
        var c = _model.Config;
        using var plain = DecoderModel.Load(Models.TinyGpt2, new RuntimeOptions { MaxContext = 64, Threads = 1 });
        using var decoder = new BatchDecoder(plain, 2);
        using var s = new GenerationScheduler(decoder, _tokenizer);
        var e = Assert.Throws<SamplingParameterException>(() => s.Submit(Request([1], 2, RandomAdapter(c, 1)), out _));
        Assert.Equal("model", e.Param);

        var big = Scheduler(rows: 2);
        var tooBig = RandomAdapter(c, seed: 3, rank: 65);
        var e2 = Assert.Throws<SamplingParameterException>(() => big.Submit(Request([1], 2, tooBig), out _));
        Assert.Contains("slot capacity", e2.Message);
    }
}
