using System.Globalization;
using System.Text.Json;
using Serving.LoadGen.Cli;
using Serving.LoadGen.Tests.Support;
using Spectre.Console;
using Xunit;

namespace Serving.LoadGen.Tests.Cli;

/// <summary>The whole command line, in-process, against the scripted Kestrel server.</summary>
public sealed class LoadGenAppTests : IDisposable
{
    private readonly List<string> _dirs = [];

    public void Dispose()
    {
        foreach (string dir in _dirs)
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private string TempDir()
    {
        string dir = Directory.CreateTempSubdirectory("loadgen-cli").FullName;
        _dirs.Add(dir);
        return dir;
    }

    private static (IAnsiConsole Console, StringWriter Text) Console()
    {
        var text = new StringWriter(CultureInfo.InvariantCulture);
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(text),
        });
        console.Profile.Width = 200;
        return (console, text);
    }

    private static byte[] PngSignature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    [Fact]
    public async Task Run_RateSweep_WritesSummaryJsonTracesAndPngPlots()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 20, ItlMs = 10, Tokens = null });
        string dir = TempDir();
        (IAnsiConsole console, StringWriter text) = Console();
        string[] args =
        [
            "run", "--base-url", server.BaseUrl.ToString(), "--requests", "12", "--rate", "20,40,inf", "--cv", "1",
            "--adapters", "powerlaw", "--num-adapters", "4", "--alpha", "1", "--prompt-len", "4:8", "--output-len", "3:6",
            "--seed", "7", "--slo-ttft", "30000", "--slo-tpot", "20000", "--timeout", "10", "--duration", "30",
            "--api-key", "sekrit", "--out", dir,
        ];

        int exit = await LoadGenApp.RunAsync(args, console, CancellationToken.None);

        string output = text.ToString();
        Assert.True(exit == 0, output);
        Assert.Contains("TTFT", output, StringComparison.Ordinal);
        Assert.Contains("Sweep", output, StringComparison.Ordinal);
        Assert.Contains("top 4 adapters", output, StringComparison.Ordinal);

        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "result.json")));
        JsonElement root = json.RootElement;
        Assert.DoesNotContain("sekrit", root.GetProperty("command").GetString(), StringComparison.Ordinal);
        Assert.Equal(3, root.GetProperty("points").GetArrayLength());
        Assert.Equal(20, root.GetProperty("points")[0].GetProperty("rate").GetDouble());
        foreach (JsonElement point in root.GetProperty("points").EnumerateArray())
        {
            JsonElement m = point.GetProperty("metrics");
            Assert.Equal(12, m.GetProperty("completed").GetInt32());
            Assert.Equal(0, m.GetProperty("failed").GetInt32());
            // Script: TTFT 20 ms. Client and server start their clocks at different points of the exchange and timer
            // granularity shifts both, so the client can read a little under 20 ms (18.4 ms was seen on a loaded CI
            // machine): the bound only rules out a TTFT that ignores the scripted delay.
            Assert.InRange(m.GetProperty("ttft_ms").GetProperty("p50").GetDouble(), 12, 2000);
            // Script: TTFT 20 ms, ITL 10 ms, at least 3 tokens → E2E >= 40 ms. (TPOT alone can read below 10 ms
            // when a late first chunk arrives together with the next ones, e.g. while the process JITs.)
            Assert.InRange(m.GetProperty("e2e_ms").GetProperty("min").GetDouble(), 38, 5000);
            Assert.InRange(m.GetProperty("tpot_ms").GetProperty("mean").GetDouble(), 0.001, 2000);
            Assert.True(m.GetProperty("output_token_throughput").GetDouble() > 0);
            // SLOs far above anything the script produces: every request is good.
            Assert.Equal(m.GetProperty("request_throughput").GetDouble(), m.GetProperty("goodput").GetDouble(), 9);
            Assert.Equal(1.0, m.GetProperty("slo_attainment").GetDouble());
            Assert.InRange(m.GetProperty("total_output_tokens").GetInt64(), 12 * 3, 12 * 5);
            Assert.True(m.GetProperty("per_adapter").GetArrayLength() is > 0 and <= 4);
        }

        Assert.Equal(12, File.ReadAllLines(Path.Combine(dir, "trace_rate_20.jsonl")).Length);
        Assert.Contains("TTFT", File.ReadAllText(Path.Combine(dir, "summary.txt")), StringComparison.Ordinal);
        foreach (string png in new[] { "latency_cdf_rate_20.png", "throughput_rate_20.png", "latency_cdf_rate_40.png", "latency_cdf_rate_inf.png", "throughput_rate_inf.png", "sweep_latency_vs_load.png" })
        {
            byte[] bytes = File.ReadAllBytes(Path.Combine(dir, png));
            Assert.True(bytes.Length > 5000, $"{png} is only {bytes.Length} bytes");
            Assert.Equal(PngSignature, bytes[..8]);
        }
    }

    [Fact]
    public async Task Run_ConcurrencySweepReplayingTrace_NoProgress()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { TtftMs = 5, ItlMs = 5, Tokens = null });
        string dir = TempDir();
        string trace = Path.Combine(dir, "in.jsonl");
        File.WriteAllText(trace, string.Join('\n', Enumerable.Range(0, 6).Select(i => $"{{\"output_tokens\": {i + 2}, \"prompt_tokens\": 5, \"adapter\": \"a{i % 2}\"}}")));
        (IAnsiConsole console, StringWriter text) = Console();

        int exit = await LoadGenApp.RunAsync(
            ["run", "--base-url", server.BaseUrl.ToString(), "--trace-in", trace, "--concurrency", "1,3", "--no-progress", "--no-plots", "--out", dir, "--endpoint", "completions", "--http", "1.1", "--append-md", Path.Combine(dir, "bench.md")],
            console,
            CancellationToken.None);

        Assert.True(exit == 0, text.ToString());
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "result.json")));
        JsonElement[] points = json.RootElement.GetProperty("points").EnumerateArray().ToArray();
        Assert.Equal(["concurrency=1", "concurrency=3"], points.Select(p => p.GetProperty("label").GetString()));
        Assert.All(points, p => Assert.Equal("closed_loop", p.GetProperty("mode").GetString()));
        Assert.All(points, p => Assert.Equal(2 + 3 + 4 + 5 + 6 + 7, p.GetProperty("metrics").GetProperty("total_output_tokens").GetInt64()));
        Assert.Empty(Directory.GetFiles(dir, "*.png"));
        string[] md = File.ReadAllLines(Path.Combine(dir, "bench.md"));
        Assert.Equal(3, md.Length);
        Assert.Contains("--concurrency 1,3", md[0], StringComparison.Ordinal);
        Assert.StartsWith("  - concurrency=1: 6/6 ok", md[1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_CancelledMidway_StillWritesResultsAndReturns130()
    {
        // Cancelled when the fourth request arrives: after the one warm-up request, two run at concurrency 2, and a third
        // measured one is sent only once one of them completed — so the run is cut midway whatever the machine's speed
        // (a 1.5 s timer found nothing completed on a loaded machine).
        using var cts = new CancellationTokenSource();
        var script = new Script { TtftMs = 100, ItlMs = 100, Tokens = 5 };
        int received = 0;
        await using var server = await ScriptedOpenAiServer.StartAsync(body =>
        {
            if (Interlocked.Increment(ref received) == 4) _ = Task.Run(cts.Cancel);
            return script;
        });
        string dir = TempDir();
        (IAnsiConsole console, StringWriter text) = Console();

        int exit = await LoadGenApp.RunAsync(["run", "--base-url", server.BaseUrl.ToString(), "--requests", "40", "--concurrency", "2", "--out", dir], console, cts.Token);

        Assert.Equal(LoadGenApp.Interrupted, exit);
        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "result.json")));
        Assert.True(json.RootElement.GetProperty("interrupted").GetBoolean());
        JsonElement m = json.RootElement.GetProperty("points")[0].GetProperty("metrics");
        Assert.InRange(m.GetProperty("completed").GetInt32(), 1, 39);
        Assert.Contains("Interrupted", text.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WarmupFails_StopsWithReasonAndWritesNothing()
    {
        await using var server = await ScriptedOpenAiServer.StartAsync(new Script { Status = 401 });
        string dir = TempDir();
        (IAnsiConsole console, StringWriter text) = Console();

        int exit = await LoadGenApp.RunAsync(["run", "--base-url", server.BaseUrl.ToString(), "--requests", "5", "--out", dir], console, CancellationToken.None);

        Assert.Equal(LoadGenApp.WarmupFailed, exit);
        Assert.Contains("http_401", text.ToString(), StringComparison.Ordinal);
        Assert.Single(server.Observations);
        Assert.False(File.Exists(Path.Combine(dir, "result.json")));
    }

    [Fact]
    public async Task Generate_SameSeedTwice_ByteIdenticalFiles()
    {
        string dir = TempDir();
        string[] Args(string file, string seed) => ["generate", "--requests", "200", "--rate", "3", "--cv", "4", "--adapters", "uniform", "--num-adapters", "50", "--seed", seed, "--trace-out", Path.Combine(dir, file)];

        Assert.Equal(0, await LoadGenApp.RunAsync(Args("a.jsonl", "5"), Console().Console, CancellationToken.None));
        Assert.Equal(0, await LoadGenApp.RunAsync(Args("b.jsonl", "5"), Console().Console, CancellationToken.None));
        Assert.Equal(0, await LoadGenApp.RunAsync(Args("c.jsonl", "6"), Console().Console, CancellationToken.None));

        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "a.jsonl")), File.ReadAllBytes(Path.Combine(dir, "b.jsonl")));
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(dir, "a.jsonl")), File.ReadAllBytes(Path.Combine(dir, "c.jsonl")));
        Assert.Equal(200, File.ReadAllLines(Path.Combine(dir, "a.jsonl")).Length);
    }

    [Theory]
    [InlineData("--rate 1 --concurrency 2", "not both")]
    [InlineData("--bogus", "Unknown option")]
    [InlineData("--adapters list", "--adapter-list")]
    [InlineData("--prompt-len 9:3", "MIN < MAX")]
    [InlineData("--http 3", "--http")]
    public async Task Run_BadCommandLine_UsageErrorWithReason(string args, string expected)
    {
        (IAnsiConsole console, StringWriter text) = Console();

        int exit = await LoadGenApp.RunAsync(["run", .. args.Split(' ')], console, CancellationToken.None);

        Assert.Equal(LoadGenApp.UsageError, exit);
        Assert.Contains(expected, text.ToString(), StringComparison.Ordinal);
    }
}
