// Gateway overhead: the same closed-loop load sent directly to a node and through the gateway, alternating A/B rounds.
// The node is a minimal OpenAI-shaped stub (no model) so that what is measured is the gateway's own cost.
// The load is the load generator's (tools/LoadGen.Core): its client, closed-loop runner and metrics (E2E for
// non-streamed requests; TTFT and ITL for streamed ones), fixed prompt and output lengths.
// Usage: dotnet run -c Release --project bench/Gateway.Benchmarks -- [requestsPerRound=2000] [rounds=5]
using System.Text;
using System.Text.Json;
using Serving.LoadGen;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;
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
// Streamed answer: StreamTokens content chunks, each flushed at once, then usage and [DONE].
const int StreamTokens = 16;
byte[] chunk = Encoding.UTF8.GetBytes("""data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,"delta":{"content":" ok"},"finish_reason":null}]}""" + "\n\n");
byte[] tail = Encoding.UTF8.GetBytes("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":"
    + StreamTokens + ",\"total_tokens\":" + (8 + StreamTokens) + "}}\n\ndata: [DONE]\n\n");
// With stream_options.continuous_usage_stats (what the gateway asks of nodes, to settle cancelled streams) every chunk
// carries the usage so far, as the real node writes it.
byte[][] chunksWithUsage = Enumerable.Range(1, StreamTokens).Select(i => Encoding.UTF8.GetBytes(
    """data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,"delta":{"content":" ok"},"finish_reason":null}],"usage":{"prompt_tokens":8,"completion_tokens":"""
    + i + ",\"total_tokens\":" + (8 + i) + ",\"generated_tokens\":" + i + "}}\n\n")).ToArray();
byte[] streamFlag = "\"stream\":true"u8.ToArray();
byte[] continuousFlag = "\"continuous_usage_stats\":true"u8.ToArray();
node.MapPost("/v1/chat/completions", async (HttpContext ctx) =>
{
    using var body = new MemoryStream();
    await ctx.Request.Body.CopyToAsync(body);
    if (body.GetBuffer().AsSpan(0, (int)body.Length).IndexOf(streamFlag) < 0)
    {
        ctx.Response.ContentType = "application/json";
        await ctx.Response.Body.WriteAsync(answer);
        return;
    }
    ctx.Response.ContentType = "text/event-stream";
    bool continuous = body.GetBuffer().AsSpan(0, (int)body.Length).IndexOf(continuousFlag) >= 0;
    for (var i = 0; i < StreamTokens; i++)
    {
        await ctx.Response.Body.WriteAsync(continuous ? chunksWithUsage[i] : chunk);
        await ctx.Response.Body.FlushAsync();
    }
    await ctx.Response.Body.WriteAsync(tail);
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

// One client per mode, shared by direct and gateway rounds (both reach 127.0.0.1; the URL is given per sender).
OpenAiLoadClient Client(string baseUrl, bool stream) => new(new ClientOptions
{
    BaseUrl = new Uri(baseUrl), BaseModel = "bench", ApiKey = Key, Stream = stream, Endpoint = ApiEndpoint.Chat, Timeout = TimeSpan.FromSeconds(30),
});

// Closed loop: `concurrency` requests in flight, `count` requests of 8 prompt words; streamed ones ask for StreamTokens tokens.
async Task<RunMetrics> RunAsync(OpenAiLoadClient client, int concurrency, int count, bool stream)
{
    var trace = LoadBenchmark.FixedLengthTrace(count, 8, stream ? StreamTokens : 1);
    var point = await LoadBenchmark.ClosedLoopAsync(client, trace, concurrency);
    if (point.Failures.Count > 0) throw new InvalidOperationException($"{client.Url}: {point.Failures.Count} failed, e.g. {point.Failures[0].Error} {point.Failures[0].ErrorDetail}");
    return point.Metrics;
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
foreach (var (label, concurrency, stream) in new[] { ("moderate (1 in flight)", 1, false), ("saturating (64 in flight)", 64, false), ("streamed, moderate (1 in flight)", 1, true) })
{
    using var directClient = Client(nodeUrl, stream);
    using var gatewayClient = Client(gatewayUrl, stream);
    await RunAsync(directClient, concurrency, perRound / 4, stream);     // warm-up
    await RunAsync(gatewayClient, concurrency, perRound / 4, stream);
    var direct = new List<RunMetrics>();
    var viaGateway = new List<RunMetrics>();
    for (int r = 0; r < rounds; r++)
    {
        direct.Add(await RunAsync(directClient, concurrency, perRound, stream));
        viaGateway.Add(await RunAsync(gatewayClient, concurrency, perRound, stream));
    }
    // Non-streamed: end-to-end latency. Streamed: time to first token (and inter-token latency below).
    Distribution Latency(RunMetrics m) => stream ? m.TtftMs : m.E2eMs;
    string what = stream ? "TTFT" : "E2E";
    var addedP50 = direct.Zip(viaGateway, (d, g) => Latency(g).P50 - Latency(d).P50).ToList();
    var addedP99 = direct.Zip(viaGateway, (d, g) => Latency(g).P99 - Latency(d).P99).ToList();
    var rpsRatio = direct.Zip(viaGateway, (d, g) => g.RequestThroughput / d.RequestThroughput).ToList();
    Console.WriteLine($"{label}: direct {what} p50 {Median(direct.Select(x => Latency(x).P50)):0.000} ms p99 {Median(direct.Select(x => Latency(x).P99)):0.000} ms {Median(direct.Select(x => x.RequestThroughput)):0} req/s | " +
        $"gateway {what} p50 {Median(viaGateway.Select(x => Latency(x).P50)):0.000} ms p99 {Median(viaGateway.Select(x => Latency(x).P99)):0.000} ms {Median(viaGateway.Select(x => x.RequestThroughput)):0} req/s | " +
        $"added p50 {Median(addedP50):0.000} ms (min {addedP50.Min():0.000}, max {addedP50.Max():0.000}), added p99 {Median(addedP99):0.000} ms (min {addedP99.Min():0.000}, max {addedP99.Max():0.000}), " +
        $"throughput gateway/direct {Median(rpsRatio):0.00} (min {rpsRatio.Min():0.00}, max {rpsRatio.Max():0.00})" +
        (stream ? $" | ITL p50 direct {Median(direct.Select(x => x.ItlMs.P50)):0.000} ms, gateway {Median(viaGateway.Select(x => x.ItlMs.P50)):0.000} ms" : ""));
    results.Add(new
    {
        label, concurrency, stream, perRound, rounds, latency = what,
        direct = direct.Select(m => new { p50 = Latency(m).P50, p99 = Latency(m).P99, rps = m.RequestThroughput, itlP50 = m.ItlMs.P50 }),
        viaGateway = viaGateway.Select(m => new { p50 = Latency(m).P50, p99 = Latency(m).P99, rps = m.RequestThroughput, itlP50 = m.ItlMs.P50 }),
        addedP50, addedP99, rpsRatio,
    });
}
Directory.CreateDirectory("bench/results");
File.WriteAllText("bench/results/gateway-bench.json", JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true, IncludeFields = true }));
await gateway.StopAsync();
await node.StopAsync();
