using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Serving.ServiceDefaults.Logging;
using Serving.ServiceDefaults.Memory;
using Serving.ServiceDefaults.Telemetry;

namespace Serving.ServiceDefaults;

/// <summary>The host wiring every service starts with (the shape of .NET Aspire's and eShop's ServiceDefaults).</summary>
public static class ServiceDefaultsExtensions
{
    /// <summary>
    /// Serilog from the <c>Logging</c> section (<see cref="ServiceLogging"/>) and OpenTelemetry traces and metrics from the
    /// <c>Telemetry</c> section (<see cref="ServiceTelemetryExtensions"/>). Health endpoints are mapped by
    /// <see cref="HealthEndpoints.MapHealthEndpoints"/>. glibc's allocator is set from the <c>NativeHeap</c> section now,
    /// before the host's threads allocate (<see cref="NativeHeap"/>).
    /// </summary>
    public static IHostApplicationBuilder AddServiceDefaults(this IHostApplicationBuilder builder, ServiceTelemetry service)
    {
        builder.AddNativeHeap();
        builder.AddServiceLogging();
        builder.AddServiceTelemetry(service);
        return builder;
    }

    /// <summary>Applies the <c>NativeHeap</c> section to glibc's malloc now and registers it, validated at start.</summary>
    public static IHostApplicationBuilder AddNativeHeap(this IHostApplicationBuilder builder)
    {
        NativeHeap.Configure(builder.Configuration);
        builder.Services.AddOptions<NativeHeapOptions>().BindConfiguration(NativeHeapOptions.SectionName).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<NativeHeapOptions>, NativeHeapOptionsValidator>());
        return builder;
    }
}
