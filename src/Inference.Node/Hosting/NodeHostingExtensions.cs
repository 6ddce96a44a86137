using System.Text.Json;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Registry;
using Serving.Inference.Node.Security;
using Serving.Inference.Node.RewardHeads;
using Serving.Inference.Node.Telemetry;
using Serving.ServiceDefaults;
using Serving.ServiceDefaults.Telemetry;

namespace Serving.Inference.Node.Hosting;

/// <summary>Host wiring of the node: logging, options, metrics, health, and the model services.</summary>
public static class NodeHostingExtensions
{
    /// <summary>
    /// The service defaults (Serilog from <c>Logging</c>, traces with the node's phase spans, metrics, OTLP from
    /// <c>Telemetry</c>), validated options, listen address, drain time, health checks, the exception handler.
    /// </summary>
    public static WebApplicationBuilder AddNodeDefaults(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults(new ServiceTelemetry(NodeTracing.ServiceName, Meters: [NodeMetrics.MeterName], ActivitySources: [NodeTracing.SourceName]));

        builder.Services.AddOptions<NodeOptions>().Bind(builder.Configuration.GetSection(NodeOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<NodeOptions>, NodeOptionsValidator>();
        // Credentials and TLS of the node's Redis connections (store and registry), apart from Node:Redis (a Secret sets Redis__Password).
        builder.Services.AddOptions<RedisClientOptions>().Bind(builder.Configuration.GetSection(RedisClientOptions.SectionName)).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RedisClientOptions>, RedisClientOptionsValidator>());

        // The host's own settings come before the container exists: read them from the same binding (defaults included).
        var node = builder.Configuration.GetSection(NodeOptions.Section).Get<NodeOptions>() ?? new NodeOptions();
        // Node:Host/Node:Port unless the standard urls setting is given.
        if (string.IsNullOrEmpty(builder.Configuration["urls"])) builder.WebHost.UseUrls($"http://{node.Host}:{node.Port}");
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = node.ShutdownDrain + NodeOptions.ShutdownMargin);

        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.DictionaryKeyPolicy = null;
        });
        builder.Services.AddSingleton<NodeMetrics>();
        builder.Services.AddHealthChecks().AddCheck<ReadinessCheck>("scheduler", tags: [HealthEndpoints.ReadyTag]);
        builder.Services.AddProblemDetails();
        builder.Services.AddExceptionHandler<NodeExceptionHandler>();
        builder.Services.AddOpenApi(); // /openapi/v1.json: the routes' metadata (snake_case from the JSON options above)
        builder.AddNodeRegistration(); // heartbeats to the gateway's registry when Node:Redis is set
        return builder;
    }

    /// <summary>The model, its scheduler (started and drained by a hosted service) and the model catalog.</summary>
    public static IServiceCollection AddInferenceNode(this IServiceCollection services)
    {
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<ModelHost>();
        services.AddSingleton<ModelCatalog>();
        services.AddNodeRewardHeads();
        services.AddSingleton<EarlyExit.ExitCatalog>();
        services.AddHostedService<SchedulerHostedService>();
        services.AddNodeAdapters();
        // The heartbeat's adapter tiers (registered after the registry's default, so this one wins).
        services.AddSingleton<IAdapterResidencySource>(sp => sp.GetRequiredService<AdapterManager>());
        return services;
    }

    /// <summary>
    /// The exception handler, liveness <c>/health/live</c>, readiness <c>/health/ready</c>, Prometheus <c>/metrics</c>,
    /// the OpenAPI document <c>/openapi/v1.json</c>.
    /// </summary>
    public static WebApplication MapNodeDefaults(this WebApplication app)
    {
        app.UseExceptionHandler();
        app.UseGatewayCredential(); // Node:GatewayKey: 401 before any route runs
        app.MapHealthEndpoints();
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapOpenApi();
        return app;
    }
}

/// <summary>Ready when the model is loaded and the scheduler accepts requests (not draining).</summary>
internal sealed class ReadinessCheck(ModelHost host) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(host.Scheduler.Status.Accepting
            ? HealthCheckResult.Healthy($"serving {host.ModelId}")
            : HealthCheckResult.Unhealthy("draining"));
}
