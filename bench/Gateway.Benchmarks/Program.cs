// Gateway overhead: the same closed-loop load sent directly to a node and through the gateway, alternating A/B rounds.
// The node is a minimal OpenAI-shaped stub (no model) so that what is measured is the gateway's own cost.
// Usage: dotnet run -c Release --project bench/Gateway.Benchmarks -- [requestsPerRound=2000] [rounds=5]
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Serving.AdapterStore.Registry;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Registry;
using Serving.Gateway;
using StackExchange.Redis;

int perRound = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 2000;
int rounds = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 5;
const string Key = "sk-bench";

using var garnet = new EmbeddedGarnet();
using var redis = await ConnectionMultiplexer.ConnectAsync(garnet.ConnectionString);

// Node stub.
var nodeBuilder = WebApplication.CreateSlimBuilder();
nodeBuilder.WebHost.UseUrls("http://127.0.0.1:0");
nodeBuilder.Logging.ClearProviders();
var node = nodeBuilder.Build();
byte[] answer = Encoding.UTF8.GetBytes("""{"id":"c","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}""");
node.MapPost("/v1/chat/completions", async (HttpContext ctx) =>
{
    await ctx.Request.Body.CopyToAsync(Stream.Null);
    ctx.Response.ContentType = "application/json";
    await ctx.Response.Body.WriteAsync(answer);
});
node.MapGet("/health/ready", () => Results.Ok());
await node.StartAsync();
string nodeUrl = node.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
await new NodeRegistry(redis).PublishHeartbeatAsync(new NodeHeartbeat
{
    NodeId = "bench-node", BaseUrl = nodeUrl + "/", Model = "bench", MaxRunning = 1024, Timestamp = DateTimeOffset.UtcNow,
}, TimeSpan.FromHours(1));

// Gateway, exactly as Program.cs composes it.
var gwBuilder = WebApplication.CreateBuilder();
gwBuilder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
{
    ["AdapterStore:RedisConnectionString"] = garnet.ConnectionString,
    ["Gateway:Tenancy:StaticKeys:0:Key"] = Key,
    ["Gateway:Tenancy:StaticKeys:0:Tenant"] = "bench",
    ["Gateway:RateLimits:RequestsPerMinute"] = "10000000",
    ["Gateway:RateLimits:TokensPerMinute"] = "1000000000",
    ["Gateway:Routing:HealthInterval"] = "00:00:00",
});
gwBuilder.WebHost.UseUrls("http://127.0.0.1:0");
gwBuilder.Logging.ClearProviders();
gwBuilder.AddGateway();
var gateway = gwBuilder.Build();
gateway.MapGateway();
await gateway.StartAsync();
string gatewayUrl = gateway.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
while (gateway.Services.GetRequiredService<Serving.Gateway.Routing.INodeView>().Current.Nodes.Count == 0) await Task.Delay(20);

byte[] body = JsonSerializer.SerializeToUtf8Bytes(new { model = "bench", max_tokens = 1, messages = new[] { new { role = "user", content = "hello" } } });
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 256 });

async Task<(double P50, double P99, double Rps)> RunAsync(string baseUrl, int concurrency, int count)
{
    var latencies = new double[count];
    int next = -1;
    var wall = Stopwatch.StartNew();
    await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
    {
        int i;
        while ((i = Interlocked.Increment(ref next)) < count)
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, baseUrl + "/v1/chat/completions") { Content = new ByteArrayContent(body) };
            req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Key);
            long t0 = Stopwatch.GetTimestamp();
            using var resp = await http.SendAsync(req);
            await resp.Content.LoadIntoBufferAsync();
            if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"{baseUrl}: {(int)resp.StatusCode}");
            latencies[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
    }));
    double seconds = wall.Elapsed.TotalSeconds;
    Array.Sort(latencies);
    return (latencies[count / 2], latencies[(int)(count * 0.99)], count / seconds);
}

static double Median(IEnumerable<double> v)
{
    var a = v.Order().ToArray();
    return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
}

Console.WriteLine($"machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");
Console.WriteLine($"command: dotnet run -c Release --project bench/Gateway.Benchmarks -- {perRound} {rounds}");
Console.WriteLine("client, gateway and node stub share this process and its cores; numbers are ratios/differences of alternating rounds.");
var results = new List<object>();
foreach (var (label, concurrency) in new[] { ("moderate (1 in flight)", 1), ("saturating (64 in flight)", 64) })
{
    await RunAsync(nodeUrl, concurrency, perRound / 4);     // warm-up
    await RunAsync(gatewayUrl, concurrency, perRound / 4);
    var direct = new List<(double P50, double P99, double Rps)>();
    var viaGateway = new List<(double P50, double P99, double Rps)>();
    for (int r = 0; r < rounds; r++)
    {
        direct.Add(await RunAsync(nodeUrl, concurrency, perRound));
        viaGateway.Add(await RunAsync(gatewayUrl, concurrency, perRound));
    }
    var addedP50 = direct.Zip(viaGateway, (d, g) => g.P50 - d.P50).ToList();
    var addedP99 = direct.Zip(viaGateway, (d, g) => g.P99 - d.P99).ToList();
    var rpsRatio = direct.Zip(viaGateway, (d, g) => g.Rps / d.Rps).ToList();
    Console.WriteLine($"{label}: direct p50 {Median(direct.Select(x => x.P50)):0.000} ms p99 {Median(direct.Select(x => x.P99)):0.000} ms {Median(direct.Select(x => x.Rps)):0} req/s | " +
        $"gateway p50 {Median(viaGateway.Select(x => x.P50)):0.000} ms p99 {Median(viaGateway.Select(x => x.P99)):0.000} ms {Median(viaGateway.Select(x => x.Rps)):0} req/s | " +
        $"added p50 {Median(addedP50):0.000} ms (min {addedP50.Min():0.000}, max {addedP50.Max():0.000}), added p99 {Median(addedP99):0.000} ms (min {addedP99.Min():0.000}, max {addedP99.Max():0.000}), " +
        $"throughput gateway/direct {Median(rpsRatio):0.00} (min {rpsRatio.Min():0.00}, max {rpsRatio.Max():0.00})");
    results.Add(new { label, concurrency, perRound, rounds, direct, viaGateway, addedP50, addedP99, rpsRatio });
}
Directory.CreateDirectory("bench/results");
File.WriteAllText("bench/results/gateway-bench.json", JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true, IncludeFields = true }));
await gateway.StopAsync();
await node.StopAsync();
