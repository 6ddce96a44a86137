using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Serving.Fixtures;
using Serving.ServiceDefaults.Logging;
using Serving.ServiceDefaults.Telemetry;

namespace Serving.Standalone.Tests.Telemetry;

/// <summary>
/// <c>Telemetry:OtlpEndpoint</c> turns the OTLP exporter on: a real OTLP/HTTP receiver on loopback gets the request's
/// spans (the gateway's and the node's phase spans, in the client's trace, from the one-process host's single exporter)
/// and, at shutdown, the node's metrics. Bad logging and telemetry settings stop a service at start.
/// </summary>
public sealed class OtlpExportTests
{
    /// <summary>Bodies posted to <c>/v1/traces</c> and <c>/v1/metrics</c> by the exporters.</summary>
    private sealed class Collector : IAsyncDisposable
    {
        private readonly WebApplication _app;

        public Recorded<byte[]> Traces { get; } = new();

        public Recorded<byte[]> Metrics { get; } = new();

        public string Url { get; }

        private Collector(WebApplication app, string url)
        {
            _app = app;
            Url = url;
        }

        public static async Task<Collector> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            builder.Logging.ClearProviders();
            var app = builder.Build();
            Collector? self = null;
            app.MapPost("/v1/{signal}", async (string signal, HttpContext context) =>
            {
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body);
                (signal == "traces" ? self!.Traces : self!.Metrics).Add(body.ToArray());
                return Results.Ok();
            });
            await app.StartAsync();
            string url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            return self = new Collector(app, url);
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }

    private static bool Contains(byte[] body, ReadOnlySpan<byte> part) => body.AsSpan().IndexOf(part) >= 0;

    [Fact]
    public async Task OtlpEndpoint_Set_GatewayAndNodeSpansOfTheTraceAndNodeMetricsReachTheCollector()
    {
        await using var collector = await Collector.StartAsync();
        string model = Path.Combine(Path.GetTempPath(), "serving-standalone-tests-" + Environment.ProcessId, "otlp");
        FixtureCheckpoint.Write(model, FixtureShape.TinyGpt2);
        var system = await StandaloneSystem.StartAsync(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Standalone:ModelPath"] = model,
            ["Standalone:Port"] = "0",
            ["Standalone:DevKey"] = "sk-otlp-dev",
            ["Standalone:SeedPublicAdapters"] = "false",
            ["Standalone:SeedRewardHeads"] = "false",
            ["Node:Threads"] = "1",
            ["Node:ShutdownDrain"] = "00:00:00",
            ["Logging:LogLevel:Default"] = "Warning",
            ["Telemetry:OtlpEndpoint"] = collector.Url,
            ["Telemetry:OtlpProtocol"] = "HttpProtobuf",
        }).Build());
        var trace = ActivityTraceId.CreateRandom();
        try
        {
            using var client = new HttpClient(new SocketsHttpHandler { ActivityHeadersPropagator = null }) { BaseAddress = new Uri(system.GatewayUrl) };
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sk-otlp-dev");
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent(JsonSerializer.Serialize(new
                {
                    model = system.ModelId,
                    messages = new[] { new { role = "user", content = "hi" } },
                    max_tokens = 2,
                }), Encoding.UTF8, "application/json"),
            };
            request.Headers.Add("traceparent", $"00-{trace.ToHexString()}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);

            // OTLP protobuf carries the trace id as its 16 raw bytes and names as UTF-8: no decoder needed to find them.
            // The batch processor exports on a timer, so the node's phase spans of one trace may arrive in different
            // export requests (a slow machine sees the timer fire between two of them): each must be in one of the
            // trace's bodies, not all in the same one.
            byte[] traceBytes = Convert.FromHexString(trace.ToHexString());
            bool Exported(List<byte[]> bodies, ReadOnlySpan<byte> span)
            {
                foreach (var b in bodies)
                    if (Contains(b, traceBytes) && Contains(b, span)) return true;
                return false;
            }
            var bodies = await collector.Traces.WaitAsync(
                b => Exported(b, "serving.node.queue_wait"u8) && Exported(b, "serving.node.prefill"u8) && Exported(b, "serving.node.decode"u8),
                "the node's queue-wait, prefill and decode spans of the trace at the collector");
            Assert.All(bodies, b => Assert.True(Contains(b, "serving-standalone"u8), "every export names the one-process host's service"));
        }
        finally
        {
            await system.StopAsync();
            Directory.Delete(model, recursive: true);
        }
        // The meter provider's last collection at shutdown: the node's time to first token among the exported metrics.
        await collector.Metrics.WaitAsync(b => b.Any(x => Contains(x, "serving.node.time_to_first_token"u8)), "the node's metrics at the collector");
    }

    [Theory]
    [InlineData("Logging:LogLevel:Default", "Loud", "Logging:LogLevel:Default")]
    [InlineData("Logging:LogLevel:Microsoft.AspNetCore", "7", "Logging:LogLevel:Microsoft.AspNetCore")]
    [InlineData("Telemetry:OtlpEndpoint", "collector:4317", "Telemetry:OtlpEndpoint")]
    [InlineData("Telemetry:TraceSampleRatio", "1.5", "Telemetry:TraceSampleRatio")]
    public void Settings_Invalid_ServiceRefusesToStartNamingTheKey(string key, string value, string named)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { EnvironmentName = "Testing", ContentRootPath = AppContext.BaseDirectory });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { [key] = value });
        var e = Assert.Throws<OptionsValidationException>(() =>
        {
            builder.AddServiceTelemetry(new ServiceTelemetry("test", [], []));
            builder.AddServiceLogging();
            using var host = builder.Build();
            host.Services.GetRequiredService<ILoggerFactory>();
        });
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Settings_Valid_LevelsAndFormatAreRead()
    {
        var options = ServiceLogging.Read(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Logging:Format"] = "text",
            ["Logging:LogLevel:Default"] = "warning",
            ["Logging:LogLevel:Yarp"] = "None",
        }).Build());
        Assert.Equal(LogFormat.Text, options.Format);
        Assert.True(ServiceLogging.TryParseLevel(options.LogLevel["Default"], out var level) && level == Serilog.Events.LogEventLevel.Warning);
        Assert.True(ServiceLogging.TryParseLevel(options.LogLevel["Yarp"], out var none) && none > Serilog.Events.LogEventLevel.Fatal);
    }
}
