using System.Net;
using System.Text.Json.Nodes;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tokenization;
using Serving.Perplexity;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// The demo model on a node serving the demo adapters from their folders, and the same model loaded here with one
/// adapter slot: the engine's own teacher-forced prefill is the reference for what <c>echo</c> reports.
/// </summary>
public sealed class EchoFixture : IAsyncLifetime
{
    public const int Context = 256;

    public static string Demo { get; } = FindDemo();

    public NodeServer Server { get; private set; } = null!;
    public DecoderModel Model { get; private set; } = null!;
    public ITokenizer Tokenizer { get; private set; } = null!;

    private static string FindDemo()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) dir = dir.Parent;
        return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found"), "models", "demo");
    }

    public async Task InitializeAsync()
    {
        Model = DecoderModel.Load(Demo, new RuntimeOptions { MaxBatch = 1, MaxContext = Context, AdapterSlots = 1, AdapterMaxRank = 64 });
        Tokenizer = TokenizerLoader.Load(Demo, Model.Config.VocabSize);
        Server = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:ModelPath"] = Demo,
            ["Node:ModelId"] = "demo",
            ["Node:MaxContext"] = Context.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Node:AdapterDirectory"] = Path.Combine(Demo, "adapters"),
        });
    }

    /// <summary>Logits [n, V] of a teacher-forced prefill of <paramref name="prompt"/>, with the demo adapter <paramref name="adapter"/> (null: the base).</summary>
    public float[] Prefill(int[] prompt, string? adapter)
    {
        using var dec = new BatchDecoder(Model);
        var seq = dec.TryAllocate()!;
        if (adapter is not null)
        {
            var folder = Path.Combine(Demo, "adapters", adapter);
            var payload = PeftAdapterReader.Read(File.ReadAllBytes(Path.Combine(folder, "adapter_config.json")),
                File.ReadAllBytes(Path.Combine(folder, "adapter_model.safetensors")), BaseModelShape.FromConfig(Model.Config)).Payload;
            var lora = AdapterMaterializer.Materialize(payload);
            dec.Adapters!.Write(0, AdapterFactors.FromLora(Model.Config, lora.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B))));
            dec.SetAdapter(seq, 0);
        }
        var logits = new float[prompt.Length * Model.Config.VocabSize];
        dec.Prefill(seq, prompt, allLogits: logits);
        dec.Release(seq);
        return logits;
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Model.Dispose();
    }
}

/// <summary>
/// Issue 14: loglikelihood through the API as lm-evaluation-harness asks for it — <c>/v1/completions</c> with
/// <c>echo</c>, <c>max_tokens: 0</c> and <c>logprobs</c> — against a log-softmax in double of the engine's teacher-forced logits.
/// </summary>
public sealed class EchoTests(EchoFixture fx) : IClassFixture<EchoFixture>
{
    /// <summary>A German line of the demo's test split, long enough for the node to prefill it in several 32-token chunks.</summary>
    private const string German = "<|endoftext|>Wußten Sie schon...\n... daß Johann Wolfgang von Goethe erfolglos geblieben wäre, wenn er\n"
        + "mit Vornamen Günther geheißen hätte? Zeigt mir einen Mann der Gewalttat, mit dem es ein gutes Ende genommen hat.";

    private const int Top = 3;

    private HttpClient Http => fx.Server.Http;

    private async Task<JsonObject> PostAsync(object body)
    {
        using var response = await Http.SendAsync(Sse.Post("v1/completions", body));
        var json = await Sse.JsonAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, json.ToJsonString());
        return json;
    }

    /// <summary>log p(prompt[j] | prompt[..j]) for j ≥ 1 and the top ids at each position, in double.</summary>
    private (double[] Logprobs, int[][] TopIds, double[][] TopLogprobs) Reference(int[] prompt, string? adapter)
    {
        var v = fx.Model.Config.VocabSize;
        var logits = fx.Prefill(prompt, adapter);
        var lp = new double[prompt.Length];
        var ids = new int[prompt.Length][];
        var tops = new double[prompt.Length][];
        for (var j = 1; j < prompt.Length; j++)
        {
            var row = logits.AsSpan((j - 1) * v, v).ToArray();
            double max = row.Max(), z = 0;
            foreach (var x in row) z += Math.Exp(x - max);
            var logZ = max + Math.Log(z);
            lp[j] = row[prompt[j]] - logZ;
            ids[j] = Enumerable.Range(0, v).OrderByDescending(i => row[i]).ThenBy(i => i).Take(Top).ToArray();
            tops[j] = ids[j].Select(i => row[i] - logZ).ToArray();
        }
        return (lp, ids, tops);
    }

    [Theory]
    [InlineData("demo", null)]
    [InlineData("demo:public/german", "german")]
    public async Task Echo_MaxTokensZero_ReturnsTheEnginesTeacherForcedLogprobs(string model, string? adapter)
    {
        var prompt = fx.Tokenizer.Encode(German);
        Assert.True(prompt.Length > 64, $"the prompt must span several prefill chunks, has {prompt.Length} tokens");
        var json = await PostAsync(new { model, prompt = German, max_tokens = 0, echo = true, logprobs = Top });

        var choice = json["choices"]![0]!;
        Assert.Equal(German, (string)choice["text"]!);
        Assert.Equal("length", (string)choice["finish_reason"]!);
        Assert.Equal(prompt.Length, (int)json["usage"]!["prompt_tokens"]!);
        Assert.Equal(0, (int)json["usage"]!["completion_tokens"]!);
        var lp = choice["logprobs"]!;
        var tokens = lp["tokens"]!.AsArray().Select(t => (string)t!).ToArray();
        var logprobs = lp["token_logprobs"]!.AsArray();
        var top = lp["top_logprobs"]!.AsArray();
        var offsets = lp["text_offset"]!.AsArray().Select(o => (int)o!).ToArray();
        Assert.Equal(prompt.Length, tokens.Length);
        Assert.Equal(prompt.Length, logprobs.Count);
        Assert.Equal(prompt.Length, top.Count);
        Assert.Null(logprobs[0]);
        Assert.Null(top[0]);

        var (expected, topIds, topLogprobs) = Reference(prompt, adapter);
        for (var j = 0; j < prompt.Length; j++)
        {
            Assert.Equal(fx.Tokenizer.Decode([prompt[j]]), tokens[j]);
            if (!tokens[j].Contains('\uFFFD')) Assert.True(German.AsSpan(offsets[j]).StartsWith(tokens[j]), $"token {j} '{tokens[j]}' is not at offset {offsets[j]}");
            if (j == 0) continue;
            Assert.InRange(Math.Abs((double)logprobs[j]! - expected[j]), 0, 1e-4);
            var alternatives = top[j]!.AsObject();
            var texts = topIds[j].Select(i => fx.Tokenizer.Decode([i])).ToArray();
            Assert.Equal(texts.Distinct().Count(), alternatives.Count);
            for (var k = 0; k < Top; k++)
            {
                if (texts.Count(t => t == texts[k]) > 1) continue; // two ids with one text share a key
                Assert.InRange(Math.Abs((double)alternatives[texts[k]]! - topLogprobs[j][k]), 0, 1e-4);
            }
        }
        Assert.Equal(0, offsets[0]);
        Assert.True(offsets.Zip(offsets.Skip(1)).All(p => p.First <= p.Second), "text offsets must not decrease");

        if (adapter is not null)
        {
            // The adapter is what is scored: the base's logprobs of the same text differ clearly.
            var (baseLogprobs, _, _) = Reference(prompt, null);
            var shift = Enumerable.Range(1, prompt.Length - 1).Average(j => expected[j] - baseLogprobs[j]);
            Assert.True(shift > 0.3, $"the German adapter should make German text likelier: mean shift {shift:F3}");
        }
    }

    [Fact]
    public async Task Echo_WithMaxTokens_PrependsThePromptAndItsLogprobsToTheCompletion()
    {
        var ids = fx.Tokenizer.Encode("<|endoftext|>Der Hund und die Katze");
        var promptText = fx.Tokenizer.Decode(ids);
        var plain = await PostAsync(new { model = "demo", prompt = ids, max_tokens = 4, temperature = 0, ignore_eos = true, logprobs = 1 });
        // lm-evaluation-harness's form: a batch of one token list.
        var echoed = await PostAsync(new { model = "demo", prompt = new[] { ids }, max_tokens = 4, temperature = 0, ignore_eos = true, logprobs = 1, echo = true });
        var scored = await PostAsync(new { model = "demo", prompt = ids, max_tokens = 0, logprobs = 1, echo = true });

        var p = plain["choices"]![0]!;
        var e = echoed["choices"]![0]!;
        var completion = (string)p["text"]!;
        Assert.Equal(promptText + completion, (string)e["text"]!);
        Assert.Equal(4, (int)echoed["usage"]!["completion_tokens"]!);
        var n = ids.Length;
        var eTokens = e["logprobs"]!["tokens"]!.AsArray();
        var eLogprobs = e["logprobs"]!["token_logprobs"]!.AsArray();
        var eOffsets = e["logprobs"]!["text_offset"]!.AsArray();
        var pLogprobs = p["logprobs"]!["token_logprobs"]!.AsArray();
        var pOffsets = p["logprobs"]!["text_offset"]!.AsArray();
        var sLogprobs = scored["choices"]![0]!["logprobs"]!["token_logprobs"]!.AsArray();
        Assert.Equal(n + 4, eTokens.Count);
        Assert.Equal(n, sLogprobs.Count);
        Assert.Null(eLogprobs[0]);
        for (var j = 1; j < n; j++) Assert.InRange(Math.Abs((double)eLogprobs[j]! - (double)sLogprobs[j]!), 0, 1e-5);
        for (var k = 0; k < 4; k++)
        {
            Assert.Equal((string)p["logprobs"]!["tokens"]![k]!, (string)eTokens[n + k]!);
            Assert.InRange(Math.Abs((double)eLogprobs[n + k]! - (double)pLogprobs[k]!), 0, 1e-5);
            Assert.Equal(promptText.Length + (int)pOffsets[k]!, (int)eOffsets[n + k]!);
        }
    }

    [Fact]
    public async Task Echo_WithoutLogprobs_ReturnsThePromptAndNoLogprobs()
    {
        var json = await PostAsync(new { model = "demo", prompt = "<|endoftext|>Der Hund", max_tokens = 0, echo = true });
        var choice = json["choices"]![0]!;
        Assert.Equal("<|endoftext|>Der Hund", (string)choice["text"]!);
        Assert.Null(choice["logprobs"]);
        Assert.Equal("length", (string)choice["finish_reason"]!);
    }

    [Fact]
    public async Task PerplexityScorer_OnTheNode_SumsTheEnginesLogprobsAndHalvesChunksLongerThanTheContext()
    {
        const string prefix = "<|endoftext|>";
        var shortChunk = German[prefix.Length..];
        var longChunk = string.Join("\n", Enumerable.Repeat(shortChunk, 5));
        Assert.True(fx.Tokenizer.Encode(prefix + longChunk).Length >= EchoFixture.Context, "the long chunk must not fit the node's context");
        Assert.True(TextChunks.TryHalve(longChunk, out var first, out var second));

        double expectedSum = 0;
        long expectedTokens = 0;
        foreach (var chunk in new[] { shortChunk, first, second })
        {
            var ids = fx.Tokenizer.Encode(prefix + chunk);
            Assert.True(ids.Length < EchoFixture.Context, "each half must fit");
            Assert.Equal(0, ids[0]); // the prefix is one token, the context of the rest
            var (logprobs, _, _) = Reference(ids, "german");
            expectedSum += logprobs.Skip(1).Sum();
            expectedTokens += ids.Length - 1;
        }

        var scorer = new PerplexityScorer(Http, new ScorerOptions { Prefix = prefix, Parallel = 2 });
        var result = await scorer.ScoreAsync("demo:public/german", [shortChunk, longChunk]);
        Assert.Equal(expectedTokens, result.Tokens);
        Assert.InRange(Math.Abs(result.LogprobSum - expectedSum), 0, 1e-4 * expectedTokens);
        Assert.Equal(Math.Exp(-expectedSum / expectedTokens), result.Perplexity, 1e-3);
    }

    [Fact]
    public async Task PerplexityScorer_ByTokens_SumsTheEnginesLogprobsOverWindowsThatFitTheContext()
    {
        var doc = fx.Tokenizer.Encode(string.Join("\n", Enumerable.Repeat(German, 8)));
        const int window = EchoFixture.Context - 1, overlap = 100;
        Assert.True(doc.Length > 2 * window, $"the document must need three windows, has {doc.Length} tokens");

        // The scored tokens of each window, from the engine's own prefill of exactly those ids, in double.
        var windows = TokenWindows.Plan(doc.Length, 1, window, overlap);
        Assert.True(windows.Count >= 3, $"{windows.Count} windows");
        double expectedSum = 0;
        foreach (var w in windows)
        {
            var (logprobs, _, _) = Reference(doc[w.Start..w.End], "german");
            expectedSum += logprobs.Skip(w.ScoredFrom - w.Start).Sum();
        }

        var scorer = new PerplexityScorer(Http, new ScorerOptions { Parallel = 2 });
        Assert.Equal(EchoFixture.Context, await scorer.ContextLengthAsync("demo:public/german"));
        var result = await scorer.ScoreTokensAsync("demo:public/german", [doc], 1, window, overlap);
        Assert.Equal(doc.Length - 1, result.Tokens);
        Assert.InRange(Math.Abs(result.LogprobSum - expectedSum), 0, 1e-4 * result.Tokens);

        // One window of the whole document does not fit: the scorer says so instead of scoring less.
        var e = await Assert.ThrowsAsync<PerplexityException>(() => scorer.ScoreTokensAsync("demo:public/german", [doc], 1, doc.Length, 1));
        Assert.Contains("does not fit the model's context", e.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, string, string> Refused => new()
    {
        { """{"model":"demo","prompt":"Der","max_tokens":0,"echo":true,"logprobs":1,"stream":true}""", "echo", "stream" },
        { """{"model":"demo","prompt":"Der","max_tokens":2,"echo":true,"logprobs":1,"n":2}""", "echo", "n and best_of must be 1" },
        { """{"model":"demo","prompt":"Der","max_tokens":2,"echo":true,"n":2,"best_of":2}""", "echo", "n and best_of must be 1" },
        { """{"model":"demo","prompt":"Der","max_tokens":0,"echo":true,"alignment":{"method":"best_of_n"}}""", "echo", "alignment" },
        { """{"model":"demo","prompt":"Der","max_tokens":0,"echo":true,"early_exit":{"mode":"confident"}}""", "echo", "early_exit" },
        { """{"model":"demo","prompt":"Der","max_tokens":0}""", "max_tokens", "echo: true" },
        { """{"model":"demo","prompt":"Der","max_tokens":0,"echo":true,"logprobs":6}""", "logprobs", "between 0 and 5" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task Echo_UnsupportedCombination_Is400NamingTheField(string body, string param, string message)
    {
        using var response = await Http.PostAsync("v1/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        var json = await Sse.JsonAsync(response);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(param, (string?)json["error"]!["param"]);
        Assert.Contains(message, (string)json["error"]!["message"]!, StringComparison.Ordinal);
    }
}
