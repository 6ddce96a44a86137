using System.Globalization;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Reporting;
using Serving.LoadGen.Workload;
using Spectre.Console;

namespace Serving.LoadGen.Cli;

/// <summary>The command-line application, callable in-process (tests, other tools) with any console.</summary>
public static class LoadGenApp
{
    /// <summary>Exit code for a bad command line.</summary>
    public const int UsageError = 2;

    /// <summary>Exit code when every warm-up request failed (nothing was measured).</summary>
    public const int WarmupFailed = 3;

    /// <summary>Exit code when Ctrl+C cut the run short (results are still written).</summary>
    public const int Interrupted = 130;

    /// <summary>Runs the command line; returns the process exit code.</summary>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, IAnsiConsole console, CancellationToken cancellationToken, TimeProvider? time = null)
    {
        (LoadGenOptions? options, IReadOnlyList<string> errors) = CommandLine.Parse(args);
        if (options is null)
        {
            foreach (string e in errors)
            {
                console.MarkupLine($"[red]error:[/] {Markup.Escape(e)}");
            }

            console.WriteLine("Run 'loadgen help' for the options.");
            return UsageError;
        }

        if (options.Command == "help")
        {
            console.WriteLine(CommandLine.Usage);
            return 0;
        }

        IReadOnlyList<TraceRequest> requests;
        try
        {
            requests = LoadRequests(options);
        }
        catch (Exception ex) when (ex is IOException or FormatException or ArgumentException or UnauthorizedAccessException)
        {
            console.MarkupLine($"[red]error:[/] {Markup.Escape(ex.Message)}");
            return UsageError;
        }

        if (options.Command == "generate")
        {
            IReadOnlyList<TraceRequest> trace = options.Rates.Count > 0 && options.TraceIn is not null
                ? TraceGenerator.WithArrivals(requests, options.Rates[0], options.Workload.Cv, options.Workload.Seed)
                : requests;
            TraceFile.Write(options.TraceOut!, trace);
            console.MarkupLine($"Wrote {trace.Count} requests to [green]{Markup.Escape(options.TraceOut!)}[/]");
            return 0;
        }

        return await RunPointsAsync(options, args, requests, console, time ?? TimeProvider.System, cancellationToken).ConfigureAwait(false);
    }

    private static IReadOnlyList<TraceRequest> LoadRequests(LoadGenOptions options)
    {
        if (options.TraceIn is null)
        {
            return TraceGenerator.Generate(options.Workload);
        }

        IReadOnlyList<TraceRequest> replay = TraceFile.Read(options.TraceIn, options.Workload.Seed);
        return options.RequestLimit is int limit ? replay.Take(limit).ToArray() : replay;
    }

    private static IEnumerable<(string Label, RunPlan Plan, double? Rate)> Points(LoadGenOptions o, IReadOnlyList<TraceRequest> requests)
    {
        if (o.Concurrencies.Count > 0)
        {
            foreach (int c in o.Concurrencies)
            {
                yield return ($"concurrency={c}", new RunPlan { Requests = requests, Mode = LoadMode.ClosedLoop, Concurrency = c, Duration = o.Duration }, null);
            }
        }
        else if (o.Rates.Count > 0)
        {
            foreach (double r in o.Rates)
            {
                string label = double.IsPositiveInfinity(r) ? "rate=inf" : string.Create(CultureInfo.InvariantCulture, $"rate={r:0.###}");
                var plan = new RunPlan { Requests = TraceGenerator.WithArrivals(requests, r, o.Workload.Cv, o.Workload.Seed), Concurrency = o.MaxConcurrency, Duration = o.Duration };
                yield return (label, plan, double.IsPositiveInfinity(r) ? null : r);
            }
        }
        else
        {
            // A replay keeps the trace's own arrival times; a generated trace without --rate arrives all at once.
            yield return (o.TraceIn is null ? "rate=inf" : "replay", new RunPlan { Requests = requests, Concurrency = o.MaxConcurrency, Duration = o.Duration }, null);
        }
    }

    private static async Task<int> RunPointsAsync(LoadGenOptions o, IReadOnlyList<string> args, IReadOnlyList<TraceRequest> requests, IAnsiConsole console, TimeProvider time, CancellationToken ct)
    {
        string outDir = o.OutDir ?? Path.Combine("loadgen-results", DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        Directory.CreateDirectory(outDir);
        string started = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture);
        using var client = new OpenAiLoadClient(o.Client, time);
        var runner = new LoadRunner(client, time);
        var points = Points(o, requests).ToList();
        var results = new List<SweepPointResult>();
        var recordsByPoint = new List<IReadOnlyList<RequestRecord>>();
        bool interrupted = false;

        console.MarkupLine($"Sending to [blue]{Markup.Escape(client.Url.ToString())}[/] (HTTP/{o.Client.HttpVersion}, {(o.Client.Stream ? "streaming" : "non-streaming")}), {requests.Count} requests per point, {points.Count} point(s)");

        if (o.Warmup > 0 && requests.Count > 0 && !await WarmUpAsync(o, requests, client, time, console, ct).ConfigureAwait(false))
        {
            return WarmupFailed;
        }

        async Task RunPointAsync((string Label, RunPlan Plan, double? Rate) point, Action<RequestRecord> onCompleted)
        {
            TraceFile.Write(Path.Combine(outDir, $"trace_{Slug(point.Label)}.jsonl"), point.Plan.Requests);
            RunOutcome outcome = await runner.RunAsync(point.Plan, onCompleted, ct).ConfigureAwait(false);
            RunMetrics metrics = MetricsCalculator.Compute(outcome.Records, outcome.DurationSeconds, o.Slo, o.TopAdapters, o.BinSeconds);
            int? concurrency = point.Plan.Concurrency > 0 ? point.Plan.Concurrency : null;
            results.Add(new SweepPointResult(point.Label, point.Plan.Mode == LoadMode.ClosedLoop ? "closed_loop" : "open_loop", point.Rate, concurrency, outcome.NotSent, metrics));
            recordsByPoint.Add(outcome.Records);
            interrupted |= outcome.Interrupted;
        }

        if (o.NoProgress)
        {
            foreach (var point in points.TakeWhile(_ => !ct.IsCancellationRequested))
            {
                console.WriteLine($"{point.Label}: running");
                await RunPointAsync(point, _ => { }).ConfigureAwait(false);
            }
        }
        else
        {
            await console.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
                .StartAsync(async ctx =>
                {
                    foreach (var point in points.TakeWhile(_ => !ct.IsCancellationRequested))
                    {
                        ProgressTask task = ctx.AddTask(Markup.Escape(point.Label), maxValue: Math.Max(1, point.Plan.Requests.Count));
                        int failed = 0;
                        await RunPointAsync(point, r =>
                        {
                            if (!r.Succeeded && r.Error != ErrorKinds.Cancelled)
                            {
                                int f = Interlocked.Increment(ref failed);
                                task.Description = Markup.Escape($"{point.Label} ({f} failed)");
                            }

                            task.Increment(1);
                        }).ConfigureAwait(false);
                        task.Value = task.MaxValue;
                        task.StopTask();
                    }
                }).ConfigureAwait(false);
        }

        var document = new ResultDocument
        {
            StartedUtc = started,
            Command = CommandLine.Describe(args),
            Machine = MachineInfo.Current(),
            Config = Config(o, client.Url, requests.Count),
            Interrupted = interrupted || ct.IsCancellationRequested,
            Points = results,
        };

        string jsonPath = Path.Combine(outDir, "result.json");
        JsonResultWriter.Write(jsonPath, document);
        SummaryRenderer.Render(console, document);
        using (var text = new StringWriter(CultureInfo.InvariantCulture))
        {
            IAnsiConsole plain = AnsiConsole.Create(new AnsiConsoleSettings
            {
                Ansi = AnsiSupport.No,
                ColorSystem = ColorSystemSupport.NoColors,
                Interactive = InteractionSupport.No,
                Out = new AnsiConsoleOutput(text),
            });
            plain.Profile.Width = 160;
            plain.WriteLine(document.Command);
            SummaryRenderer.Render(plain, document);
            await File.WriteAllTextAsync(Path.Combine(outDir, "summary.txt"), text.ToString(), CancellationToken.None).ConfigureAwait(false);
        }

        var written = new List<string> { jsonPath, Path.Combine(outDir, "summary.txt") };
        if (o.AppendMarkdown is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(o.AppendMarkdown))!);
            await File.AppendAllTextAsync(o.AppendMarkdown, MarkdownLog.Format(document, jsonPath), CancellationToken.None).ConfigureAwait(false);
            written.Add(o.AppendMarkdown + " (appended)");
        }

        if (!o.NoPlots && results.Count > 0)
        {
            try
            {
                written.AddRange(PlotWriter.WriteAll(outDir, document, recordsByPoint));
            }
            catch (Exception ex) when (ex is DllNotFoundException or TypeInitializationException or IOException)
            {
                console.MarkupLine($"[yellow]warning:[/] plots not written: {Markup.Escape(ex.Message)}");
            }
        }

        console.MarkupLine("Wrote:");
        foreach (string path in written)
        {
            console.MarkupLine($"  [green]{Markup.Escape(path)}[/]");
        }

        return document.Interrupted ? Interrupted : 0;
    }

    private static async Task<bool> WarmUpAsync(LoadGenOptions o, IReadOnlyList<TraceRequest> requests, OpenAiLoadClient client, TimeProvider time, IAnsiConsole console, CancellationToken ct)
    {
        RequestRecord? last = null;
        int ok = 0;
        for (int i = 0; i < o.Warmup && !ct.IsCancellationRequested; i++)
        {
            // Short outputs: the warm-up only has to exercise the path, not load the server.
            TraceRequest request = requests[i % requests.Count] with { Id = -1 - i, OutputTokens = Math.Min(16, requests[i % requests.Count].OutputTokens) };
            last = await client.SendAsync(request, time.GetTimestamp(), ct).ConfigureAwait(false);
            ok += last.Succeeded ? 1 : 0;
        }

        if (ok > 0 || last is null || last.Error == ErrorKinds.Cancelled)
        {
            console.MarkupLine($"Warm-up: {ok}/{o.Warmup} succeeded");
            return true;
        }

        console.MarkupLine($"[red]Warm-up failed[/] ({Markup.Escape(last.Error ?? "")}): {Markup.Escape(last.ErrorDetail ?? "")}");
        console.MarkupLine("Check --base-url, --endpoint, --model and --api-key, or pass --warmup 0 to measure anyway.");
        return false;
    }

    private static Dictionary<string, string> Config(LoadGenOptions o, Uri url, int requests)
    {
        string F(double v) => v.ToString(CultureInfo.InvariantCulture);
        WorkloadSpec w = o.Workload;
        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["url"] = url.ToString(),
            ["endpoint"] = o.Client.Endpoint.ToString().ToLowerInvariant(),
            ["http_version"] = o.Client.HttpVersion.ToString(),
            ["stream"] = o.Client.Stream ? "true" : "false",
            ["model"] = o.Client.BaseModel,
            ["model_format"] = o.Client.AdapterAsModel ? "adapter" : "base:adapter",
            ["timeout_s"] = F(o.Client.Timeout.TotalSeconds),
            ["ignore_eos"] = o.Client.IgnoreEos ? "true" : "false",
            ["seed"] = w.Seed.ToString(CultureInfo.InvariantCulture),
            ["requests"] = requests.ToString(CultureInfo.InvariantCulture),
            ["trace_in"] = o.TraceIn ?? "",
            ["adapters"] = w.Adapters.Kind.ToString().ToLowerInvariant(),
            ["num_adapters"] = w.Adapters.Count.ToString(CultureInfo.InvariantCulture),
            ["alpha"] = F(w.Adapters.Alpha),
            ["prompt_len"] = w.PromptLength.ToString(),
            ["output_len"] = w.OutputLength.ToString(),
            ["cv"] = F(w.Cv),
            ["duration_s"] = F(o.Duration.TotalSeconds),
            ["warmup"] = o.Warmup.ToString(CultureInfo.InvariantCulture),
            ["max_concurrency"] = o.MaxConcurrency.ToString(CultureInfo.InvariantCulture),
            ["slo_ttft_ms"] = o.Slo.TtftMs is double t ? F(t) : "",
            ["slo_tpot_ms"] = o.Slo.TpotMs is double p ? F(p) : "",
            ["slo_e2e_ms"] = o.Slo.E2eMs is double e ? F(e) : "",
        };
    }

    private static string Slug(string label) =>
        new(label.Select(c => char.IsAsciiLetterOrDigit(c) || c == '.' || c == '-' ? c : '_').ToArray());
}
