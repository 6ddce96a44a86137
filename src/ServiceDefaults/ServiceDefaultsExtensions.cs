using Microsoft.Extensions.Hosting;
using Serving.ServiceDefaults.Logging;
using Serving.ServiceDefaults.Telemetry;

namespace Serving.ServiceDefaults;

/// <summary>The host wiring every service starts with (the shape of .NET Aspire's and eShop's ServiceDefaults).</summary>
public static class ServiceDefaultsExtensions
{
    /// <summary>
    /// Serilog from the <c>Logging</c> section (<see cref="ServiceLogging"/>) and OpenTelemetry traces and metrics from the
    /// <c>Telemetry</c> section (<see cref="ServiceTelemetryExtensions"/>). Health endpoints are mapped by
    /// <see cref="HealthEndpoints.MapHealthEndpoints"/>.
    /// </summary>
    public static IHostApplicationBuilder AddServiceDefaults(this IHostApplicationBuilder builder, ServiceTelemetry service)
    {
        builder.AddServiceLogging();
        builder.AddServiceTelemetry(service);
        return builder;
    }
}
