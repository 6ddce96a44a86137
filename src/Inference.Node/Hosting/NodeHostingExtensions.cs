using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using Serilog;
using Serilog.Formatting.Compact;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Registry;
using Serving.Inference.Node.Telemetry;

namespace Serving.Inference.Node.Hosting;

/// <summary>Host wiring of the node: logging, options, metrics, health, and the model services.</summary>
public static class NodeHostingExtensions
{
    /// <summary>Serilog (compact JSON to the console), validated options, listen address, OpenTelemetry metrics, health checks.</summary>
    public static WebApplicationBuilder AddNodeDefaults(this WebApplicationBuilder builder)
    {
        builder.Services.AddSerilog((services, lc) => lc
            .ReadFrom.Configuration(builder.Configuration)
            .Enrich.FromLogContext()
            .WriteTo.Console(new RenderedCompactJsonFormatter()));

        builder.Services.AddOptions<NodeOptions>().Bind(builder.Configuration.GetSection(NodeOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<NodeOptions>, NodeOptionsValidator>();

        // Node:Host/Node:Port unless the standard urls setting is given.
        if (string.IsNullOrEmpty(builder.Configuration["urls"]))
        {
            var host = builder.Configuration[$"{NodeOptions.Section}:Host"] ?? "127.0.0.1";
            var port = builder.Configuration.GetValue($"{NodeOptions.Section}:Port", 8000);
            builder.WebHost.UseUrls($"http://{host}:{port}");
        }
        builder.Services.Configure<HostOptions>(o =>
        {
            var drain = builder.Configuration.GetValue($"{NodeOptions.Section}:ShutdownDrainSeconds", 30.0);
            o.ShutdownTimeout = TimeSpan.FromSeconds(drain + 5);
        });

        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.DictionaryKeyPolicy = null;
        });
        builder.Services.AddSingleton<NodeMetrics>();
        builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddMeter(NodeMetrics.MeterName).AddPrometheusExporter());
        builder.Services.AddHealthChecks().AddCheck<ReadinessCheck>("scheduler", tags: ["ready"]);
        builder.AddNodeRegistration(); // heartbeats to the gateway's registry when Node:Redis is set
        return builder;
    }

    /// <summary>The model, its scheduler (started and drained by a hosted service) and the model catalog.</summary>
    public static IServiceCollection AddInferenceNode(this IServiceCollection services)
    {
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<ModelHost>();
        services.AddSingleton<ModelCatalog>();
        services.AddSingleton<RewardHeads.RewardHeadCatalog>();
        services.AddHostedService<SchedulerHostedService>();
        services.AddNodeAdapters();
        // The heartbeat's adapter tiers (registered after the registry's default, so this one wins).
        services.AddSingleton<IAdapterResidencySource>(sp => sp.GetRequiredService<AdapterManager>());
        return services;
    }

    /// <summary>Liveness <c>/health/live</c>, readiness <c>/health/ready</c>, Prometheus <c>/metrics</c>.</summary>
    public static WebApplication MapNodeDefaults(this WebApplication app)
    {
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains("ready") });
        app.MapPrometheusScrapingEndpoint("/metrics");
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
