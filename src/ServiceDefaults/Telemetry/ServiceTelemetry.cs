using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Serving.ServiceDefaults.Telemetry;

/// <summary>What one service contributes to the shared telemetry: its default name, its meters and activity sources.</summary>
/// <param name="ServiceName">Default <c>service.name</c> (<see cref="TelemetryOptions.ServiceName"/> overrides it).</param>
/// <param name="Meters">Meters exported at <c>/metrics</c> (and by OTLP when configured).</param>
/// <param name="ActivitySources">Activity sources traced besides ASP.NET Core's server spans and HttpClient's client spans.</param>
public sealed record ServiceTelemetry(string ServiceName, IReadOnlyList<string> Meters, IReadOnlyList<string> ActivitySources);

/// <summary>
/// OpenTelemetry for every service: W3C trace context in and out (ASP.NET Core server spans continue an incoming
/// <c>traceparent</c>, HttpClient spans send it on), the service's own sources, metrics for the Prometheus scrape at
/// <c>/metrics</c>, and an OTLP exporter for both when <c>Telemetry:OtlpEndpoint</c> is set.
/// </summary>
public static class ServiceTelemetryExtensions
{
    /// <summary>The runtime's built-in meter (.NET 9+): <c>dotnet.gc.*</c>, <c>dotnet.process.*</c>, <c>dotnet.thread_pool.*</c>, <c>dotnet.exceptions</c>.</summary>
    public const string RuntimeMeter = "System.Runtime";

    /// <summary>Registers tracing and metrics for <paramref name="service"/>, from the <c>Telemetry</c> section.</summary>
    public static IHostApplicationBuilder AddServiceTelemetry(this IHostApplicationBuilder builder, ServiceTelemetry service)
    {
        builder.Services.AddOptions<TelemetryOptions>().BindConfiguration(TelemetryOptions.SectionName).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TelemetryOptions>, TelemetryOptionsValidator>());
        // The exporters are chosen while registering, before the container exists: read and check the section now.
        var options = builder.Configuration.GetSection(TelemetryOptions.SectionName).Get<TelemetryOptions>() ?? new TelemetryOptions();
        var result = new TelemetryOptionsValidator().Validate(null, options);
        if (result.Failed) throw new OptionsValidationException(TelemetryOptions.SectionName, typeof(TelemetryOptions), result.Failures);
        var endpoint = options.Endpoint;

        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(options.ServiceName ?? service.ServiceName,
                serviceVersion: typeof(ServiceTelemetryExtensions).Assembly.GetName().Version?.ToString()))
            .WithTracing(t =>
            {
                t.SetSampler(new ParentBasedSampler(new TraceIdRatioBasedSampler(options.TraceSampleRatio)));
                t.AddAspNetCoreInstrumentation(o => o.Filter = IsTraced);
                t.AddHttpClientInstrumentation();
                foreach (var source in service.ActivitySources) t.AddSource(source);
                if (endpoint is not null) t.AddOtlpExporter(o => Configure(o, endpoint, options.OtlpProtocol, "v1/traces"));
            })
            .WithMetrics(m =>
            {
                foreach (var meter in service.Meters) m.AddMeter(meter);
                // .NET's own runtime instruments (GC heap and pauses, working set, threads, exceptions): dotnet_* on /metrics.
                m.AddMeter(RuntimeMeter);
                m.AddPrometheusExporter();
                if (endpoint is not null) m.AddOtlpExporter(o => Configure(o, endpoint, options.OtlpProtocol, "v1/metrics"));
            });
        return builder;
    }

    /// <summary>Probes and scrapes make no spans (they would drown the requests' traces).</summary>
    private static bool IsTraced(HttpContext context) =>
        !context.Request.Path.StartsWithSegments("/health", StringComparison.Ordinal)
        && !context.Request.Path.StartsWithSegments("/metrics", StringComparison.Ordinal);

    private static void Configure(OtlpExporterOptions o, Uri endpoint, OtlpProtocol protocol, string signalPath)
    {
        if (protocol == OtlpProtocol.Grpc)
        {
            o.Protocol = OtlpExportProtocol.Grpc;
            o.Endpoint = endpoint;
        }
        else
        {
            // Set in code, the HTTP exporter posts to the endpoint as given: add the signal's path.
            o.Protocol = OtlpExportProtocol.HttpProtobuf;
            o.Endpoint = new Uri(endpoint.AbsoluteUri.TrimEnd('/') + "/" + signalPath);
        }
    }
}
