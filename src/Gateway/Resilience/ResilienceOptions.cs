using System.ComponentModel.DataAnnotations;

namespace Serving.Gateway.Resilience;

/// <summary>Retries and stream guarding; section <c>Gateway:Resilience</c>.</summary>
public sealed class ResilienceOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:Resilience";

    /// <summary>Further nodes tried when a node refused the connection (the request never reached it).</summary>
    [Range(0, 10)] public int MaxConnectRetries { get; set; } = 2;

    /// <summary>Longest silence inside a streamed response before the client gets an error event and the stream ends.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")] public TimeSpan StreamIdleTimeout { get; set; } = TimeSpan.FromSeconds(60);
}
