using Serving.LoadGen.Metrics;
using Serving.Stress.Overload;
using Serving.Stress.Sampling;
using Serving.Stress.Soak;
using Xunit;

namespace Serving.Stress.Tests;

public sealed class StressToolTests
{
    [Fact]
    public void ParseStatus_ReadsRssInBytesAndThreads()
    {
        const string status = "Name:\tServing.Standal\nVmPeak:\t 9000 kB\nVmRSS:\t  421133 kB\nRssAnon:\t 100 kB\nThreads:\t28\nSigQ:\t0/1\n";
        var (rss, threads) = ProcessProbe.ParseStatus(status);
        Assert.Equal(421133L * 1024, rss);
        Assert.Equal(28, threads);
    }

    [Fact]
    public void ParseRssAnon_ReadsKilobytes_NullWithoutTheLine()
    {
        Assert.Equal(100L * 1024, ProcessProbe.ParseRssAnon("VmRSS:\t  421133 kB\nRssAnon:\t     100 kB\nRssFile:\t 7 kB\n"));
        Assert.Null(ProcessProbe.ParseRssAnon("VmRSS:\t 1 kB\n"));
    }

    [Fact]
    public async Task StoreInfo_LogFieldsParsed_AndBulkStringRead()
    {
        const string info = "# Store\r\nIndexMemorySizeBytes:1048576\r\nLog.BeginAddress:64\r\nLog.TailAddress:12617080\r\nLog.CurrentMemorySizeBytes:16777216\r\nReadCache.TailAddress:N/A\r\n";
        var f = StoreProbe.ParseInfo(info);
        Assert.Equal(64, f["Log.BeginAddress"]);
        Assert.Equal(12617080, f["Log.TailAddress"]);
        Assert.Equal(16777216, f["Log.CurrentMemorySizeBytes"]);
        Assert.False(f.ContainsKey("ReadCache.TailAddress"));
        Assert.False(f.ContainsKey("IndexMemorySizeBytes"));

        var body = System.Text.Encoding.UTF8.GetBytes(info);
        using var stream = new MemoryStream([.. System.Text.Encoding.ASCII.GetBytes($"${body.Length}\r\n"), .. body, .. "\r\n"u8.ToArray()]);
        Assert.Equal(info, await StoreProbe.ReadBulkStringAsync(stream, CancellationToken.None));
        using var error = new MemoryStream("-ERR unknown command\r\n"u8.ToArray());
        await Assert.ThrowsAsync<FormatException>(() => StoreProbe.ReadBulkStringAsync(error, CancellationToken.None));
    }

    [Fact]
    public void ParseStatus_WithoutTheLines_Throws()
    {
        Assert.Throws<FormatException>(() => ProcessProbe.ParseStatus("Name:\tx\n"));
    }

    [Fact]
    public void ParsePrometheus_SumsEverySeriesOfAMetric_SkipsCommentsAndTimestamps()
    {
        const string text = """
            # HELP dotnet_gc_last_collection_heap_size_bytes heap size
            # TYPE dotnet_gc_last_collection_heap_size_bytes gauge
            dotnet_gc_last_collection_heap_size_bytes{otel_scope_name="System.Runtime",gc_heap_generation="gen0"} 1000 1733300000000
            dotnet_gc_last_collection_heap_size_bytes{otel_scope_name="System.Runtime",gc_heap_generation="loh"} 2.5e3 1733300000000
            dotnet_gc_pause_time_seconds_total 0.125
            weird_label_value{a="x y"} 7
            """;
        var m = ProcessProbe.ParsePrometheus(text);
        Assert.Equal(3500, m[ProcessProbe.HeapSize]);
        Assert.Equal(0.125, m[ProcessProbe.PauseTime]);
        Assert.Equal(7, m["weird_label_value"]);
        Assert.Equal(3, m.Count);
    }

    private static SoakRow Row(double seconds, double rssMib, double? heapMib = null) =>
        new(new ProcessSample(seconds, (long)(rssMib * 1048576), 20, heapMib is { } h ? (long)(h * 1048576) : null, null, null, null, null), 0, 0, 0, 0, 0, 0, 0);

    [Fact]
    public void GrowthAfterWarmup_ComparesMediansOfTheFirstAndLastWindows_IgnoringWarmup()
    {
        // 0–5 min warm-up climbs from 100 to 400 MiB (ignored); after it: 500 MiB for the first 3 min, one outlier,
        // then 510, then 520 for the last 3 min of a 20-minute run: growth 4 %.
        var rows = new List<SoakRow>();
        for (int s = 0; s <= 1200; s += 10)
        {
            double rss = s < 300 ? 100 + s : s < 480 ? 500 : s > 1020 ? 520 : 510;
            if (s == 750) rss = 900; // mid-run: no median, no leverage on the slope
            rows.Add(Row(s, rss, heapMib: 200));
        }

        var growth = SoakRun.GrowthAfterWarmup(rows, TimeSpan.FromMinutes(5));

        var rssGrowth = growth.Single(g => g.Name == "RSS");
        Assert.Equal(500, rssGrowth.Baseline, 9);
        Assert.Equal(520, rssGrowth.Final, 9);
        Assert.Equal(0.04, rssGrowth.Fraction, 9);
        Assert.True(rssGrowth.SlopePerMinute > 0);
        var heap = growth.Single(g => g.Name == "managed heap");
        Assert.Equal(0, heap.Fraction, 9);
        Assert.Equal(0, heap.SlopePerMinute, 9);
    }

    [Fact]
    public void Slope_OfALine_IsItsGradient()
    {
        Assert.Equal(2.5, SoakRun.Slope([(0, 1), (1, 3.5), (2, 6), (4, 11)]), 12);
        Assert.Equal(2, SoakRun.Median([3, 1, 2]));
        Assert.Equal(2.5, SoakRun.Median([4, 1, 3, 2]));
    }

    [Fact]
    public void Summarize_TellsErrorEventsFromHalfAnsweredStreams_AndCountsRefusals()
    {
        RequestRecord ok = new() { Id = 0, StartSeconds = 0, EndSeconds = 1, ChunkSeconds = [0.1, 0.2], OutputTokens = 2 };
        RequestRecord[] records =
        [
            ok,
            ok with { Id = 1, Error = ErrorKinds.Http(429), ChunkSeconds = [], RetryAfter = "1" },
            ok with { Id = 2, Error = ErrorKinds.Http(429), ChunkSeconds = [] },
            ok with { Id = 3, Error = ErrorKinds.MalformedStream, ErrorDetail = "error in stream: {\"code\":\"upstream_disconnected\"}" },
            ok with { Id = 4, Error = ErrorKinds.MalformedStream, ErrorDetail = "stream ended without data: [DONE]" },
            ok with { Id = 5, Error = ErrorKinds.Timeout },
            ok with { Id = 6, Error = ErrorKinds.Cancelled },
        ];
        var level = OverloadRun.Summarize(4, 100, records, MetricsCalculator.Compute(records, 1.0), []);

        Assert.Equal(6, level.Sent);
        Assert.Equal(1, level.Completed);
        Assert.Equal(2, level.Refused);
        Assert.Equal(1, level.RefusedWithoutRetryAfter);
        Assert.Equal(1, level.ErrorEvents);
        Assert.Equal(1, level.HalfAnswered);
        Assert.Equal(1, level.OtherFailures);
        Assert.Equal(4.0 / 6, level.AdmittedShare, 12);
    }

    [Fact]
    public void Parse_HostArgsTakenVerbatim_OthersByName()
    {
        var (named, host) = Program.Parse(["--rate", "6", "--host-arg", "--Node:MaxQueue", "--host-arg", "32"]);
        Assert.Equal("6", named["rate"]);
        Assert.Equal(["--Node:MaxQueue", "32"], host);
        Assert.Throws<ArgumentException>(() => Program.Parse(["--rate"]));
    }
}
