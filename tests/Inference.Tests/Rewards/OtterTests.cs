using System.Text.Json;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;
using Serving.Inference.Rewards;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Engine;
using Xunit;

namespace Serving.Inference.Tests.Rewards;

/// <summary>
/// The full Otter form (a side network with its own attention heads and FFN neurons per layer) against an independent
/// float64 re-computation of the format's formula from the base's hidden states; logits bit-identical with and without.
/// </summary>
public sealed class OtterTests
{
    /// <summary>Writes a random side network for <paramref name="c"/> in the forge's <c>models/demo/otter</c> format (a temp folder per shape and seed).</summary>
    internal static string WriteRandomOtter(ModelConfig c, int seed, int side = 16, int heads = 2, int ffn = 12, string pooling = "sum", int[]? layers = null) =>
        Serving.Fixtures.OtterFixture.Write(Path.Combine(Path.GetTempPath(), "serving-otter-" + Environment.ProcessId,
            $"{c.HiddenSize}-{seed}-{side}-{heads}-{pooling}-{(layers is null ? "all" : string.Join('.', layers))}"), c, seed, side, heads, ffn, pooling, sideLayers: layers);

    /// <summary>The side network and head in float64 from the files and the base's hidden states [L+1, T, d]; rewards per position.</summary>
    internal static double[] Float64Rewards(string dir, ModelConfig c, IReadOnlyList<(float[] Weight, float[]? Bias)> norms, float[] hidden, int t)
    {
        var def = OtterReader.ReadFolder(dir, c);
        int d = c.HiddenSize, hd = def.HeadDim, h = def.NumHeads, q = h * hd, side = def.SideSize;
        var s = new double[t, side];
        double[] MatVec(float[] w, int rows, int cols, double[] x)
        {
            var y = new double[rows];
            for (var r = 0; r < rows; r++)
            {
                double acc = 0;
                for (var k = 0; k < cols; k++) acc += w[r * cols + k] * x[k];
                y[r] = acc;
            }
            return y;
        }
        double[] Rope(double[] v, int pos)
        {
            var o = (double[])v.Clone();
            for (var head = 0; head < h; head++)
            {
                for (var i = 0; i < hd / 2; i++)
                {
                    var angle = pos / Math.Pow(c.RopeTheta, 2.0 * i / hd);
                    double a = v[head * hd + i], b = v[head * hd + i + hd / 2];
                    o[head * hd + i] = a * Math.Cos(angle) - b * Math.Sin(angle);
                    o[head * hd + i + hd / 2] = b * Math.Cos(angle) + a * Math.Sin(angle);
                }
            }
            return o;
        }
        foreach (var layer in def.Layers)
        {
            var l = layer.Layer; // the base layer it reads: hidden[l] is that layer's input
            var xs = new double[t][];
            var ks = new double[t][];
            var vs = new double[t][];
            var qs = new double[t][];
            for (var p = 0; p < t; p++)
            {
                var hrow = Enumerable.Range(0, d).Select(i => (double)hidden[(l * t + p) * d + i]).ToArray();
                if (c.Architecture == ModelArchitecture.Gpt2)
                {
                    // The base's own input norm: LayerNorm with bias; GPT-2 has no rotary (positions are in the embeddings).
                    var mean = hrow.Average();
                    var variance = hrow.Select(v => (v - mean) * (v - mean)).Average();
                    xs[p] = hrow.Select((v, i) => (v - mean) / Math.Sqrt(variance + c.NormEps) * norms[l].Weight[i] + norms[l].Bias![i]).ToArray();
                    qs[p] = MatVec(layer.Q, q, d, xs[p]);
                    ks[p] = MatVec(layer.K, q, d, xs[p]);
                }
                else
                {
                    var ms = hrow.Select(v => v * v).Average();
                    xs[p] = hrow.Select((v, i) => v / Math.Sqrt(ms + c.NormEps) * norms[l].Weight[i]).ToArray();
                    qs[p] = Rope(MatVec(layer.Q, q, d, xs[p]), p);
                    ks[p] = Rope(MatVec(layer.K, q, d, xs[p]), p);
                }
                vs[p] = MatVec(layer.V, q, d, xs[p]);
            }
            for (var p = 0; p < t; p++)
            {
                var attn = new double[q];
                for (var head = 0; head < h; head++)
                {
                    var scores = new double[p + 1];
                    for (var j = 0; j <= p; j++)
                    {
                        double dot = 0;
                        for (var i = 0; i < hd; i++) dot += qs[p][head * hd + i] * ks[j][head * hd + i];
                        scores[j] = dot / Math.Sqrt(hd);
                    }
                    var max = scores.Max();
                    var z = scores.Sum(x => Math.Exp(x - max));
                    for (var j = 0; j <= p; j++)
                    {
                        var w = Math.Exp(scores[j] - max) / z;
                        for (var i = 0; i < hd; i++) attn[head * hd + i] += w * vs[j][head * hd + i];
                    }
                }
                var o = MatVec(layer.O, side, q, attn);
                var gate = MatVec(layer.Gate, def.IntermediateSize, d, xs[p]);
                var up = MatVec(layer.Up, def.IntermediateSize, d, xs[p]);
                var act = gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i]).ToArray();
                var f = MatVec(layer.Down, side, def.IntermediateSize, act);
                for (var i = 0; i < side; i++) s[p, i] += o[i] + f[i];
            }
        }
        var rewards = new double[t];
        double sum = 0;
        for (var p = 0; p < t; p++)
        {
            var row = Enumerable.Range(0, side).Select(i => s[p, i]).ToArray();
            var ms = row.Select(v => v * v).Average();
            var x = row.Select((v, i) => v / Math.Sqrt(ms + def.NormEps) * def.HeadNorm[i]).ToArray();
            for (var li = 0; li < def.HeadLayers.Count; li++)
            {
                var dl = def.HeadLayers[li];
                var y = MatVec(dl.Weight, dl.Out, dl.In, x);
                for (var o = 0; o < dl.Out; o++) y[o] += dl.Bias?[o] ?? 0;
                x = li < def.HeadLayers.Count - 1 ? y.Select(Math.Tanh).ToArray() : y;
            }
            sum += x[0];
            rewards[p] = def.Pooling switch { RewardPooling.Sum => sum, RewardPooling.Mean => sum / (p + 1), _ => x[0] };
        }
        return rewards;
    }

    [Theory]
    [InlineData("sum", "llama", null)]
    [InlineData("last", "llama", null)]
    [InlineData("sum", "gpt2", null)]
    [InlineData("sum", "llama-hd40", null)] // a head width of 32 + 8: both vector widths of the decode operator
    // Side layers on a subset of the base layers: one on an odd layer (the base input in the decoder's second buffer,
    // s_L in the prefill's second side buffer), two on even layers with a gap.
    [InlineData("sum", "llama", new[] { 1 })]
    [InlineData("last", "llama", new[] { 0, 2 })]
    [InlineData("sum", "gpt2", new[] { 1 })]
    public void RandomOtter_PrefillAndDecode_MatchFloat64Formula(string pooling, string family, int[]? layers)
    {
        var checkpoint = family switch
        {
            "gpt2" => Fixtures.TinyGpt2,
            "llama-hd40" => Fixtures.Checkpoint("tiny-llama-hd40", Serving.Fixtures.FixtureShape.TinyLlama with { Hidden = 80, Heads = 2, KvHeads = 2 }),
            _ => Fixtures.TinyLlama,
        };
        using var model = DecoderModel.Load(checkpoint, new RuntimeOptions { MaxBatch = 2, MaxContext = 64 });
        var c = model.Config;
        var dir = WriteRandomOtter(c, seed: 4, pooling: pooling, layers: layers);
        var definition = OtterReader.ReadFolder(dir, c);
        Assert.Equal(layers ?? Enumerable.Range(0, c.NumLayers).ToArray(), definition.Layers.Select(l => l.Layer));
        using var head = new RewardHead(definition, model, "t/otter@1");
        int[] prompt = [3, 141, 59, 26, 5, 77, 12];
        var hidden = new float[(c.NumLayers + 1) * prompt.Length * c.HiddenSize];
        using (var plain = new BatchDecoder(model, 1))
        {
            plain.Prefill(plain.TryAllocate()!, prompt, hidden);
        }
        var expected = Float64Rewards(dir, c, model.LayerInputNorms, hidden, prompt.Length);

        using var dec = new BatchDecoder(model, 2);
        var whole = dec.TryAllocate()!;
        dec.SetRewardHead(whole, head);
        dec.Prefill(whole, prompt);
        Assert.InRange(Math.Abs(whole.Reward - expected[^1]), 0, 1e-4);

        // Token by token through decode steps, beside the whole-prompt row (two rows, one batch).
        var stepwise = dec.TryAllocate()!;
        dec.SetRewardHead(stepwise, head);
        dec.Prefill(stepwise, prompt.AsSpan(0, 2));
        Assert.InRange(Math.Abs(stepwise.Reward - expected[1]), 0, 1e-4);
        for (var i = 2; i < prompt.Length; i++)
        {
            stepwise.PendingToken = prompt[i];
            whole.PendingToken = 9;
            dec.Decode();
            Assert.InRange(Math.Abs(stepwise.Reward - expected[i]), 0, 1e-4);
        }
    }

    /// <summary>
    /// The demo's trained side network (<c>models/demo/otter</c>) against the forge's PyTorch dumps
    /// (<c>reference/otter.safetensors</c>: per prompt the ids and the reward after every position): token by token
    /// through decode steps and as one prefill, ≤ 1e-4, and the same positions from the float64 re-computation.
    /// </summary>
    [Fact]
    public void DemoOtter_MatchesThePyTorchReference()
    {
        var demo = DemoModelReferenceTests.DemoDirectory;
        var dir = Path.Combine(demo, "otter");
        using var r = SafetensorsFile.Open(Path.Combine(demo, "reference", "otter.safetensors"));
        using var model = DecoderModel.Load(demo, new RuntimeOptions { MaxBatch = 1, MaxContext = 256 });
        using var head = new RewardHead(OtterReader.ReadFolder(dir, model.Config), model, "public/positive-otter@1");
        var prompts = r.Tensors.Keys.Where(k => k.EndsWith(".input_ids", StringComparison.Ordinal)).Select(k => k[..^".input_ids".Length]).Order().ToList();
        Assert.NotEmpty(prompts);
        foreach (var p in prompts)
        {
            var ids = r.ReadInt64(p + ".input_ids").Select(x => (int)x).ToArray();
            var expected = r.ReadFloat32(p + ".reward").Select(x => (double)x).ToArray();

            using var dec = new BatchDecoder(model, 1);
            var seq = dec.TryAllocate()!;
            dec.SetRewardHead(seq, head);
            dec.Prefill(seq, ids.AsSpan(0, 1));
            var stepwise = new List<float> { seq.Reward };
            for (var i = 1; i < ids.Length; i++)
            {
                seq.PendingToken = ids[i];
                dec.Decode();
                stepwise.Add(seq.Reward);
            }
            ReferenceLogitsTests.AssertClose(expected, stepwise.ToArray(), 1e-4, $"{p}: decode-path rewards vs PyTorch");

            var hidden = new float[(model.Config.NumLayers + 1) * ids.Length * model.Config.HiddenSize];
            using (var plain = new BatchDecoder(model, 1)) plain.Prefill(plain.TryAllocate()!, ids, hidden);
            var float64 = Float64Rewards(dir, model.Config, model.LayerInputNorms, hidden, ids.Length);
            ReferenceLogitsTests.AssertClose(expected, float64.Select(x => (float)x).ToArray(), 1e-4, $"{p}: float64 formula vs PyTorch");

            using var dec2 = new BatchDecoder(model, 1);
            var whole = dec2.TryAllocate()!;
            dec2.SetRewardHead(whole, head);
            dec2.Prefill(whole, ids);
            Assert.InRange(Math.Abs(whole.Reward - expected[^1]), 0, 1e-4);
        }
    }

    /// <summary>
    /// The demo's side network (the decode step's side operator rotates q and k at each row's own position and writes
    /// each row's K/V at its own cache index) on three rows at different positions decoded in one batch: every row's reward after every
    /// step equals the float64 re-computation of its whole sequence.
    /// </summary>
    [Fact]
    public void DemoOtter_RowsAtDifferentPositionsInOneBatch_MatchFloat64Formula()
    {
        var demo = DemoModelReferenceTests.DemoDirectory;
        var dir = Path.Combine(demo, "otter");
        using var model = DecoderModel.Load(demo, new RuntimeOptions { MaxBatch = 3, MaxContext = 128 });
        var c = model.Config;
        var definition = OtterReader.ReadFolder(dir, c);
        using var head = new RewardHead(definition, model, "public/positive-otter@1");
        int[][] prompts = [[0, 412, 77, 1203, 9], [0, 88, 2040, 311, 64, 1777, 905, 14, 260, 3001, 45], [0, 640]];
        const int steps = 5;
        int Next(int row, int step) => 100 + 211 * row + 37 * step;

        using var dec = new BatchDecoder(model, 3);
        var seqs = prompts.Select(p =>
        {
            var seq = dec.TryAllocate()!;
            dec.SetRewardHead(seq, head);
            dec.Prefill(seq, p);
            return seq;
        }).ToArray();
        var rewards = new float[prompts.Length, steps];
        for (var s = 0; s < steps; s++)
        {
            for (var r = 0; r < seqs.Length; r++) seqs[r].PendingToken = Next(r, s);
            dec.Decode();
            for (var r = 0; r < seqs.Length; r++) rewards[r, s] = seqs[r].Reward;
        }

        for (var r = 0; r < prompts.Length; r++)
        {
            var ids = prompts[r].Concat(Enumerable.Range(0, steps).Select(s => Next(r, s))).ToArray();
            var hidden = new float[(c.NumLayers + 1) * ids.Length * c.HiddenSize];
            using (var plain = new BatchDecoder(model, 1)) plain.Prefill(plain.TryAllocate()!, ids, hidden);
            var expected = Float64Rewards(dir, c, model.LayerInputNorms, hidden, ids.Length);
            for (var s = 0; s < steps; s++)
            {
                var e = expected[prompts[r].Length + s];
                Assert.True(Math.Abs(rewards[r, s] - e) <= 1e-4 * Math.Max(1, Math.Abs(e)), $"row {r} step {s}: {rewards[r, s]} vs float64 {e}");
            }
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData(new[] { 1, 2 })] // side layers on a subset of the base layers
    public void Logits_WithAndWithoutOtter_BitIdentical_InAMixedAdapterBatch_AndForksCarryTheSideCache(int[]? layers)
    {
        using var model = DecoderModel.Load(Fixtures.TinyLlama, new RuntimeOptions { MaxBatch = 4, MaxContext = 64, AdapterSlots = 1 });
        var c = model.Config;
        using var head = new RewardHead(OtterReader.ReadFolder(WriteRandomOtter(c, seed: 8, layers: layers), c), model, "t/otter@1");
        var adapter = AdapterFactors.FromLora(c, AdapterTests.RandomModules(c, seed: 3, rankBase: 2));
        int[][] prompts = [[1, 2, 3], [4, 5, 6, 7], [8, 9]];
        int[] slots = [-1, 0, 0];

        (List<float[]> Logits, float[] Rewards) Run(bool otter)
        {
            using var dec = new BatchDecoder(model);
            dec.Adapters!.Write(0, adapter);
            var seqs = new List<Sequence>();
            var outs = new List<float[]>();
            for (var r = 0; r < prompts.Length; r++)
            {
                var seq = dec.TryAllocate()!;
                dec.SetAdapter(seq, slots[r]);
                if (otter && r != 2) dec.SetRewardHead(seq, head);
                outs.Add(dec.Prefill(seq, prompts[r]).ToArray());
                seqs.Add(seq);
            }
            seqs.Add(dec.TryFork(seqs[1])!); // a fork carries the side cache
            for (var s = 0; s < 4; s++)
            {
                for (var r = 0; r < seqs.Count; r++) seqs[r].PendingToken = 10 + 3 * s + r;
                outs.Add(dec.Decode().ToArray());
            }
            return (outs, seqs.Select(q => q.Reward).ToArray());
        }

        var (without, _) = Run(false);
        var (with, rewards) = Run(true);
        for (var i = 0; i < without.Count; i++) Assert.True(without[i].AsSpan().SequenceEqual(with[i]), $"logits of output {i} changed with the Otter head");
        Assert.True(float.IsNaN(rewards[2]));

        // The fork's reward equals a fresh row fed its tokens: the side cache was copied with the base's.
        using var solo = new BatchDecoder(model, 1, adapterSlots: 1);
        solo.Adapters!.Write(0, adapter);
        var s2 = solo.TryAllocate()!;
        solo.SetAdapter(s2, 0);
        solo.SetRewardHead(s2, head);
        solo.Prefill(s2, [4, 5, 6, 7, 13, 16, 19, 22]);
        Assert.InRange(Math.Abs(s2.Reward - rewards[3]), 0, 1e-4);
    }
}
