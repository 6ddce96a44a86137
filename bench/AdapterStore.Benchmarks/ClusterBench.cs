// Adapter store on one redis-server vs a 3-primary Redis Cluster (real processes on loopback): shard distribution of
// 1,000 adapters in 10 tenants (one holding half) for both key layouts, then upload and cold-read throughput/latency.
// Usage: dotnet run -c Release --project bench/AdapterStore.Benchmarks -- --cluster [--reps 5] [--ops 200] [--concurrency 8]
//        [--adapters 1000] [--append docs/deploy.md]
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Serving.AdapterStore.Storage;
using Serving.Bench;
using Serving.Tests.Shared;
using StackExchange.Redis;

namespace Serving.AdapterStore.Benchmarks;

internal static class ClusterBench
{
    private sealed record Target(string Name, string ConnectionString, int WaitReplicas);

    public static async Task RunAsync(string[] args, byte[] container, string containerTitle)
    {
        var a = BenchArgs.Parse(args);
        int reps = a.Int("reps", 5), ops = a.Int("ops", 200), concurrency = a.Int("concurrency", 8), adapters = a.Int("adapters", 1000);
        string command = "dotnet run -c Release --project bench/AdapterStore.Benchmarks -- " + string.Join(' ', args);
        var report = new StringBuilder();
        void Line(string s = "")
        {
            Console.WriteLine(s);
            report.AppendLine(s);
        }
        Line($"### Adapter store: one redis-server vs a 3-primary Redis Cluster ({DateTime.UtcNow:yyyy-MM-dd})");
        Line();
        Line($"Machine: {BenchMachine.Cpu()} (load average at start {LoadAverage()}), redis-server {RedisVersion()} on loopback, every server and the client on the same cores. Command: `{command}`");
        Line();

        // 1. Distribution: where 1,000 adapters of 10 tenants land, per layout (bytes and keys per primary, from the servers).
        Line($"**Shard distribution**: {adapters:N0} adapters in 10 tenants, `public` holding half, the rest split evenly; each a " +
            $"{containerTitle} ({container.Length:N0} B, 1 MiB chunks); 3 primaries (no replicas), keys and `used_memory` read from each primary.");
        Line();
        Line("| layout | keys per primary | MiB per primary (above empty) | largest primary's share of bytes | ideal |");
        Line("|---|---|---|---|---|");
        var distribution = new List<object>();
        foreach (var layout in new[] { KeyLayout.PerTenant, KeyLayout.PerAdapter })
        {
            using var cluster = new RedisCluster(primaries: 3, replicasPerPrimary: 0);
            var primaries = cluster.PrimariesWithSlots().Select(p => p.Port).ToList();
            var baseline = primaries.Select(p => long.Parse(cluster.Info(p, "memory", "used_memory"), CultureInfo.InvariantCulture)).ToList();
            await using (var redis = await ConnectionMultiplexer.ConnectAsync(cluster.ConnectionString))
            {
                var store = new RedisAdapterStore(redis, new AdapterStoreOptions { KeyLayout = layout, VerifyAfterWrite = false });
                await Parallel.ForEachAsync(Enumerable.Range(0, adapters), new ParallelOptions { MaxDegreeOfParallelism = concurrency }, async (i, ct) =>
                {
                    var (tenant, name) = TenantOf(i, adapters);
                    await store.PublishAsync(new AdapterMetadata { Tenant = tenant, Name = name, BaseModel = "gpt2", Checksum = "" }, container, null, ct);
                });
            }
            var keys = primaries.Select(cluster.KeyCount).ToList();
            var bytes = primaries.Select((p, i) => long.Parse(cluster.Info(p, "memory", "used_memory"), CultureInfo.InvariantCulture) - baseline[i]).ToList();
            double largest = bytes.Max() / (double)bytes.Sum();
            Line($"| {layout} | {string.Join(" / ", keys)} | {string.Join(" / ", bytes.Select(b => (b / 1048576.0).ToString("F1", CultureInfo.InvariantCulture)))} | {largest * 100:F1}% | 33.3% |");
            distribution.Add(new { layout = layout.ToString(), keys, bytes, largest });
        }
        Line();

        // 2. Upload and cold read: the same store code against each target, alternating, after a warm-up.
        using var single = new RedisServer();
        using var cluster3 = new RedisCluster(primaries: 3, replicasPerPrimary: 1);
        var targets = new[]
        {
            new Target("single redis-server", $"127.0.0.1:{single.Port}", 0),
            new Target("cluster 3×(1+1)", cluster3.ConnectionString, 0),
            new Target("cluster 3×(1+1), WaitReplicas=1", cluster3.ConnectionString, 1),
        };
        var muxes = new Dictionary<string, ConnectionMultiplexer>();
        foreach (var t in targets) muxes[t.Name] = await ConnectionMultiplexer.ConnectAsync(t.ConnectionString);
        var uploads = targets.ToDictionary(t => t.Name, _ => new List<Phase>());
        var reads = targets.ToDictionary(t => t.Name, _ => new List<Phase>());
        for (int rep = -1; rep < reps; rep++)
        {
            foreach (var t in targets)
            {
                var store = new RedisAdapterStore(muxes[t.Name], new AdapterStoreOptions { KeepVersions = 2, WaitReplicas = t.WaitReplicas });
                string tenant = $"r{rep + 1}";
                var up = await RunPhaseAsync(ops, concurrency, i => store.PublishAsync(
                    new AdapterMetadata { Tenant = tenant, Name = $"a{i % 64}", BaseModel = "gpt2", Checksum = "" }, container, null, CancellationToken.None));
                var read = await RunPhaseAsync(ops, concurrency, async i =>
                {
                    _ = await store.ReadAsync(tenant, $"a{i % 64}", null, CancellationToken.None) ?? throw new InvalidOperationException("adapter vanished");
                });
                if (rep < 0) continue; // warm-up: connections, JIT, server allocators
                uploads[t.Name].Add(up);
                reads[t.Name].Add(read);
            }
        }
        foreach (var m in muxes.Values) await m.DisposeAsync();

        Line($"**Upload (publish: stage, verify, commit) and cold read (verified payload from Redis)** of the same container, {ops} operations " +
            $"per phase at concurrency {concurrency}, {reps} repetitions alternating the targets after one warm-up; medians over repetitions " +
            "(per-repetition p50/p99 over operations), ratio = median of per-repetition throughput ratios vs the single server (min–max).");
        Line();
        Line("| target | upload ops/s | upload MB/s | upload p50 / p99 ms | × single | cold read ops/s | read MB/s | read p50 / p99 ms | × single |");
        Line("|---|---|---|---|---|---|---|---|---|");
        string baseName = targets[0].Name;
        foreach (var t in targets)
        {
            var u = uploads[t.Name];
            var r = reads[t.Name];
            double mb = container.Length / 1e6;
            Line(string.Create(CultureInfo.InvariantCulture,
                $"| {t.Name} | {BenchStats.Median(u.Select(p => p.OpsPerSecond)):F0} | {BenchStats.Median(u.Select(p => p.OpsPerSecond * mb)):F0} | {BenchStats.Median(u.Select(p => p.P50)):F1} / {BenchStats.Median(u.Select(p => p.P99)):F1} | {(t.Name == baseName ? "–" : BenchStats.Ratio(u.Select(p => p.OpsPerSecond).ToList(), uploads[baseName].Select(p => p.OpsPerSecond).ToList()))} " +
                $"| {BenchStats.Median(r.Select(p => p.OpsPerSecond)):F0} | {BenchStats.Median(r.Select(p => p.OpsPerSecond * mb)):F0} | {BenchStats.Median(r.Select(p => p.P50)):F1} / {BenchStats.Median(r.Select(p => p.P99)):F1} | {(t.Name == baseName ? "–" : BenchStats.Ratio(r.Select(p => p.OpsPerSecond).ToList(), reads[baseName].Select(p => p.OpsPerSecond).ToList()))} |"));
        }
        Line();
        Line($"Load average at the end: {LoadAverage()}.");
        Directory.CreateDirectory("bench/results");
        File.WriteAllText("bench/results/store-cluster.json", JsonSerializer.Serialize(new
        {
            command, machine = BenchMachine.Cpu(), container_bytes = container.Length, ops, concurrency, reps, distribution,
            uploads = uploads.ToDictionary(k => k.Key, v => v.Value), reads = reads.ToDictionary(k => k.Key, v => v.Value),
        }, new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine("wrote bench/results/store-cluster.json");
        if (a.Str("append", "") is { Length: > 0 } path) BenchMachine.AppendMarkdown(path, report.ToString());
    }

    /// <summary>Adapter <paramref name="i"/> of <paramref name="count"/>: the first half in <c>public</c>, the rest over nine tenants.</summary>
    private static (string Tenant, string Name) TenantOf(int i, int count) =>
        i < count / 2 ? ("public", $"a{i}") : ($"tenant{(i - count / 2) % 9}", $"a{i}");

    public sealed record Phase(double OpsPerSecond, double P50, double P99);

    private static async Task<Phase> RunPhaseAsync(int ops, int concurrency, Func<int, Task> op)
    {
        var latencies = new double[ops];
        int next = -1;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < ops)
            {
                long start = Stopwatch.GetTimestamp();
                await op(i);
                latencies[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
        }));
        double seconds = clock.Elapsed.TotalSeconds;
        Array.Sort(latencies);
        return new Phase(ops / seconds, latencies[ops / 2], latencies[Math.Min(ops - 1, (int)(ops * 0.99))]);
    }

    private static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static string RedisVersion()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("redis-server", "--version") { RedirectStandardOutput = true })!;
            string s = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            int at = s.IndexOf("v=", StringComparison.Ordinal);
            return at < 0 ? "?" : s[(at + 2)..].Split(' ')[0];
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "not installed";
        }
    }
}
