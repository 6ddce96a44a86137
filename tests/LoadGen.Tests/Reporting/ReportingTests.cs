using System.Text.Json;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Reporting;
using Xunit;

namespace Serving.LoadGen.Tests.Reporting;

public sealed class ReportingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("loadgen-report").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static ResultDocument Document(params SweepPointResult[] points) => new()
    {
        StartedUtc = "2026-11-27T17:00:00.0000000Z",
        Command = "loadgen run --rate 1,2",
        Machine = new MachineInfo("h", 2, "cpu", "os", "rt"),
        Config = new Dictionary<string, string> { ["seed"] = "0" },
        Points = points,
    };

    private static RunMetrics Metrics(IReadOnlyList<RequestRecord> records) => MetricsCalculator.Compute(records, 1.0, new SloTargets(TtftMs: 100));

    [Fact]
    public void JsonResultWriter_SnakeCaseKeysAndRoundTrippableNumbers()
    {
        RequestRecord[] records = [new() { Id = 0, StartSeconds = 0, EndSeconds = 0.5, ChunkSeconds = [0.05, 0.5], OutputTokens = 2, Adapter = "a" }];
        string path = Path.Combine(_dir, "r.json");

        JsonResultWriter.Write(path, Document(new SweepPointResult("rate=1", "open_loop", 1, null, 0, Metrics(records))));

        using JsonDocument json = JsonDocument.Parse(File.ReadAllText(path));
        JsonElement m = json.RootElement.GetProperty("points")[0].GetProperty("metrics");
        Assert.Equal(50, m.GetProperty("ttft_ms").GetProperty("p50").GetDouble(), 9);
        Assert.Equal(450, m.GetProperty("tpot_ms").GetProperty("mean").GetDouble(), 9);
        Assert.Equal(1.0, m.GetProperty("goodput").GetDouble());
        Assert.Equal("a", m.GetProperty("per_adapter")[0].GetProperty("adapter").GetString());
        Assert.Equal(2, json.RootElement.GetProperty("machine").GetProperty("cores").GetInt32());
        Assert.Equal(JsonValueKind.Null, json.RootElement.GetProperty("points")[0].GetProperty("concurrency").ValueKind);
    }

    [Fact]
    public void PlotWriter_EveryRequestFailed_StillWritesValidPngs()
    {
        RequestRecord[] failed = [new() { Id = 0, StartSeconds = 0, EndSeconds = 0.1, Error = ErrorKinds.Http(500) }];
        ResultDocument doc = Document(
            new SweepPointResult("rate=1", "open_loop", 1, null, 0, Metrics(failed)),
            new SweepPointResult("rate=inf", "open_loop", null, null, 0, Metrics(failed)));

        IReadOnlyList<string> paths = PlotWriter.WriteAll(_dir, doc, [failed, failed]);

        Assert.Equal(5, paths.Count);
        Assert.All(paths, p => Assert.Equal((byte)0x89, File.ReadAllBytes(p)[0]));
    }

    [Fact]
    public void MarkdownLog_OneLinePerPointWithCommandAndErrors()
    {
        RequestRecord ok = new() { Id = 0, StartSeconds = 0, EndSeconds = 0.2, ChunkSeconds = [0.05, 0.2], OutputTokens = 2 };
        RequestRecord bad = ok with { Id = 1, Error = ErrorKinds.Timeout };

        string text = MarkdownLog.Format(Document(new SweepPointResult("rate=1", "open_loop", 1, null, 0, Metrics([ok, bad]))), "out/result.json");

        string[] lines = text.TrimEnd('\n').Split('\n');
        Assert.Equal(2, lines.Length);
        Assert.Contains("`loadgen run --rate 1,2` → out/result.json", lines[0], StringComparison.Ordinal);
        Assert.Contains("1/2 ok", lines[1], StringComparison.Ordinal);
        Assert.Contains("errors timeout=1", lines[1], StringComparison.Ordinal);
        Assert.Contains("TTFT p50/p99 50.0/50.0 ms", lines[1], StringComparison.Ordinal);
    }
}
