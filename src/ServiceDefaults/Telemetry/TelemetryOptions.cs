using Microsoft.Extensions.Options;

namespace Serving.ServiceDefaults.Telemetry;

/// <summary>Wire protocol of the OTLP exporter.</summary>
public enum OtlpProtocol
{
    /// <summary>OTLP over gRPC (a collector's port 4317).</summary>
    Grpc,

    /// <summary>OTLP over HTTP with protobuf bodies (port 4318; <c>/v1/traces</c> and <c>/v1/metrics</c> are appended).</summary>
    HttpProtobuf,
}

/// <summary>
/// The <c>Telemetry</c> section: where traces and metrics go besides <c>/metrics</c>. Off by default: without
/// <see cref="OtlpEndpoint"/> spans are made (their ids reach the logs and the nodes) but exported nowhere.
/// </summary>
public sealed class TelemetryOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Telemetry";

    /// <summary>OTLP collector, e.g. <c>http://otel-collector:4317</c>; empty (default): no OTLP export.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>OTLP protocol (default <see cref="OtlpProtocol.Grpc"/>).</summary>
    public OtlpProtocol OtlpProtocol { get; set; } = OtlpProtocol.Grpc;

    /// <summary>The <c>service.name</c> of exported spans and metrics; default the service's own (<c>serving-gateway</c>, <c>serving-node</c>).</summary>
    public string? ServiceName { get; set; }

    /// <summary>
    /// Share of new traces recorded (0–1, default 1); a request that arrives with a <c>traceparent</c> follows its
    /// caller's sampled flag.
    /// </summary>
    public double TraceSampleRatio { get; set; } = 1.0;

    /// <summary>The endpoint as an absolute URI, null when none is set.</summary>
    internal Uri? Endpoint => string.IsNullOrWhiteSpace(OtlpEndpoint) ? null : new Uri(OtlpEndpoint, UriKind.Absolute);
}

/// <summary>Checks <see cref="TelemetryOptions"/>.</summary>
internal sealed class TelemetryOptionsValidator : IValidateOptions<TelemetryOptions>
{
    public ValidateOptionsResult Validate(string? name, TelemetryOptions options)
    {
        var errors = new List<string>();
        if (!string.IsNullOrWhiteSpace(options.OtlpEndpoint)
            && (!Uri.TryCreate(options.OtlpEndpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
            errors.Add($"Telemetry:OtlpEndpoint '{options.OtlpEndpoint}' is not an absolute http(s) URL (e.g. http://otel-collector:4317).");
        if (!(options.TraceSampleRatio is >= 0 and <= 1)) errors.Add($"Telemetry:TraceSampleRatio must be between 0 and 1 (is {options.TraceSampleRatio}).");
        if (options.ServiceName is { } s && string.IsNullOrWhiteSpace(s)) errors.Add("Telemetry:ServiceName, when set, must not be blank.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
