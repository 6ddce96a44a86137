using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Serving.Gateway.RateLimiting;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>
/// The real gateway and a scripted fake node, the token budget on a clock the test moves (refill never races it), and
/// every settlement delivered to the test as it happens (so it waits for the gateway, never for the clock).
/// </summary>
internal sealed class AccountingHarness : IAsyncDisposable
{
    public const string Tenant = "tenant-a";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(15);

    private readonly Channel<(long Reserved, long Charged)> _settled = Channel.CreateUnbounded<(long, long)>();

    private AccountingHarness(GatewayHost gateway, FakeNode node, FakeTimeProvider clock)
    {
        Gateway = gateway;
        Node = node;
        Clock = clock;
        Budget = gateway.Services.GetRequiredService<TokenBudget>();
        Budget.Settled += (tenant, reserved, charged) =>
        {
            if (tenant == Tenant) _settled.Writer.TryWrite((reserved, charged));
        };
        // No draining of unread responses: disposing a stream closes the connection, as a client that goes away does.
        Client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0, ResponseDrainTimeout = TimeSpan.Zero })
        {
            BaseAddress = new Uri(gateway.BaseUrl),
            Timeout = Bound,
        };
        Client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", GatewayHost.KeyA);
    }

    public GatewayHost Gateway { get; }
    public FakeNode Node { get; }
    public FakeTimeProvider Clock { get; }
    public TokenBudget Budget { get; }
    public HttpClient Client { get; }

    public long Available => Budget.Available(Tenant);

    public static async Task<AccountingHarness> StartAsync(string redis, int tokensPerMinute, int maxModelLen = 512)
    {
        var clock = new FakeTimeProvider();
        var gw = await GatewayHost.StartAsync(redis, new()
        {
            ["Gateway:RateLimits:TokensPerMinute"] = tokensPerMinute.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Gateway:RateLimits:RequestsPerMinute"] = "10000000",
        }, services => services.AddKeyedSingleton<TimeProvider>(TokenBudget.ClockKey, clock));
        var node = await FakeNode.StartAsync(redis, gw.RegistryPrefix, "n1");
        node.MaxModelLen = maxModelLen;
        await node.PublishAsync();
        await gw.WaitForNodesAsync("n1");
        // The view must hold the heartbeat that publishes max_model_len.
        var view = gw.Services.GetRequiredService<Serving.Gateway.Routing.INodeView>();
        var deadline = DateTime.UtcNow + Bound;
        while (view.Current.Nodes["n1"].Heartbeat.MaxModelLen != maxModelLen)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("max_model_len never reached the gateway's view");
            await Task.Delay(20);
        }
        return new AccountingHarness(gw, node, clock);
    }

    /// <summary>A request body; <paramref name="script"/> adds fields (the fake node's x_fake_* script among them).</summary>
    public static byte[] Body(bool chat, string prompt, object? script = null)
    {
        var body = new JsonObject { ["model"] = "fake" };
        if (chat) body["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt });
        else body["prompt"] = prompt;
        if (script is not null)
        {
            foreach (var (k, v) in JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(script))!.AsObject()) body[k] = v?.DeepClone();
        }
        return Encoding.UTF8.GetBytes(body.ToJsonString());
    }

    public static HttpRequestMessage Post(bool chat, byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return new HttpRequestMessage(HttpMethod.Post, chat ? "/v1/chat/completions" : "/v1/completions") { Content = content };
    }

    /// <summary>Sends and reads the whole response.</summary>
    public async Task<(int Status, string Body, HttpResponseHeaders Headers)> SendAsync(bool chat, byte[] body)
    {
        using var response = await Client.SendAsync(Post(chat, body));
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync(), response.Headers);
    }

    /// <summary>Sends, reads the whole response and asserts its status; a wrong status fails with the body (an error's code and message say why).</summary>
    public async Task ExpectAsync(int status, bool chat, byte[] body)
    {
        var (actual, text, _) = await SendAsync(chat, body);
        Assert.True(actual == status, $"expected {status}, got {actual}: {text}");
    }

    /// <summary>Sends a stream, reads <paramref name="chunks"/> token events (0: only the headers), then goes away.</summary>
    public async Task<List<string>> SendAndCancelAsync(bool chat, byte[] body, int chunks)
    {
        var events = new List<string>();
        while (Node.ReceivedSignal.CurrentCount > 0) await Node.ReceivedSignal.WaitAsync();
        if (chunks == 0)
        {
            // Nothing reaches the client before the first token (the proxy sends the headers with the first bytes):
            // it gives up while waiting, once the node has the request.
            using var gone = new CancellationTokenSource();
            var sending = Client.SendAsync(Post(chat, body), HttpCompletionOption.ResponseHeadersRead, gone.Token);
            await Node.ReceivedSignal.WaitAsync(Bound);
            await gone.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sending);
            return events;
        }
        using (var response = await Client.SendAsync(Post(chat, body), HttpCompletionOption.ResponseHeadersRead).WaitAsync(Bound))
        {
            if ((int)response.StatusCode != 200) throw new InvalidOperationException($"stream answered {(int)response.StatusCode}");
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(), Encoding.UTF8);
            while (events.Count < chunks && await reader.ReadLineAsync().WaitAsync(Bound) is { } line)
            {
                if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add(line[6..]);
            }
        }
        return events;
    }

    /// <summary>The next settlement of the tenant's requests (bounded wait).</summary>
    public async Task<(long Reserved, long Charged)> SettledAsync() => await _settled.Reader.ReadAsync().AsTask().WaitAsync(Bound);

    /// <summary>True when a settlement is waiting (none should be after a request refused before admission).</summary>
    public bool HasUnreadSettlement => _settled.Reader.TryPeek(out _);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Node.DisposeAsync();
        await Gateway.DisposeAsync();
    }
}
