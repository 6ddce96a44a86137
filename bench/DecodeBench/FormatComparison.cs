using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Serving.Bench;
using Serving.Inference.Engine;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

/// <summary>
/// The same greedy decode run for each weight format (fp32, int8, int4) on one checkpoint, interleaved: every rep runs
/// each format once in a rotating order, after a 2 s warm-up per format, and each format's tokens/s is divided by the
/// first format's of the same rep (paired ratios: load that moves during a rep moves both).
/// </summary>
internal static class FormatComparison
{
    public static void Run(string dir, string shape, WeightFormat[] formats, int[] batches, int steps, int reps, int prompt, int context, int threads,
        int blockSize, int accuracyLevel, bool quantizeHead, bool torch, string command, string jsonPath)
    {
        using var baseline = torch ? TorchServer.Start(dir, context, threads) : null;
        var models = formats.Select(f => DecoderModel.Load(dir, new RuntimeOptions
        {
            MaxBatch = batches.Max(), MaxContext = context, Threads = threads, Weights = f, WeightBlockSize = blockSize,
            WeightAccuracyLevel = accuracyLevel, QuantizeHead = quantizeHead && f != WeightFormat.Fp32,
        })).ToArray();
        try
        {
            Console.WriteLine($"{shape}: block {blockSize}, accuracy level {accuracyLevel}, head {(quantizeHead ? "quantised" : "fp32")}, {threads} threads; machine {BenchMachine.Cpu()}");
            for (var i = 0; i < formats.Length; i++)
            {
                Console.WriteLine($"  {formats[i]}: projections {models[i].ProjectionWeightBytes / 1e6:F1} MB, head {models[i].HeadWeightBytes / 1e6:F1} MB, load {models[i].LoadTime.TotalSeconds:F1} s");
            }
            Console.WriteLine("| shape | batch | " + string.Join(" | ", formats.Select(f => $"{f} tok/s")) + " | " +
                string.Join(" | ", formats.Skip(1).Select(f => $"{f}/{formats[0]} (min–max)")) + " |" + (baseline is null ? "" : " PyTorch eager tok/s |"));
            var rows = new JsonArray();
            foreach (var b in batches)
            {
                var decoders = models.Select(m => new BatchDecoder(m, b)).ToArray();
                try
                {
                    var rng = new Random(1);
                    foreach (var dec in decoders)
                    {
                        var warm = Stopwatch.StartNew();
                        do DecodeRuns.Greedy(dec, b, steps, prompt, rng);
                        while (warm.Elapsed.TotalSeconds < 2);
                    }
                    var tps = formats.Select(_ => new List<double>()).ToArray();
                    var eager = new List<double>();
                    baseline?.Run(b, steps, prompt); // warm-up
                    for (var r = 0; r < reps; r++)
                    {
                        if (baseline is not null) eager.Add(b * steps / baseline.Run(b, steps, prompt));
                        for (var j = 0; j < formats.Length; j++)
                        {
                            var i = (r + j) % formats.Length;
                            tps[i].Add(b * steps / DecodeRuns.Greedy(decoders[i], b, steps, prompt, rng));
                        }
                    }
                    var row = new JsonObject { ["shape"] = shape, ["batch"] = b };
                    var line = $"| {shape} | {b} | " + string.Join(" | ", tps.Select(t => $"{Stats.Median(t):F1}")) + " |";
                    for (var i = 0; i < formats.Length; i++)
                    {
                        var name = formats[i].ToString().ToLowerInvariant();
                        row[name + "_tokens_per_s"] = Stats.Median(tps[i]);
                        if (i == 0) continue;
                        var ratios = tps[i].Zip(tps[0], (x, y) => x / y).ToList();
                        row[name + "_ratio"] = Stats.Median(ratios);
                        row[name + "_ratio_min"] = ratios.Min();
                        row[name + "_ratio_max"] = ratios.Max();
                        line += $" {Stats.Median(ratios):F2}× ({ratios.Min():F2}–{ratios.Max():F2}) |";
                    }
                    if (eager.Count > 0)
                    {
                        row["torch_tokens_per_s"] = Stats.Median(eager);
                        line += $" {Stats.Median(eager):F1} |";
                    }
                    Console.WriteLine(line);
                    rows.Add(row);
                }
                finally
                {
                    foreach (var dec in decoders) dec.Dispose();
                }
            }
            var doc = new JsonObject
            {
                ["command"] = command, ["machine"] = BenchMachine.Cpu(), ["threads"] = threads, ["block_size"] = blockSize,
                ["accuracy_level"] = accuracyLevel, ["quantize_head"] = quantizeHead, ["steps"] = steps, ["reps"] = reps,
                ["prompt"] = prompt, ["context"] = context, ["results"] = rows,
                ["bytes"] = new JsonArray([.. formats.Select((f, i) => (JsonNode)new JsonObject
                {
                    ["format"] = f.ToString(), ["projection_bytes"] = models[i].ProjectionWeightBytes, ["head_bytes"] = models[i].HeadWeightBytes,
                })]),
                ["date"] = DateTime.UtcNow.ToString("u", System.Globalization.CultureInfo.InvariantCulture),
            };
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
            File.WriteAllText(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {jsonPath}");
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }
}
