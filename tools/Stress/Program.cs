using System.Globalization;
using Serving.Stress.Host;
using Serving.Stress.Overload;
using Serving.Stress.Soak;

namespace Serving.Stress;

/// <summary><c>stress overload|soak [options]</c>: overload curves and memory soak of the one-process host (README.md).</summary>
internal static class Program
{
    private const string Usage = """
        usage: stress overload [--capacity R] [--multiples 2,4,8] [--seconds 40] [--prompt 16] [--output 32] [--capacity-concurrency 32]
               stress soak [--minutes 30] [--warmup 5] [--sample 10] [--rate 6] [--uploaded 6] [--churn 20] [--alpha 1]
                           [--cancel-share 0.15] [--non-stream-share 0.2] [--adapters DIR] [--growth-limit 0.05]
        common: [--host-exe PATH] [--host-arg ARG]... [--port P] [--model demo] [--seed 0] [--out DIR] [--png FILE]
        """;

    public static async Task<int> Main(string[] args)
    {
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            if (cts.IsCancellationRequested) return;
            e.Cancel = true;
            cts.Cancel();
        };
        if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
        {
            Console.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
        Dictionary<string, string> named;
        List<string> hostArgs;
        try
        {
            (named, hostArgs) = Parse(args.Skip(1).ToList());
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(Usage);
            return 2;
        }
        string Get(string key, string fallback) => named.GetValueOrDefault(key, fallback);
        double D(string key, double fallback) => double.Parse(Get(key, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        int I(string key, int fallback) => int.Parse(Get(key, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        string exe = named.TryGetValue("host-exe", out var e1) ? Path.GetFullPath(e1) : StandaloneProcess.DefaultExecutable();
        string stamp = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        Console.WriteLine($"{Environment.MachineName}, {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; load average {LoadAverage()}");
        Console.WriteLine("command: stress " + string.Join(' ', args));
        switch (args[0])
        {
            case "overload":
                return await OverloadRun.RunAsync(new OverloadOptions
                {
                    HostExecutable = exe,
                    HostArgs = hostArgs,
                    Port = I("port", 18090),
                    Model = Get("model", "demo"),
                    PromptTokens = I("prompt", 16),
                    OutputTokens = I("output", 32),
                    CapacityConcurrency = I("capacity-concurrency", 32),
                    Capacity = named.ContainsKey("capacity") ? D("capacity", 0) : null,
                    Multiples = Get("multiples", "2,4,8").Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToList(),
                    Seconds = D("seconds", 40),
                    Seed = (ulong)I("seed", 0),
                    OutDir = Get("out", Path.Combine("stress-results", "overload-" + stamp)),
                    Png = named.GetValueOrDefault("png"),
                }, Console.Out, cts.Token);
            case "soak":
                return await SoakRun.RunAsync(new SoakOptions
                {
                    HostExecutable = exe,
                    HostArgs = hostArgs,
                    Port = I("port", 18091),
                    Model = Get("model", "demo"),
                    AdapterSource = named.TryGetValue("adapters", out var a) ? Path.GetFullPath(a) : DemoAdapters(),
                    Minutes = D("minutes", 30),
                    WarmupMinutes = D("warmup", 5),
                    SampleSeconds = D("sample", 10),
                    Rate = D("rate", 6),
                    UploadedAdapters = I("uploaded", 6),
                    ChurnSeconds = D("churn", 20),
                    Alpha = D("alpha", 1),
                    CancelShare = D("cancel-share", 0.15),
                    NonStreamShare = D("non-stream-share", 0.2),
                    GrowthLimit = D("growth-limit", 0.05),
                    Seed = (ulong)I("seed", 0),
                    OutDir = Get("out", Path.Combine("stress-results", "soak-" + stamp)),
                    Png = named.GetValueOrDefault("png"),
                }, Console.Out, cts.Token);
            default:
                Console.Error.WriteLine($"unknown command '{args[0]}'");
                Console.Error.WriteLine(Usage);
                return 2;
        }
    }

    /// <summary>"--key value" pairs; "--host-arg X" takes X verbatim (it may start with "--") and may repeat.</summary>
    internal static (Dictionary<string, string> Named, List<string> HostArgs) Parse(IReadOnlyList<string> args)
    {
        var named = new Dictionary<string, string>(StringComparer.Ordinal);
        var hostArgs = new List<string>();
        for (int i = 0; i < args.Count; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Count) throw new ArgumentException($"expected --option value at '{args[i]}'");
            string key = args[i][2..];
            if (key == "host-arg") hostArgs.Add(args[++i]);
            else named[key] = args[++i];
        }
        return (named, hostArgs);
    }

    private static string DemoAdapters()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "models", "demo", "adapters");
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException("models/demo/adapters not found; pass --adapters DIR");
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";
}
