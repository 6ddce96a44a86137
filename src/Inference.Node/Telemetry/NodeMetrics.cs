using System.Diagnostics.Metrics;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.Telemetry;

/// <summary>
/// The node's one <see cref="Meter"/> (<see cref="MeterName"/>). Names follow the rule of <c>docs/telemetry.md</c> (the table: <c>docs/deploy.md</c>)
/// (vLLM's where they mean the same); Prometheus names (OpenTelemetry exporter, at <c>/metrics</c>):
/// <c>serving_node_num_requests_waiting</c>, <c>serving_node_num_requests_running</c>,
/// <c>serving_node_rows_running</c>, <c>serving_node_kv_cache_usage_perc</c>, <c>serving_node_prompt_tokens_total</c>,
/// <c>serving_node_generation_tokens_total</c>, <c>serving_node_request_success_total{finished_reason}</c>,
/// <c>serving_node_requests_rejected_total{reason}</c>, <c>serving_node_time_to_first_token_seconds</c>,
/// <c>serving_node_time_per_output_token_seconds</c>, <c>serving_node_request_queue_time_seconds</c>,
/// <c>serving_node_e2e_request_latency_seconds</c>, <c>serving_node_request_prefill_time_seconds</c>,
/// <c>serving_node_request_decode_time_seconds</c>; adapters:
/// <c>serving_node_adapter_lookups_total{tier,result}</c>, <c>serving_node_adapter_load_time_seconds</c>,
/// <c>serving_node_adapter_activation_time_seconds</c>, <c>serving_node_adapter_requests_total{adapter}</c>,
/// <c>serving_node_adapter_prompt_tokens_total{adapter}</c>, <c>serving_node_adapter_generation_tokens_total{adapter}</c>,
/// <c>serving_node_adapters{tier}</c>, <c>serving_node_adapter_host_cache_bytes</c>; decoding methods and early exit:
/// <c>serving_node_decoding_requests_total{method}</c>, <c>serving_node_decoding_generated_tokens_total{method}</c>,
/// <c>serving_node_early_exit_layers_per_token{mode}</c>, <c>serving_node_speculative_draft_acceptance</c>.
/// </summary>
public sealed class NodeMetrics
{
    /// <summary>Name of the node's meter.</summary>
    public const string MeterName = "Serving.Inference.Node";

    private static readonly double[] LatencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80];

    private static readonly double[] LayerBuckets = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128];

    private static readonly double[] FractionBuckets = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1];

    private readonly Counter<long> _promptTokens;
    private readonly Counter<long> _generationTokens;
    private readonly Counter<long> _finished;
    private readonly Counter<long> _rejected;
    private readonly Histogram<double> _ttft;
    private readonly Histogram<double> _tpot;
    private readonly Histogram<double> _queueTime;
    private readonly Histogram<double> _e2e;
    private readonly Histogram<double> _prefillTime;
    private readonly Histogram<double> _decodeTime;
    private readonly Counter<long> _adapterLookups;
    private readonly Histogram<double> _adapterLoad;
    private readonly Histogram<double> _adapterActivation;
    private readonly Counter<long> _adapterRequests;
    private readonly Counter<long> _adapterPromptTokens;
    private readonly Counter<long> _adapterGenerationTokens;
    private readonly Counter<long> _decodingRequests;
    private readonly Counter<long> _decodingGenerated;
    private readonly Histogram<double> _layersPerToken;
    private readonly Histogram<double> _draftAcceptance;
    private GenerationScheduler? _scheduler;
    private Func<Contracts.Registry.AdapterResidency>? _residency;
    private Func<long>? _hostBytes;

    public NodeMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(MeterName);
        var advice = new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets };
        _promptTokens = meter.CreateCounter<long>("serving.node.prompt_tokens", "{token}", "Prompt tokens prefilled.");
        _generationTokens = meter.CreateCounter<long>("serving.node.generation_tokens", "{token}", "Tokens generated.");
        _finished = meter.CreateCounter<long>("serving.node.request_success", "{request}", "Requests that ended, by finish reason of the first choice.");
        _rejected = meter.CreateCounter<long>("serving.node.requests.rejected", "{request}", "Requests refused (queue full, draining).");
        _ttft = meter.CreateHistogram("serving.node.time_to_first_token", "s", "From arrival to the first sampled token.", advice: advice);
        _tpot = meter.CreateHistogram("serving.node.time_per_output_token", "s", "Between consecutive tokens of one choice.", advice: advice);
        _queueTime = meter.CreateHistogram("serving.node.request_queue_time", "s", "From arrival to admission into the batch.", advice: advice);
        _e2e = meter.CreateHistogram("serving.node.e2e_request_latency", "s", "From arrival to the end of the request.", advice: advice);
        _prefillTime = meter.CreateHistogram("serving.node.request_prefill_time", "s", "From admission to the first sampled token.", advice: advice);
        _decodeTime = meter.CreateHistogram("serving.node.request_decode_time", "s", "From the first token to the end of the request.", advice: advice);
        _adapterLookups = meter.CreateCounter<long>("serving.node.adapter.lookups", "{lookup}",
            "Adapter lookups by tier (host: decoded cache, slot: device slot) and result (hit, miss).");
        _adapterLoad = meter.CreateHistogram("serving.node.adapter.load_time", "s", "Store read, decode and conversion of an adapter (store → host).", advice: advice);
        _adapterActivation = meter.CreateHistogram("serving.node.adapter.activation_time", "s", "Copy of an adapter into a device slot (host → slot).", advice: advice);
        _adapterRequests = meter.CreateCounter<long>("serving.node.adapter.requests", "{request}",
            "Finished requests per adapter (tenant/name; the first 50 distinct adapters keep their own label, later ones count as other; merges as merge).");
        _adapterPromptTokens = meter.CreateCounter<long>("serving.node.adapter.prompt_tokens", "{token}", "Prompt tokens per adapter (labels as for requests).");
        _adapterGenerationTokens = meter.CreateCounter<long>("serving.node.adapter.generation_tokens", "{token}", "Generated tokens per adapter (labels as for requests).");
        _decodingRequests = meter.CreateCounter<long>("serving.node.decoding.requests", "{request}",
            "Finished requests by decoding method (sampling, best_of_n, args, darwin, speculative, score).");
        _decodingGenerated = meter.CreateCounter<long>("serving.node.decoding.generated_tokens", "{token}",
            "Tokens generated over every row a request ran (candidates and beams of alignment methods included), by method.");
        _layersPerToken = meter.CreateHistogram("serving.node.early_exit.layers_per_token", "{layer}",
            "Blocks run per token pass, per request that asked for early exit (mode confident or speculative).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LayerBuckets });
        _draftAcceptance = meter.CreateHistogram("serving.node.speculative.draft_acceptance", null,
            "Share of drafted tokens the full model accepted, per self-speculative request.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = FractionBuckets });
        meter.CreateObservableGauge("serving.node.adapters", ObserveTiers, "{adapter}", "Adapters per tier (device, host, loading).");
        meter.CreateObservableGauge("serving.node.adapter.host_cache_bytes", () => _hostBytes?.Invoke() ?? 0, "By", "Bytes of decoded adapters in the host cache.");
        meter.CreateObservableGauge("serving.node.num_requests_waiting", () => _scheduler?.Status.Waiting ?? 0, "{request}", "Requests waiting for a KV slot.");
        meter.CreateObservableGauge("serving.node.num_requests_running", () => _scheduler?.Status.RunningRequests ?? 0, "{request}", "Requests in the running batch.");
        meter.CreateObservableGauge("serving.node.rows.running", () => _scheduler?.Status.RunningRows ?? 0, "{row}", "Rows (choices) holding a KV slot.");
        // vLLM's kv_cache_usage_perc is a fraction (1 = full) despite its name; no unit, so the exporter adds no suffix.
        meter.CreateObservableGauge("serving.node.kv_cache_usage_perc", () => _scheduler?.Status.KvUsage ?? 0, null, "Fraction of KV slots in use (1 = all).");
        meter.CreateObservableCounter("serving.node.engine.steps", () => ObserveEngine(e => (e.DecodeSteps, e.MixedSteps, e.Prefills)), "{step}",
            "Engine steps by kind: decode (one token per row), mixed (decode rows and prompt chunks in one pass), prefill (one prompt chunk).");
        meter.CreateObservableCounter("serving.node.engine.tokens", () => ObserveEngine(e => (e.DecodeRows, e.MixedStepTokens, e.PrefillTokens)), "{token}",
            "Token rows the engine's steps carried, by step kind (decode: rows decoded; mixed and prefill: every token fed).");
        meter.CreateObservableCounter("serving.node.engine.busy_time", () => ObserveEngine(e => (e.DecodeTime.TotalSeconds, e.MixedStepTime.TotalSeconds, e.PrefillTime.TotalSeconds)), "s",
            "Wall time inside engine steps, by step kind (busy time ÷ steps: the step time; ÷ tokens: the time per token row).");
    }

    private static readonly KeyValuePair<string, object?> Decode = new("kind", "decode"), Mixed = new("kind", "mixed"), Prefill = new("kind", "prefill");

    /// <summary>One measurement per step kind from the scheduler's engine counters (none before the model is loaded).</summary>
    private IEnumerable<Measurement<T>> ObserveEngine<T>(Func<Serving.Inference.Engine.EngineCounters, (T Decode, T Mixed, T Prefill)> select) where T : struct
    {
        if (_scheduler is null) return [];
        var (decode, mixed, prefill) = select(_scheduler.Status.Engine);
        return [new(decode, Decode), new(mixed, Mixed), new(prefill, Prefill)];
    }

    internal void Observe(GenerationScheduler scheduler) => _scheduler = scheduler;

    internal void ObserveAdapters(Func<Contracts.Registry.AdapterResidency> residency, Func<long> hostBytes)
    {
        _residency = residency;
        _hostBytes = hostBytes;
    }

    private IEnumerable<Measurement<int>> ObserveTiers()
    {
        if (_residency?.Invoke() is not { } r) return [];
        return
        [
            new(r.Device.Count, new KeyValuePair<string, object?>("tier", "device")),
            new(r.Host.Count, new KeyValuePair<string, object?>("tier", "host")),
            new(r.Loading.Count, new KeyValuePair<string, object?>("tier", "loading")),
        ];
    }

    internal void AdapterLookup(string tier, bool hit) =>
        _adapterLookups.Add(1, new KeyValuePair<string, object?>("tier", tier), new KeyValuePair<string, object?>("result", hit ? "hit" : "miss"));

    internal void AdapterLoaded(TimeSpan t) => _adapterLoad.Record(t.TotalSeconds);

    internal void AdapterActivated(TimeSpan t) => _adapterActivation.Record(t.TotalSeconds);

    internal void AdapterRequestFinished(string label, int promptTokens, int completionTokens)
    {
        var tag = new KeyValuePair<string, object?>("adapter", label);
        _adapterRequests.Add(1, tag);
        _adapterPromptTokens.Add(promptTokens, tag);
        _adapterGenerationTokens.Add(completionTokens, tag);
    }

    /// <summary>A finished request's decoding method, the tokens it generated over all its rows, and its early-exit figures.</summary>
    internal void DecodingFinished(string method, int generatedTokens, string? exitMode, double? layersPerToken, double? draftAcceptance)
    {
        var tag = new KeyValuePair<string, object?>("method", method);
        _decodingRequests.Add(1, tag);
        _decodingGenerated.Add(generatedTokens, tag);
        if (exitMode is not null && layersPerToken is double layers) _layersPerToken.Record(layers, new KeyValuePair<string, object?>("mode", exitMode));
        if (draftAcceptance is double acceptance) _draftAcceptance.Record(acceptance);
    }

    internal void PromptTokens(int count) => _promptTokens.Add(count);

    internal void GeneratedToken() => _generationTokens.Add(1);

    internal void TimeToFirstToken(TimeSpan t) => _ttft.Record(t.TotalSeconds);

    internal void TimePerOutputToken(TimeSpan t) => _tpot.Record(t.TotalSeconds);

    internal void QueueTime(TimeSpan t) => _queueTime.Record(t.TotalSeconds);

    /// <summary>A finished request's phases, from the scheduler's timestamps (a phase it never reached is not recorded).</summary>
    internal void Phases(GenerationHandle request)
    {
        if (request.FinishedAt is not { } end) return;
        _e2e.Record((end - request.SubmittedAt).TotalSeconds);
        if (request.FirstTokenAt is not { } first) return;
        if (request.AdmittedAt is { } admitted) _prefillTime.Record((first - admitted).TotalSeconds);
        _decodeTime.Record((end - first).TotalSeconds);
    }

    internal void Finished(string reason) => _finished.Add(1, new KeyValuePair<string, object?>("finished_reason", reason));

    internal void Rejected(string reason) => _rejected.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
