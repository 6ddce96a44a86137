using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Serving.Gateway.Telemetry;
using NodeMetrics = Serving.Inference.Node.Telemetry.NodeMetrics;

namespace Serving.Deploy.Tests;

/// <summary>
/// The Prometheus names of a service's instruments, read from the real metrics class (its instruments as a
/// <see cref="MeterListener"/> sees them) and named as OpenTelemetry's Prometheus exporter names them: dots become
/// underscores, the unit adds <c>_seconds</c>/<c>_bytes</c> (unless the name ends in it), counters end in <c>_total</c>.
/// </summary>
internal static class MetricNames
{
    public const string Node = NodeMetrics.MeterName;
    public const string Gateway = GatewayMetrics.MeterName;

    public static HashSet<string> Of(string meterName)
    {
        var names = new HashSet<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, _) =>
        {
            if (instrument.Meter.Name != meterName) return;
            string name = instrument.Name.Replace('.', '_');
            string unit = instrument.Unit switch { "s" => "_seconds", "By" => "_bytes", _ => "" };
            if (!name.EndsWith(unit, StringComparison.Ordinal)) name += unit; // as the exporter: a suffix already there is not repeated
            if (instrument.GetType().Name.StartsWith("Counter", StringComparison.Ordinal)) name += "_total";
            names.Add(name);
        };
        listener.Start();
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var factory = services.GetRequiredService<IMeterFactory>();
        _ = meterName == Node ? new NodeMetrics(factory) : (object)new GatewayMetrics(factory);
        if (names.Count < 3) throw new InvalidOperationException($"the instruments of {meterName} were not seen");
        return names;
    }
}
