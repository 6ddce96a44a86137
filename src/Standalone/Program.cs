using System.Globalization;
using Microsoft.Extensions.Options;
using Serving.Inference.Node.Hosting;
using Serving.ServiceDefaults;
using Serving.ServiceDefaults.Logging;

namespace Serving.Standalone;

/// <summary>
/// <c>dotnet run -c Release --project src/Standalone</c>: gateway + node + store in one process. Ctrl+C (or SIGTERM)
/// stops the gateway, drains the node and stops the store.
/// </summary>
public static class Program
{
    /// <summary>Entry point.</summary>
    public static async Task<int> Main(string[] args)
    {
        // standalone.json first, so that environment variables and the command line override it.
        var defaults = new ConfigurationManager();
        defaults.SetBasePath(AppContext.BaseDirectory).AddJsonFile("standalone.json", optional: true);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            Args = args, ContentRootPath = AppContext.BaseDirectory, Configuration = defaults,
        });
        builder.AddStandalone();
        using var host = builder.Build();
        try
        {
            await host.RunAsync();
            return 0;
        }
        catch (Exception e) when (e is ArgumentException or TimeoutException or IOException or InvalidOperationException or OptionsValidationException)
        {
            await Console.Error.WriteLineAsync("Serving did not start: " + e.Message);
            return 1;
        }
    }

    /// <summary>
    /// The outer host's services: <see cref="StandaloneOptions"/> validated at start, a shutdown time that covers the
    /// node's drain, and the hosted service that starts and stops the three parts (each part registers its own).
    /// </summary>
    public static HostApplicationBuilder AddStandalone(this HostApplicationBuilder builder)
    {
        StandaloneSystem.DropAppSettings(builder.Configuration);
        builder.AddNativeHeap(); // glibc's malloc set before the node's and gateway's threads allocate
        builder.AddServiceLogging(); // this host's own records (lifetime, startup failures) go the gateway's and node's way
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        // The node drains for Node:ShutdownDrain inside this host's stop; add the gateway's and the store's stop to it.
        var node = builder.Configuration.GetSection(NodeOptions.Section).Get<NodeOptions>() ?? new NodeOptions();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = node.ShutdownDrain + NodeOptions.ShutdownMargin + TimeSpan.FromSeconds(10));
        builder.Services.AddOptions<StandaloneOptions>().BindConfiguration(StandaloneOptions.Section).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<StandaloneOptions>, StandaloneOptionsValidator>();
        builder.Services.AddSingleton<IConfiguration>(builder.Configuration);
        builder.Services.AddHostedService<StandaloneService>();
        return builder;
    }
}

/// <summary>Starts <see cref="StandaloneSystem"/>, prints where to send requests, stops it in order.</summary>
internal sealed class StandaloneService(IConfiguration configuration) : IHostedService
{
    private StandaloneSystem? _system;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _system = await StandaloneSystem.StartAsync(configuration, cancellationToken);
        await Console.Out.WriteLineAsync(Banner(_system));
        await Console.Out.FlushAsync(cancellationToken);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_system is null) return;
        await Console.Out.WriteLineAsync("Stopping: gateway, node (drains running requests), store.");
        await _system.StopAsync().WaitAsync(cancellationToken);
    }

    internal static string Banner(StandaloneSystem s)
    {
        // The same prompt with an adapter of tenant public (every tenant may use those), when there is one.
        string? adapter = s.PublicAdapters.Contains("german") ? "german" : s.PublicAdapters.FirstOrDefault();
        string adapterExample = adapter is null ? "" : string.Create(CultureInfo.InvariantCulture, $$"""

          # the same request through the public adapter "{{adapter}}" (public adapters: {{string.Join(", ", s.PublicAdapters)}})
          curl -s {{s.GatewayUrl}}/v1/chat/completions -H "Authorization: Bearer {{s.DevKey}}" -H 'Content-Type: application/json' \
            -d '{"model":"{{s.ModelId}}:public/{{adapter}}","messages":[{"role":"user","content":"Tell me a fortune"}],"max_tokens":48,"temperature":0.8,"seed":1}'
        """);
        // One request per alignment method with the node's default head, and a head upload, when the system has a default head.
        string auth = $"-H \"Authorization: Bearer {s.DevKey}\" -H 'Content-Type: application/json'";
        string chat = $"\"model\":\"{s.ModelId}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Tell me a fortune\"}}],\"max_tokens\":48,\"temperature\":0.8,\"seed\":1";
        string alignmentExample = s.DefaultRewardHead is null ? "" : string.Create(CultureInfo.InvariantCulture, $$$"""


          # decoding-time alignment with the reward head {{{s.DefaultRewardHead}}} (reward heads: {{{string.Join(", ", s.PublicRewardHeads.Select(h => "public/" + h))}}}; add "reward_head" to pick one)
          curl -s {{{s.GatewayUrl}}}/v1/chat/completions {{{auth}}} \
            -d '{{{{chat}}},"alignment":{"method":"best_of_n","n":4}}'
          curl -s {{{s.GatewayUrl}}}/v1/chat/completions {{{auth}}} \
            -d '{{{{chat}}},"alignment":{"method":"args","k":10,"weight":1.5}}'
          curl -s {{{s.GatewayUrl}}}/v1/chat/completions {{{auth}}} \
            -d '{{{{chat}}},"alignment":{"method":"darwin","variants":5,"interval":40,"iterations":1}}'
          # your own reward head (config.json + head.safetensors), then "reward_head":"mine"
          curl -s {{{s.GatewayUrl}}}/v1/reward-heads/mine -H "Authorization: Bearer {{{s.DevKey}}}" \
            -F config.json=@{{{Path.Combine(s.ModelPath, "reward-head", "config.json")}}} -F head.safetensors=@{{{Path.Combine(s.ModelPath, "reward-head", "head.safetensors")}}}
        """);
        return string.Create(CultureInfo.InvariantCulture, $$"""

        Serving is up (gateway + inference node + {{(s.EmbeddedStore ? "embedded Garnet" : "Redis")}} in one process).
          Gateway   {{s.GatewayUrl}}   (OpenAPI UI {{s.GatewayUrl}}/scalar/v1, metrics /metrics, readiness /health/ready)
          Model     {{s.ModelId}}   ({{s.ModelPath}}; adapters: POST /v1/adapters, then model "{{s.ModelId}}:<name>")
          Dev key   {{s.DevKey}}   (tenant "{{s.DevTenant}}"; set --Standalone:DevKey to keep one across restarts)
          Store     {{s.Redis}}
          Node      {{s.NodeUrl}}   (internal)

        Try:
          curl -s {{s.GatewayUrl}}/v1/chat/completions -H "Authorization: Bearer {{s.DevKey}}" -H 'Content-Type: application/json' \
            -d '{"model":"{{s.ModelId}}","messages":[{"role":"user","content":"Tell me a fortune"}],"max_tokens":48,"temperature":0.8,"seed":1}'{{adapterExample}}{{alignmentExample}}

        Ctrl+C stops everything.
        """);
    }
}
