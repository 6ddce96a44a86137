using System.Globalization;
using Serving.LoadGen.Client;
using Serving.LoadGen.Metrics;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen.Cli;

/// <summary>Parses the command line into <see cref="LoadGenOptions"/> (no dependency: the grammar is small).</summary>
public static class CommandLine
{
    /// <summary>Usage text shown by "help" and on errors.</summary>
    public const string Usage = """
        Serving.LoadGen — multi-adapter load generator for OpenAI-compatible servers

        usage: loadgen run      [options]   send a workload and report metrics
               loadgen generate [options] --trace-out FILE   write the trace only
               loadgen help

        target
          --base-url URL          server root (default http://127.0.0.1:8000)
          --endpoint chat|completions   /v1/chat/completions (default) or /v1/completions
          --model NAME            base model name (default base)
          --adapter-as-model      send model=ADAPTER (vLLM LoRA modules) instead of model=BASE:ADAPTER
          --api-key KEY           bearer token (default: $OPENAI_API_KEY if set)
          --http 1.1|2            HTTP version (2 over http:// is h2c prior knowledge; default 1.1)
          --no-stream             non-streaming requests (no TTFT/TPOT/ITL)
          --ignore-eos            send "ignore_eos": true (vLLM) so outputs run to max_tokens
          --timeout SECONDS       per-request timeout (default 60)
        workload
          --seed N                seed of every random draw (default 0)
          --requests N            requests per point (default 100)
          --adapters KIND         powerlaw|uniform|distinct|single|list|none (default powerlaw)
          --num-adapters N        adapters for powerlaw/uniform (default 8)
          --alpha A               power-law exponent: P(rank k) ∝ (k+1)^-A (default 1; 0 = uniform)
          --adapter-prefix P      generated names P0, P1, ... (default adapter-)
          --adapter-list a,b=3,c  names for list (optional =weight) or the name for single
          --prompt-len MIN:MAX    prompt tokens, uniform in [MIN, MAX) (default 8:512)
          --output-len MIN:MAX    max_tokens, uniform in [MIN, MAX) (default 8:512)
          --trace-in FILE         replay a JSONL trace (its arrival times unless --rate is given)
          --trace-out FILE        (generate) where to write the trace
        load
          --rate R[,R...]         open loop: Gamma arrivals at R req/s (inf = all at once); a list sweeps
          --cv C                  coefficient of variation of inter-arrival times (default 1 = Poisson)
          --concurrency C[,C...]  closed loop with C requests in flight; a list sweeps
          --max-concurrency N     cap requests in flight in open loop
          --duration SECONDS      stop sending after this long, per point (default 300)
          --warmup N              unmeasured requests sent first, one at a time (default 1; 0 = none);
                                  the run stops if they all fail (wrong URL, model or key)
        metrics and output
          --slo-ttft MS --slo-tpot MS --slo-e2e MS   goodput targets
          --top-adapters N        adapters in the per-adapter table (default 10)
          --bin SECONDS           throughput-over-time bin width (default 1)
          --out DIR               output folder (default loadgen-results/<UTC time>)
          --append-md FILE        append a result line per point, with the command, to FILE (e.g. docs/benchmarks.md)
          --no-plots              skip PNG plots
          --no-progress           no live progress bar
        """;

    /// <summary>Parses <paramref name="args"/>; errors are returned, not thrown.</summary>
    public static (LoadGenOptions? Options, IReadOnlyList<string> Errors) Parse(IReadOnlyList<string> args, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var errors = new List<string>();
        var o = new LoadGenOptions();
        var client = new ClientOptions { ApiKey = environment("OPENAI_API_KEY") };
        var workload = new WorkloadSpec();
        var adapters = new AdapterPopularitySpec();
        int i = 0;
        if (args.Count > 0 && !args[0].StartsWith('-'))
        {
            o = o with { Command = args[0] };
            i = 1;
        }

        if (o.Command is not ("run" or "generate" or "help"))
        {
            errors.Add($"Unknown command '{o.Command}' (expected run, generate or help).");
        }

        for (; i < args.Count; i++)
        {
            string name = args[i];
            string? inline = null;
            int eq = name.IndexOf('=');
            if (name.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inline = name[(eq + 1)..];
                name = name[..eq];
            }

            string Value()
            {
                if (inline is not null)
                {
                    return inline;
                }

                if (i + 1 >= args.Count)
                {
                    throw new FormatException($"{name} needs a value.");
                }

                return args[++i];
            }

            try
            {
                switch (name)
                {
                    case "--base-url":
                        string url = Value();
                        client = client with
                        {
                            BaseUrl = Uri.TryCreate(url, UriKind.Absolute, out Uri? u) && (u.Scheme == Uri.UriSchemeHttp || u.Scheme == Uri.UriSchemeHttps)
                                ? u
                                : throw new FormatException($"--base-url '{url}' is not an http(s) URL."),
                        };
                        break;
                    case "--endpoint":
                        client = client with
                        {
                            Endpoint = Value() switch
                            {
                                "chat" => ApiEndpoint.Chat,
                                "completions" => ApiEndpoint.Completions,
                                string v => throw new FormatException($"--endpoint '{v}' is not chat or completions."),
                            },
                        };
                        break;
                    case "--model": client = client with { BaseModel = NonEmpty(name, Value()) }; break;
                    case "--adapter-as-model": client = client with { AdapterAsModel = true }; break;
                    case "--api-key": client = client with { ApiKey = Value() }; break;
                    case "--http":
                        client = client with
                        {
                            HttpVersion = Value() switch
                            {
                                "1.1" or "1" => System.Net.HttpVersion.Version11,
                                "2" or "2.0" => System.Net.HttpVersion.Version20,
                                string v => throw new FormatException($"--http '{v}' is not 1.1 or 2."),
                            },
                        };
                        break;
                    case "--no-stream": client = client with { Stream = false }; break;
                    case "--ignore-eos": client = client with { IgnoreEos = true }; break;
                    case "--timeout": client = client with { Timeout = TimeSpan.FromSeconds(PositiveDouble(name, Value())) }; break;
                    case "--seed": workload = workload with { Seed = ulong.Parse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture) }; break;
                    case "--requests":
                        int count = PositiveInt(name, Value());
                        workload = workload with { Count = count };
                        o = o with { RequestLimit = count };
                        break;
                    case "--adapters":
                        adapters = adapters with
                        {
                            Kind = Value() switch
                            {
                                "powerlaw" or "power-law" or "zipf" => AdapterPopularityKind.PowerLaw,
                                "uniform" => AdapterPopularityKind.Uniform,
                                "distinct" => AdapterPopularityKind.Distinct,
                                "single" => AdapterPopularityKind.Single,
                                "list" => AdapterPopularityKind.List,
                                "none" or "base" => AdapterPopularityKind.None,
                                string v => throw new FormatException($"--adapters '{v}' is not powerlaw, uniform, distinct, single, list or none."),
                            },
                        };
                        break;
                    case "--num-adapters": adapters = adapters with { Count = PositiveInt(name, Value()) }; break;
                    case "--alpha":
                        double alpha = ParseDouble(name, Value());
                        adapters = adapters with { Alpha = alpha >= 0 ? alpha : throw new FormatException("--alpha must be >= 0.") };
                        break;
                    case "--adapter-prefix": adapters = adapters with { Prefix = Value() }; break;
                    case "--adapter-list":
                        (string[] names, double[] weights) = ParseAdapterList(Value());
                        adapters = adapters with { Names = names, Weights = weights };
                        break;
                    case "--prompt-len": workload = workload with { PromptLength = LengthRange.Parse(Value()) }; break;
                    case "--output-len": workload = workload with { OutputLength = LengthRange.Parse(Value()) }; break;
                    case "--trace-in": o = o with { TraceIn = Value() }; break;
                    case "--trace-out": o = o with { TraceOut = Value() }; break;
                    case "--rate": o = o with { Rates = List(Value(), s => s is "inf" or "+inf" ? double.PositiveInfinity : PositiveDouble(name, s)) }; break;
                    case "--cv": workload = workload with { Cv = PositiveDouble(name, Value()) }; break;
                    case "--concurrency": o = o with { Concurrencies = List(Value(), s => PositiveInt(name, s)) }; break;
                    case "--max-concurrency": o = o with { MaxConcurrency = PositiveInt(name, Value()) }; break;
                    case "--duration": o = o with { Duration = TimeSpan.FromSeconds(PositiveDouble(name, Value())) }; break;
                    case "--slo-ttft": o = o with { Slo = o.Slo with { TtftMs = PositiveDouble(name, Value()) } }; break;
                    case "--slo-tpot": o = o with { Slo = o.Slo with { TpotMs = PositiveDouble(name, Value()) } }; break;
                    case "--slo-e2e": o = o with { Slo = o.Slo with { E2eMs = PositiveDouble(name, Value()) } }; break;
                    case "--top-adapters": o = o with { TopAdapters = PositiveInt(name, Value()) }; break;
                    case "--warmup":
                        int warmup = int.Parse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture);
                        o = o with { Warmup = warmup >= 0 ? warmup : throw new FormatException("--warmup must be >= 0.") };
                        break;
                    case "--bin": o = o with { BinSeconds = PositiveDouble(name, Value()) }; break;
                    case "--out": o = o with { OutDir = Value() }; break;
                    case "--append-md": o = o with { AppendMarkdown = Value() }; break;
                    case "--no-plots": o = o with { NoPlots = true }; break;
                    case "--no-progress": o = o with { NoProgress = true }; break;
                    case "--help" or "-h": o = o with { Command = "help" }; break;
                    default: errors.Add($"Unknown option '{args[i]}'."); break;
                }
            }
            catch (Exception ex) when (ex is FormatException or OverflowException)
            {
                errors.Add(ex.Message);
            }
        }

        if (o.Rates.Count > 0 && o.Concurrencies.Count > 0)
        {
            errors.Add("Give --rate (open loop) or --concurrency (closed loop), not both; --max-concurrency caps an open loop.");
        }

        if (adapters.Kind == AdapterPopularityKind.List && adapters.Names.Count == 0)
        {
            errors.Add("--adapters list needs --adapter-list a,b,c.");
        }

        if (o.Command == "generate" && o.TraceOut is null)
        {
            errors.Add("generate needs --trace-out FILE.");
        }

        workload = workload with { Adapters = adapters, Rate = o.Rates.Count > 0 ? o.Rates[0] : double.PositiveInfinity };
        return errors.Count > 0 ? (null, errors) : (o with { Client = client, Workload = workload }, errors);
    }

    /// <summary>The command line as text, with the API key masked.</summary>
    public static string Describe(IReadOnlyList<string> args)
    {
        var parts = new List<string> { "loadgen" };
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (a == "--api-key" && i + 1 < args.Count)
            {
                parts.Add(a);
                parts.Add("***");
                i++;
                continue;
            }

            parts.Add(a.StartsWith("--api-key=", StringComparison.Ordinal) ? "--api-key=***" : Quote(a));
        }

        return string.Join(' ', parts);
    }

    private static string Quote(string s) => s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "-_.,:/=+@%".Contains(c)) ? s : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static (string[] Names, double[] Weights) ParseAdapterList(string text)
    {
        var names = new List<string>();
        var weights = new List<double>();
        bool anyWeight = false;
        foreach (string item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = item.LastIndexOf('=');
            names.Add(eq > 0 ? item[..eq] : item);
            weights.Add(eq > 0 ? PositiveDouble("--adapter-list weight", item[(eq + 1)..]) : 1.0);
            anyWeight |= eq > 0;
        }

        return (names.ToArray(), anyWeight ? weights.ToArray() : []);
    }

    private static T[] List<T>(string text, Func<string, T> parse) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse).ToArray();

    private static string NonEmpty(string name, string v) => v.Length > 0 ? v : throw new FormatException($"{name} must not be empty.");

    private static double ParseDouble(string name, string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d) ? d : throw new FormatException($"{name} '{v}' is not a number.");

    private static double PositiveDouble(string name, string v)
    {
        double d = ParseDouble(name, v);
        return d > 0 ? d : throw new FormatException($"{name} must be > 0 (got {v}).");
    }

    private static int PositiveInt(string name, string v) =>
        int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n > 0 ? n : throw new FormatException($"{name} '{v}' is not a positive integer.");
}
