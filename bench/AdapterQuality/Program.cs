// Adapter quality under compression (issue 14): for each demo adapter and codec setting, stored bytes, ratio vs the
// fp16 PEFT file, own-domain test loss through the engine, kept = (L_base − L_codec) / (L_base − L_lossless), the
// general-domain loss change, and the ΔW error proxies.
// usage: AdapterQuality [--root models/demo] [--adapters german,spanish,...] [--settings "s1;s2;..."]
//                       [--general-every 8] [--no-general] [--json out.jsonl] [--plot docs/x.png] [--threads 2]
//        AdapterQuality --formats "fp32;int8;int4;int4+head;int8/acc0" [--block 32] [--prompts 200] [--tokens 64]:
//                       quantised weights (issue 17): loss/perplexity, adapters' own loss, greedy agreement vs the first
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Serving.AdapterQuality;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tokenization;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
var opt = args.Select((a, i) => (a, i)).Where(x => x.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(x => x.a[2..], x => x.i + 1 < args.Length && !args[x.i + 1].StartsWith("--", StringComparison.Ordinal) ? args[x.i + 1] : "true");
string Str(string k, string d) => opt.TryGetValue(k, out var v) ? v : d;
string root = Str("root", "models/demo");
var adapters = Str("adapters", "german,spanish,italian,portuguese,polish,startrek,irc,animals").Split(',');
var settings = Str("settings", string.Join(";", Table.DefaultSettings)).Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
int generalEvery = int.Parse(Str("general-every", "8"), CultureInfo.InvariantCulture);
bool general = !opt.ContainsKey("no-general");
int threads = int.Parse(Str("threads", "2"), CultureInfo.InvariantCulture);

if (opt.TryGetValue("from-json", out var from))
{
    // Re-print the table, calibration and plot from earlier runs' rows (several files separated by commas).
    var old = from.Split(',').SelectMany(File.ReadLines).Where(l => l.Length > 0).Select(l => JsonSerializer.Deserialize<QualityRow>(l, Table.Json)!).ToList();
    Report(old);
    return;
}

OrtRuntime.EnsureInitialized(threads);
if (opt.TryGetValue("formats", out var formatList))
{
    // "int4+head" quantises the LM head too; "/acc0" runs MatMulNBits at accuracy level 0 (fp32 compute), default 4.
    var block = int.Parse(Str("block", "32"), CultureInfo.InvariantCulture);
    var configs = formatList.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(label =>
    {
        var parts = label.Split('/');
        var head = parts[0].EndsWith("+head", StringComparison.Ordinal);
        var format = Enum.Parse<Serving.Inference.Graphs.WeightFormat>(parts[0].Replace("+head", "", StringComparison.Ordinal), ignoreCase: true);
        var accuracy = parts.Length > 1 ? int.Parse(parts[1].Replace("acc", "", StringComparison.Ordinal), CultureInfo.InvariantCulture) : 4;
        return new FormatQuality.Config(label, format, accuracy, head, block);
    }).ToList();
    FormatQuality.Run(root, configs, adapters, int.Parse(Str("prompts", "200"), CultureInfo.InvariantCulture),
        int.Parse(Str("tokens", "64"), CultureInfo.InvariantCulture), generalEvery, threads);
    return;
}
using var model = DecoderModel.Load(root, new RuntimeOptions { MaxBatch = 1, MaxContext = LossEvaluator.Window + 8, AdapterSlots = 1, AdapterMaxRank = 64, Threads = threads });
var tokenizer = TokenizerLoader.Load(root, model.Config.VocabSize);
using var decoder = new BatchDecoder(model);
var evaluator = new LossEvaluator(decoder);
var shape = BaseModelShape.FromConfig(model.Config);
var generalSplit = EvalSplit.Load(Path.Combine(root, "eval", "general.test.jsonl"), tokenizer, generalEvery);
double baseGeneral = general ? evaluator.Loss(generalSplit, adapted: false) : double.NaN;
Console.WriteLine($"# {Environment.MachineName}, {Environment.ProcessorCount} cores, {threads} threads; general: every {generalEvery}th test document ({generalSplit.Tokens} tokens), base loss {baseGeneral:F4}");
Console.WriteLine($"# command: AdapterQuality {string.Join(' ', args)}");

var rows = new List<QualityRow>();
using var json = opt.TryGetValue("json", out var jsonPath) ? new StreamWriter(jsonPath) : null;
foreach (var name in adapters)
{
    var dir = Path.Combine(root, "adapters", name);
    var file = File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors"));
    var payload = PeftAdapterReader.Read(File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")), file, shape).Payload;
    long fp16Bytes = Table.Fp16FileBytes(file, payload);
    var own = EvalSplit.Load(Path.Combine(root, "eval", $"{name}.test.jsonl"), tokenizer);
    double baseOwn = evaluator.Loss(own, adapted: false);
    var original = AdapterMaterializer.Materialize(payload);
    double losslessOwn = double.NaN;
    foreach (var setting in new[] { "lossless" }.Concat(settings.Where(s => s != "lossless")))
    {
        var sw = Stopwatch.StartNew();
        var (container, label) = Table.Encode(payload, setting);
        double encodeMs = sw.Elapsed.TotalMilliseconds;
        var decoded = AdapterMaterializer.Materialize(AdapterContainer.Decode(container));
        var errors = ReconstructionError.Compute(original, decoded);
        var proxy = QualityProxy.Compute(original, decoded);
        evaluator.Load(decoded);
        double ownLoss = evaluator.Loss(own, adapted: true);
        if (setting == "lossless") losslessOwn = ownLoss;
        double generalLoss = general ? evaluator.Loss(generalSplit, adapted: true) : double.NaN;
        var row = new QualityRow(name, setting, label, container.Length, fp16Bytes / (double)container.Length, baseOwn, losslessOwn, ownLoss,
            (baseOwn - ownLoss) / (baseOwn - losslessOwn), baseGeneral, generalLoss,
            errors.Average(e => e.Relative), errors.Max(e => e.Relative), Table.OverallError(original, decoded), proxy.Aligned, proxy.Noise, encodeMs);
        rows.Add(row);
        json?.WriteLine(JsonSerializer.Serialize(row, Table.Json));
        json?.Flush();
        Console.WriteLine(Table.Line(row));
    }
}
Report(rows);

void Report(List<QualityRow> all)
{
    Console.WriteLine();
    Console.WriteLine(Table.Summary(all));
    Console.WriteLine(Table.Markdown(all));
    Console.WriteLine(Calibration.Summary(all));
    if (opt.TryGetValue("plot", out var plotPath)) ParetoPlot.Write(all, plotPath);
}
