// Adapter store benchmark: codec ratio/error sweep (ComPEFT, quant, auto), decode throughput, store latencies.
// Quality (own-domain loss kept) is measured by bench/AdapterQuality.
// Usage: dotnet run -c Release --project bench/AdapterStore.Benchmarks [-- --quick] [--peft-only] [--peft ADAPTER_DIR --base CONFIG_JSON]...
// Each --peft/--base pair adds a real PEFT folder (e.g. a demo adapter) to the ratio/error sweep.
// --cluster: one redis-server vs a 3-primary Redis Cluster instead (ClusterBench.cs; docs/deploy.md).
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Serving.AdapterStore;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using StackExchange.Redis;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
int reps = quick ? 3 : 10;

// gpt2-small: d = 768, 12 layers, rank 16 on attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj.
var shape = new BaseModelShape(BaseModelShape.Gpt2, 12, 768, 12, 12, 64, 3072);
const int rank = 16;
if (args.Contains("--cluster"))
{
    var (clusterConfig, clusterWeights) = BuildGpt2Lora(shape, rank, seed: 2, "gaussian");
    var clusterContainer = AdapterContainer.Encode(PeftAdapterReader.Read(clusterConfig, clusterWeights, shape).Payload, new CodecOptions { Codec = AdapterCodec.ComPeft });
    await Serving.AdapterStore.Benchmarks.ClusterBench.RunAsync(args, clusterContainer, "gpt2-small rank-16 adapter (ComPEFT, density 0.1)");
    return;
}
var inputs = new List<(string Title, byte[] Config, byte[] File, BaseModelShape Shape)>();
foreach (var dist in args.Contains("--peft-only") ? [] : new[] { "gaussian", "laplace" })
{
    var (c, f) = BuildGpt2Lora(shape, rank, seed: 1, dist);
    inputs.Add(($"gpt2-small shape, rank {rank}, all four module types, random {dist} factors (fp16)", c, f, shape));
}
for (int a = 0; a < args.Length - 3; a++)
{
    if (args[a] != "--peft" || args[a + 2] != "--base") continue;
    string dir = args[a + 1];
    inputs.Add(($"{Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))} (PEFT folder)",
        File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")), File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors")),
        BaseModelShape.FromConfig(ModelConfig.Load(args[a + 3]))));
}
foreach (var (title, config, file, inputShape) in inputs)
{
    var validated = PeftAdapterReader.Read(config, file, inputShape);
    var original = AdapterMaterializer.Materialize(validated.Payload);
    long parameters = validated.Payload.Tensors.Sum(t => t.ElementCount);
    long zstd3 = Zstd(file, 3), zstd19 = Zstd(file, 19);
    // The adapter as an fp16 safetensors file (what ratios are quoted against; a real PEFT folder may be fp32).
    long fp16File = 8 + (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(file) + 2 * parameters;
    Console.WriteLine($"## {title}");
    Console.WriteLine($"parameters {parameters:N0}; safetensors as uploaded {file.Length:N0} B, as fp16 {fp16File:N0} B; zstd-3 of the upload {zstd3:N0} B; zstd-19 of it {zstd19:N0} B");
    Console.WriteLine();
    Console.WriteLine("| codec | parameter | stored bytes | × vs fp16 file | × vs zstd-19(upload) | ΔW rel. error mean | max | encode ms (min of 3) | decode ms min / median | decode MB/s (fp16 out, at min) |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
    foreach (double density in new[] { 0.05, 0.1, 0.2, 0.3 })
    {
        Row(new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new ComPeftOptions { Density = density } }, $"ComPEFT α=1·σ", density.ToString());
    }
    foreach (double density in new[] { 0.1, 0.3 })
    {
        Row(new CodecOptions { Codec = AdapterCodec.ComPeft, ComPeft = new ComPeftOptions { Density = density, Scope = ThresholdScope.PerTensor } }, $"ComPEFT per-tensor", density.ToString());
    }
    foreach (double err in new[] { 0.2, 0.3 })
    {
        Row(new CodecOptions { Codec = AdapterCodec.Quant, Quant = new QuantOptions { TargetError = err } }, "quant svd", $"err={err}");
    }
    Row(new CodecOptions(), "auto (default)", "–");
    Row(new CodecOptions { Codec = AdapterCodec.Lossless }, "lossless fp16+zstd", "–");
    Console.WriteLine();

    void Row(CodecOptions options, string label, string density)
    {
        var sw = Stopwatch.StartNew();
        byte[] container = [];
        double encodeMs = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            sw.Restart();
            container = AdapterContainer.Encode(validated.Payload, options);
            encodeMs = Math.Min(encodeMs, sw.Elapsed.TotalMilliseconds);
        }
        AdapterPayload decoded = AdapterContainer.Decode(container);
        var times = new List<double>();
        for (int i = 0; i < reps; i++)
        {
            sw.Restart();
            decoded = AdapterContainer.Decode(container);
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        double decodeMs = Median(times), decodeMin = times.Min();
        var errors = ReconstructionError.Compute(original, AdapterMaterializer.Materialize(decoded));
        long fp16Bytes = parameters * 2;
        double mbps = fp16Bytes / 1e6 / (decodeMin / 1000);
        Console.WriteLine($"| {label} | {density} | {container.Length:N0} | {fp16File / (double)container.Length:F1} | {zstd19 / (double)container.Length:F1} | {errors.Average(e => e.Relative):F3} | {errors.Max(e => e.Relative):F3} | {encodeMs:F0} | {decodeMin:F1} / {decodeMs:F1} | {mbps:F0} |");
    }
}

if (args.Contains("--peft-only")) return;

// Store latencies against embedded Garnet and (when installed) redis-server.
var servers = new List<(string Name, string Conn, IDisposable Owner)>();
var garnet = new EmbeddedGarnet(memory: "512m");
servers.Add(("embedded Garnet", garnet.ConnectionString, garnet));
var redis = TryStartRedis();
if (redis is not null) servers.Add(("redis-server", redis.Value.Conn, redis.Value.Owner));
var (cfg, weights) = BuildGpt2Lora(shape, rank, seed: 2, "gaussian");
var compeft = new CodecOptions { Codec = AdapterCodec.ComPeft };
Console.WriteLine($"## Store latencies (gpt2-small rank-16, ComPEFT density 0.1, container {AdapterContainer.Encode(PeftAdapterReader.Read(cfg, weights, shape).Payload, compeft).Length:N0} B), {reps} runs after one warm-up");
Console.WriteLine();
Console.WriteLine("| server | upload-to-available ms (validate+encode+measure+publish), min / median | publish only ms, min / median | Redis-to-decoded ms (read+verify+decode+materialise), min / median |");
Console.WriteLine("|---|---|---|---|");
foreach (var (name, conn, _) in servers)
{
    using var mux = await ConnectionMultiplexer.ConnectAsync(conn);
    var store = new RedisAdapterStore(mux, new AdapterStoreOptions { KeepVersions = 2 });
    var ingestor = new AdapterIngestor(store, new StaticBaseModelCatalog().Add("gpt2", shape));
    var files = new PeftFiles(cfg, weights);
    var upload = new List<double>();
    var publish = new List<double>();
    var load = new List<double>();
    var container = AdapterContainer.Encode(PeftAdapterReader.Read(cfg, weights, shape).Payload, compeft);
    for (int i = 0; i < reps + 1; i++)
    {
        var sw = Stopwatch.StartNew();
        await ingestor.IngestAsync(new UploadRequest("bench", "a", null, files, compeft, KeepOriginal: false), CancellationToken.None);
        double u = sw.Elapsed.TotalMilliseconds;
        sw.Restart();
        await store.PublishAsync(new AdapterMetadata { Tenant = "bench", Name = "p", BaseModel = "gpt2", Checksum = "" }, container, null, CancellationToken.None);
        double p = sw.Elapsed.TotalMilliseconds;
        sw.Restart();
        var loaded = await store.LoadAdapterAsync("bench", "a", null, CancellationToken.None);
        double l = sw.Elapsed.TotalMilliseconds;
        if (loaded is null) throw new InvalidOperationException("adapter vanished");
        if (i == 0) continue; // JIT warm-up
        upload.Add(u);
        publish.Add(p);
        load.Add(l);
    }
    Console.WriteLine($"| {name} | {upload.Min():F1} / {Median(upload):F1} | {publish.Min():F1} / {Median(publish):F1} | {load.Min():F1} / {Median(load):F1} |");
}
foreach (var s in servers) s.Owner.Dispose();
return;

static double Median(List<double> xs)
{
    var s = xs.Order().ToList();
    return s[s.Count / 2];
}

static long Zstd(byte[] data, int level)
{
    using var c = new ZstdSharp.Compressor(level);
    return c.Wrap(data).Length;
}

static (byte[] Config, byte[] File) BuildGpt2Lora(BaseModelShape shape, int rank, int seed, string dist)
{
    var rng = new Random(seed);
    var entries = new List<SafetensorsWriter.Entry>();
    for (int l = 0; l < shape.NumLayers; l++)
    {
        foreach (var module in shape.Modules)
        {
            var (i, o) = shape.Widths(module)!.Value;
            string p = $"base_model.model.transformer.h.{l}.{module}";
            // A like peft's Kaiming-uniform init scale, B as a trained update of similar norm.
            entries.Add(SafetensorsWriter.Entry.F16($"{p}.lora_A.weight", [rank, i], Sample(rng, rank * i, 1.0 / Math.Sqrt(i), dist)));
            entries.Add(SafetensorsWriter.Entry.F16($"{p}.lora_B.weight", [o, rank], Sample(rng, o * rank, 0.01, dist)));
        }
    }
    string config = """{"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": true, "bias": "none", "task_type": "CAUSAL_LM"}""";
    return (Encoding.UTF8.GetBytes(config), SafetensorsWriter.ToBytes(entries));
}

static float[] Sample(Random rng, int n, double scale, string dist)
{
    var v = new float[n];
    for (int k = 0; k < n; k++)
    {
        double u = rng.NextDouble();
        v[k] = dist == "laplace"
            ? (float)(scale / Math.Sqrt(2) * (u < 0.5 ? Math.Log(2 * u + 1e-300) : -Math.Log(2 - 2 * u + 1e-300)))
            : (float)(scale * Math.Sqrt(-2 * Math.Log(1 - u)) * Math.Cos(2 * Math.PI * rng.NextDouble()));
    }
    return v;
}

static (string Conn, IDisposable Owner)? TryStartRedis()
{
    try
    {
        int port = EmbeddedGarnet.FreePort();
        var psi = new ProcessStartInfo("redis-server") { UseShellExecute = false, RedirectStandardOutput = true };
        foreach (var a in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" }) psi.ArgumentList.Add(a);
        var proc = Process.Start(psi)!;
        proc.OutputDataReceived += (_, _) => { };
        proc.BeginOutputReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                using var c = ConnectionMultiplexer.Connect($"127.0.0.1:{port},connectTimeout=500");
                c.GetDatabase().Ping();
                break;
            }
            catch (RedisConnectionException) when (DateTime.UtcNow < deadline)
            {
                Thread.Yield();
            }
        }
        return ($"127.0.0.1:{port}", new ProcessOwner(proc));
    }
    catch (System.ComponentModel.Win32Exception)
    {
        return null;
    }
}

sealed class ProcessOwner(Process p) : IDisposable
{
    public void Dispose()
    {
        p.Kill();
        p.WaitForExit();
        p.Dispose();
    }
}
