using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Reference;
using Serving.Inference.Tests.Rewards;
using Xunit;

namespace Serving.Inference.Tests.Engine;

/// <summary>
/// The device-resident decoder state the CUDA provider binds (issue #17 part 4: K/V cache, hidden states, positions and
/// lengths in device memory; uploads, downloads and slot copies through the copier graph), run on the CPU with
/// separate host allocations standing in for the device (<see cref="RuntimeOptions.EmulateDeviceMemory"/>) — no GPU
/// here. Every scenario runs twice, host-bound and device-bound (two loads of the same graphs): the logits must be the
/// same bits, and the float64 reference checks both.
/// </summary>
public sealed class DeviceMemoryTests
{
    private const int MaxContext = 40;

    [Fact]
    public void Copier_HostToDeviceAndBack_CopiesTheRangesExactlyAndNothingElse()
    {
        using var device = DeviceMemory.For(new RuntimeOptions { EmulateDeviceMemory = true })!;
        Assert.True(device.Emulated);
        using var buffer = device.Allocate<float>(1000);
        var host = new NativeBuffer<float>(1000);
        var rng = new Random(3);
        for (var i = 0; i < host.Length; i++) host.Span[i] = (float)rng.NextDouble() - 0.5f;
        using (var from = host.Bytes(100, 300))
        using (var to = buffer.Bytes(200, 300))
        using (var from2 = host.Bytes(0, 7))
        using (var to2 = buffer.Bytes(900, 7))
        {
            device.CopyOnce([from, from2], [to, to2]); // two pairs in one run
        }
        var back = new NativeBuffer<float>(1000);
        back.Span.Fill(float.NaN);
        using (var from = buffer.Bytes(0, 1000))
        using (var to = back.Bytes(0, 1000))
        {
            device.CopyOnce([from], [to]);
        }
        for (var i = 0; i < 1000; i++)
        {
            var expected = i is >= 200 and < 500 ? host.Span[i - 100] : i is >= 900 and < 907 ? host.Span[i - 900] : 0f; // allocations start zeroed
            Assert.Equal(expected, back.Span[i]);
        }
        Assert.Equal(4000, device.AllocatedBytes);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.View(990, 1, 11));
    }

    public static TheoryData<string, ComputePrecision> Engines => new()
    {
        { "gpt2", ComputePrecision.Float32 }, { "llama", ComputePrecision.Float32 },
        { "gpt2", ComputePrecision.Float16 }, { "llama", ComputePrecision.Float16 },
    };

    [Theory]
    [MemberData(nameof(Engines))]
    public void Engine_DeviceResidentState_SameLogitsAsHostBound_ThroughForkReleaseAndSharedPrefix(string family, ComputePrecision precision)
    {
        // Base and adapter rows (the stock-operator kernel CUDA uses), prompts of different lengths, decode steps, a fork,
        // a release that moves the last row's cache into the freed slot, a shared prefix, more decode steps.
        var dir = family == "gpt2" ? Fixtures.TinyGpt2 : Fixtures.TinyLlama;
        var options = new RuntimeOptions
        {
            MaxBatch = 4, MaxContext = MaxContext, AdapterSlots = 2, AdapterKernel = AdapterKernelKind.BatchedMatMul, Precision = precision,
        };
        using var probe = DecoderModel.Load(dir, options);
        var c = probe.Config;
        var modules = AdapterTests.RandomModules(c, seed: 11, rankBase: 2);
        var modules2 = AdapterTests.RandomModules(c, seed: 12, rankBase: 3);
        ReferenceModel[] references =
        [
            new ReferenceModel(dir), new ReferenceModel(dir, AdapterTests.MergedDeltas(c, (modules, 1.0))),
            new ReferenceModel(dir, AdapterTests.MergedDeltas(c, (modules2, 1.0))),
        ];
        var tolerance = precision == ComputePrecision.Float32 ? 1e-4 : 1e-2;

        (List<float[]> Logits, List<float[]> Cache, float[] HostHidden) Run(bool device)
        {
            using var model = DecoderModel.Load(dir, options with { EmulateDeviceMemory = device });
            using var dec = new BatchDecoder(model);
            dec.Adapters!.Write(1, AdapterFactors.FromLora(c, modules));
            dec.Adapters.Write(0, AdapterFactors.FromLora(c, modules2)); // two adapters: mixed steps compact the slots (block swaps)
            var log = new List<float[]>();
            var tokens = new Dictionary<Sequence, (List<int> Ids, int Adapter)>();
            void Record(ReadOnlySpan<float> logits, Sequence seq, string what)
            {
                var (ids, adapter) = tokens[seq];
                var expected = references[adapter].Forward(ids).Logits[^1];
                var scale = precision == ComputePrecision.Float32 ? 1 : Math.Max(1, expected.Max(Math.Abs)); // fp16: relative to the largest logit
                ReferenceLogitsTests.AssertClose(expected, logits.ToArray(), tolerance * scale, $"{family} {precision} device={device} {what}");
                log.Add(logits.ToArray());
                seq.PendingToken = ReferenceLogitsTests.ArgMax(logits);
            }
            Sequence Start(int[] prompt, int adapter)
            {
                var seq = dec.TryAllocate()!;
                if (adapter > 0) dec.SetAdapter(seq, adapter == 1 ? 1 : 0);
                tokens[seq] = ([.. prompt], adapter);
                Record(dec.Prefill(seq, prompt), seq, $"prefill of {prompt.Length}");
                return seq;
            }
            void Step(string what)
            {
                foreach (var seq in dec.Active) tokens[seq].Ids.Add(seq.PendingToken);
                var logits = dec.Decode();
                for (var r = 0; r < dec.ActiveCount; r++) Record(logits.Slice(r * c.VocabSize, c.VocabSize), dec.Active[r], $"{what}, row {r}");
            }
            var a = Start([3, 141, 59, 26, 5], adapter: 0);
            var b = Start([7, 2, 99], adapter: 1);
            Step("decode 0"); // a base row and slot 1's row: the batched graph moves slot 1's block to position 0 (a swap)
            Assert.True(dec.Adapters.Swaps > 0);
            var d = Start([20, 21, 22, 23, 24, 25, 26], adapter: 2);
            for (var s = 1; s < 3; s++) Step($"decode {s}");
            var fork = dec.TryFork(a)!; // a copy of a's cache in slot 3
            tokens[fork] = ([.. tokens[a].Ids], 0);
            fork.PendingToken = 17; // a different continuation
            Step("after the fork");
            dec.Release(b); // the fork (last slot) moves into b's slot
            Step("after the release");
            var shared = dec.TryAllocate()!;
            dec.SetAdapter(shared, 0);
            var prefix = tokens[d].Ids.Take(5).ToArray();
            dec.SharePrefix(d, shared, prefix.Length);
            tokens[shared] = ([.. prefix], 2);
            var rest = new[] { 40, 41 };
            tokens[shared].Ids.AddRange(rest);
            Record(dec.Prefill(shared, rest), shared, "prefill after a shared prefix");
            for (var s = 0; s < 3; s++) Step($"decode {s} after the shared prefix");

            var cache = new List<float[]>();
            var kv = dec.KvCacheForTests;
            Assert.Equal(device, kv.OnDevice);
            for (var r = 0; r < dec.ActiveCount; r++)
            {
                var length = dec.Active[r].Length;
                for (var l = 0; l < c.NumLayers; l++)
                {
                    foreach (var key in new[] { true, false })
                    {
                        var slot = kv.ReadSlot(l, key, r);
                        var used = new List<float>();
                        for (var h = 0; h < c.NumKvHeads; h++) used.AddRange(slot.AsSpan(h * MaxContext * c.HeadDim, length * c.HeadDim).ToArray());
                        cache.Add([.. used]);
                    }
                }
            }
            return (log, cache, dec.BuffersForTests.HiddenB.Span.ToArray());
        }

        var host = Run(device: false);
        var onDevice = Run(device: true);
        Assert.Equal(host.Logits.Count, onDevice.Logits.Count);
        for (var i = 0; i < host.Logits.Count; i++) Assert.True(host.Logits[i].AsSpan().SequenceEqual(onDevice.Logits[i]), $"logits {i} differ between the host-bound and the device-resident decoder");
        Assert.Equal(host.Cache.Count, onDevice.Cache.Count);
        for (var i = 0; i < host.Cache.Count; i++) Assert.True(host.Cache[i].AsSpan().SequenceEqual(onDevice.Cache[i]), $"cached K/V {i} differs");
        // The blocks wrote the device copies: the host hidden buffer a layer writes was never touched on the device path.
        Assert.Contains(host.HostHidden, v => v != 0f);
        Assert.All(onDevice.HostHidden, v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData("head")]
    [InlineData("otter")]
    public void RewardHeads_OnDeviceResidentState_ReadTheHiddenStatesBack(string kind)
    {
        // Host code that reads a block's input (reward heads, Otter side networks, captures) downloads it first.
        var dir = Fixtures.TinyLlama;
        var c = Serving.Checkpoints.ModelConfig.Load(Path.Combine(dir, "config.json"));
        var headDir = kind == "head" ? RewardHeadTests.WriteRandomHead(c, 1, "hidden", "gelu", "mean", seed: 4) : OtterTests.WriteRandomOtter(c, seed: 4);
        int[] prompt = [5, 17, 42, 7, 99, 3];

        (List<float> Rewards, float[] Hidden) Run(bool device)
        {
            using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 2, MaxContext = MaxContext, EmulateDeviceMemory = device });
            using var head = kind == "head"
                ? new RewardHead(RewardHeadReader.ReadFolder(headDir, c), model, "t/h@1")
                : new RewardHead(OtterReader.ReadFolder(headDir, c), model, "t/otter@1");
            using var dec = new BatchDecoder(model);
            var seq = dec.TryAllocate()!;
            var plain = dec.TryAllocate()!;
            dec.SetRewardHead(seq, head);
            var hidden = new float[(c.NumLayers + 1) * prompt.Length * c.HiddenSize];
            var rewards = new List<float>();
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, prompt, hidden));
            rewards.Add(seq.Reward);
            plain.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(plain, [9, 8, 7]));
            for (var s = 0; s < 4; s++)
            {
                var logits = dec.Decode();
                rewards.Add(seq.Reward);
                seq.PendingToken = ReferenceLogitsTests.ArgMax(logits[..c.VocabSize]);
                plain.PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(c.VocabSize, c.VocabSize));
            }
            return (rewards, hidden);
        }

        var host = Run(device: false);
        var onDevice = Run(device: true);
        Assert.Equal(host.Hidden, onDevice.Hidden);
        Assert.Equal(host.Rewards, onDevice.Rewards);
        Assert.True(host.Rewards.Distinct().Count() > 1, "the reward never moved: the comparison saw no real scores");
    }

    [Fact]
    public void Decode_DeviceResidentState_AllocatesNothingPerStep()
    {
        // Two base rows and one adapter row: the batched kernel's mixed step, its grid sent to the device every step.
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions
        {
            MaxBatch = 3, MaxContext = 128, EmulateDeviceMemory = true, AdapterSlots = 2, AdapterKernel = AdapterKernelKind.BatchedMatMul,
        });
        using var dec = new BatchDecoder(model);
        var v = model.Config.VocabSize;
        dec.Adapters!.Write(1, AdapterFactors.FromLora(model.Config, AdapterTests.RandomModules(model.Config, seed: 2, rankBase: 2)));
        for (var i = 0; i < 3; i++)
        {
            var seq = dec.TryAllocate()!;
            if (i == 1) dec.SetAdapter(seq, 1);
            seq.PendingToken = ReferenceLogitsTests.ArgMax(dec.Prefill(seq, [3 + i, 14, 15, 92]));
        }
        void Step()
        {
            var logits = dec.Decode();
            for (var r = 0; r < dec.ActiveCount; r++) dec.Active[r].PendingToken = ReferenceLogitsTests.ArgMax(logits.Slice(r * v, v));
        }
        AllocationProbe.AssertNoAllocation(Step, "a device-resident decode step"); // the upload plans for this step's shape are built in the warm-up
        Assert.True(dec.MixedAdapterSteps > 0);
    }

    [Fact]
    public void DeviceMemory_RefusesPackedSteps_AndIsOffOnTheCpuProvider()
    {
        var e = Assert.Throws<ArgumentException>(new RuntimeOptions { PackedSteps = true, EmulateDeviceMemory = true }.Validate);
        Assert.Contains("device memory", e.Message);
        Assert.Null(DeviceMemory.For(new RuntimeOptions()));
    }
}
