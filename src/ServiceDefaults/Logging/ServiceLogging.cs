using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Serilog;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Formatting.Compact;
using MelLevel = Microsoft.Extensions.Logging.LogLevel;

namespace Serving.ServiceDefaults.Logging;

/// <summary>
/// Serilog as every service's one log pipeline: levels from <c>Logging:LogLevel:*</c>, the console in
/// <c>Logging:Format</c>, sinks and enrichers registered in the container (<c>ReadFrom.Services</c>), and the current
/// activity's trace and span ids on each record (<c>@tr</c>/<c>@sp</c> in JSON).
/// </summary>
public static class ServiceLogging
{
    /// <summary>The text format's line.</summary>
    public const string TextTemplate = "[{Timestamp:HH:mm:ss} {Level:u3}] {SourceContext}: {Message:lj}{NewLine}{Exception}";

    /// <summary>Registers Serilog as the host's logger factory, configured from the <c>Logging</c> section.</summary>
    public static IHostApplicationBuilder AddServiceLogging(this IHostApplicationBuilder builder)
    {
        builder.Services.AddOptions<LoggingOptions>().BindConfiguration(LoggingOptions.SectionName).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<LoggingOptions>, LoggingOptionsValidator>());
        var configuration = builder.Configuration;
        // preserveStaticLogger: each host owns its logger (the one-process host and the tests run several hosts in a
        // process; the static Log.Logger would make them write through whichever host set it last).
        builder.Services.AddSerilog((services, lc) => Configure(lc, Read(configuration)).ReadFrom.Services(services), preserveStaticLogger: true);
        return builder;
    }

    /// <summary>The <c>Logging</c> section, checked (the logger exists before options validation runs).</summary>
    internal static LoggingOptions Read(IConfiguration configuration)
    {
        var options = configuration.GetSection(LoggingOptions.SectionName).Get<LoggingOptions>() ?? new LoggingOptions();
        var result = new LoggingOptionsValidator().Validate(null, options);
        if (result.Failed) throw new OptionsValidationException(LoggingOptions.SectionName, typeof(LoggingOptions), result.Failures);
        return options;
    }

    /// <summary>Levels, enrichment and the console sink of <paramref name="options"/>.</summary>
    internal static LoggerConfiguration Configure(LoggerConfiguration lc, LoggingOptions options)
    {
        lc.MinimumLevel.Is(LogEventLevel.Information);
        foreach (var (category, value) in options.LogLevel.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            TryParseLevel(value, out var level);
            if (string.Equals(category, "Default", StringComparison.OrdinalIgnoreCase)) lc.MinimumLevel.Is(level);
            else lc.MinimumLevel.Override(category, level);
        }
        lc.Enrich.FromLogContext();
        return lc.WriteTo.Console(Formatter(options.Format));
    }

    /// <summary>The console's formatter for <paramref name="format"/>.</summary>
    internal static ITextFormatter Formatter(LogFormat format) => format switch
    {
        LogFormat.Json => new RenderedCompactJsonFormatter(),
        _ => new Serilog.Formatting.Display.MessageTemplateTextFormatter(TextTemplate, System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>A Microsoft.Extensions.Logging level name as Serilog's level (<c>None</c>: nothing passes).</summary>
    internal static bool TryParseLevel(string? value, out LogEventLevel level)
    {
        level = LogEventLevel.Information;
        if (!Enum.TryParse<MelLevel>(value, ignoreCase: true, out var mel) || !Enum.IsDefined(mel) || int.TryParse(value, out _)) return false;
        level = mel switch
        {
            MelLevel.Trace => LogEventLevel.Verbose,
            MelLevel.Debug => LogEventLevel.Debug,
            MelLevel.Information => LogEventLevel.Information,
            MelLevel.Warning => LogEventLevel.Warning,
            MelLevel.Error => LogEventLevel.Error,
            MelLevel.Critical => LogEventLevel.Fatal,
            _ => LevelAlias.Off,
        };
        return true;
    }
}
