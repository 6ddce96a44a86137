using System.Runtime.InteropServices;

namespace Serving.LoadGen.Reporting;

/// <summary>The machine a result came from (BENCHMARKS.md: every result names its machine).</summary>
public sealed record MachineInfo(string Host, int Cores, string Cpu, string Os, string Runtime)
{
    /// <summary>Describes the current machine.</summary>
    public static MachineInfo Current() =>
        new(Environment.MachineName, Environment.ProcessorCount, CpuModel(), RuntimeInformation.OSDescription, RuntimeInformation.FrameworkDescription);

    private static string CpuModel()
    {
        try
        {
            string? line = File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))
                : null;
            return line is null ? RuntimeInformation.ProcessArchitecture.ToString() : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
            return RuntimeInformation.ProcessArchitecture.ToString();
        }
    }
}
