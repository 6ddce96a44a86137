using Microsoft.Extensions.Options;

namespace Serving.Gateway.Resilience;

/// <summary>Retries and stream guarding; section <c>Gateway:Resilience</c>.</summary>
public sealed class ResilienceOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Gateway:Resilience";

    /// <summary>Further nodes tried when a node refused the connection (the request never reached it); 0–10, default 2.</summary>
    public int MaxConnectRetries { get; set; } = 2;

    /// <summary>Longest silence inside a streamed response before the client gets an error event and the stream ends; 100 ms–1 h, default 60 s.</summary>
    public TimeSpan StreamIdleTimeout { get; set; } = TimeSpan.FromSeconds(60);
}

/// <summary>Checks <see cref="ResilienceOptions"/> at start.</summary>
internal sealed class ResilienceOptionsValidator : IValidateOptions<ResilienceOptions>
{
    public ValidateOptionsResult Validate(string? name, ResilienceOptions o)
    {
        var errors = new List<string>();
        if (o.MaxConnectRetries is < 0 or > 10) errors.Add("Gateway:Resilience:MaxConnectRetries must be in [0, 10].");
        if (o.StreamIdleTimeout < TimeSpan.FromMilliseconds(100) || o.StreamIdleTimeout > TimeSpan.FromHours(1))
            errors.Add("Gateway:Resilience:StreamIdleTimeout must be between 100 ms and 1 h.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
