using Microsoft.Extensions.Options;

namespace Serving.ServiceDefaults.Logging;

/// <summary>How log records are written to the console.</summary>
public enum LogFormat
{
    /// <summary>One JSON object per line (Serilog's compact format, CLEF: <c>@t</c>, <c>@l</c>, <c>@m</c>, <c>@tr</c>, <c>@sp</c>, properties).</summary>
    Json,

    /// <summary>One human-readable line per record (time, level, category, message; exception below).</summary>
    Text,
}

/// <summary>
/// The <c>Logging</c> section, the same keys on every service (<c>Logging:LogLevel:*</c> are .NET's standard keys; they
/// feed Serilog here, which is the only log pipeline). The <c>Serilog</c> section is not read.
/// </summary>
public sealed class LoggingOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Logging";

    /// <summary>Console format: <see cref="LogFormat.Json"/> (default: one JSON object per line) or <see cref="LogFormat.Text"/>.</summary>
    public LogFormat Format { get; set; } = LogFormat.Json;

    /// <summary>
    /// Minimum level per category prefix (<c>Default</c> for the rest): <c>Trace</c>, <c>Debug</c>, <c>Information</c>,
    /// <c>Warning</c>, <c>Error</c>, <c>Critical</c> or <c>None</c>. Default: <c>Information</c>.
    /// </summary>
    public Dictionary<string, string> LogLevel { get; set; } = new(StringComparer.OrdinalIgnoreCase);
}

/// <summary>Every level in <see cref="LoggingOptions.LogLevel"/> must be a level name.</summary>
internal sealed class LoggingOptionsValidator : IValidateOptions<LoggingOptions>
{
    public ValidateOptionsResult Validate(string? name, LoggingOptions options)
    {
        var errors = options.LogLevel
            .Where(kv => !ServiceLogging.TryParseLevel(kv.Value, out _))
            .Select(kv => $"Logging:LogLevel:{kv.Key} is '{kv.Value}'; use Trace, Debug, Information, Warning, Error, Critical or None.")
            .ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
