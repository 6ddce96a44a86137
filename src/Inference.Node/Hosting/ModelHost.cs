using Microsoft.Extensions.Options;
using Serving.Inference.Chat;
using Serving.Inference.Engine;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Runtime;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Node.Hosting;

/// <summary>
/// The loaded base model and everything that serves it: tokenizer, chat template, the batch decoder and the one
/// scheduler that drives it. Built once (on first resolution, which the hosted service forces at start).
/// </summary>
public sealed class ModelHost : IDisposable
{
    private readonly DecoderModel _model;
    private readonly BatchDecoder _decoder;
    private readonly List<IDisposable> _afterDecoder = [];

    /// <summary>
    /// Loads the checkpoint named by <see cref="NodeOptions.ModelPath"/>. Scheduler observers registered in the
    /// container (<paramref name="observers"/>) see every scheduler event after the node's own metrics and logs, on the
    /// scheduler thread (tests pace the scheduler with one).
    /// </summary>
    public ModelHost(IOptions<NodeOptions> options, NodeMetrics metrics, TimeProvider time, ILogger<ModelHost> logger, IEnumerable<ISchedulerObserver> observers)
    {
        var o = options.Value;
        ModelId = o.ResolvedModelId;
        CheckpointDirectory = o.LocateCheckpoint().Directory;
        _model = DecoderModel.Load(CheckpointDirectory, new RuntimeOptions
        {
            ExecutionProvider = o.ExecutionProvider,
            DeviceId = o.DeviceId,
            Threads = o.Threads,
            MaxBatch = o.MaxBatch,
            MaxContext = o.MaxContext,
            SpinThreads = o.OrtSpin,
            AdapterSlots = o.AdaptersEnabled ? o.AdapterSlots : 0,
            AdapterMaxRank = o.AdapterMaxRank,
            AdapterKernel = o.AdapterKernel,
            PackedSteps = o.EarlyExit || o.MixedSteps,
            MaxStepTokens = o.MixedSteps ? o.MaxTokensPerStep : 0, // a mixed step's budget, however short the context
            Weights = o.Weights,
            WeightBlockSize = o.WeightBlockSize,
            WeightAccuracyLevel = o.WeightAccuracyLevel,
            QuantizeHead = o.QuantizeHead,
            Precision = o.Precision,
        });
        var c = _model.Config;
        var slots = o.MaxBatch;
        if (o.KvBudgetMiB > 0)
        {
            var bytesPerSlot = 2L * c.NumLayers * c.NumKvHeads * _model.MaxContext * c.HeadDim * (o.Precision == ComputePrecision.Float16 ? 2 : sizeof(float));
            slots = (int)Math.Clamp(o.KvBudgetMiB * 1024 * 1024 / bytesPerSlot, 1, o.MaxBatch);
        }
        _decoder = new BatchDecoder(_model, slots);
        Tokenizer = TokenizerLoader.Load(CheckpointDirectory, c.VocabSize);
        Template = ChatTemplate.FromCheckpoint(CheckpointDirectory, out var isDefault, time, string.IsNullOrWhiteSpace(o.ChatTemplate) ? null : o.ChatTemplate);
        RequestTemplates = new ChatTemplateCache(time);
        ToolCallParser = OpenAI.Tools.ToolCallParsers.Resolve(o.ToolCallParser, Template.Source);
        Observer = new SchedulerObserver(metrics, logger);
        var extra = observers.ToList();
        Scheduler = new GenerationScheduler(_decoder, Tokenizer,
            new SchedulerOptions { MaxQueue = o.MaxQueue, MaxPrefillTokensPerStep = o.MaxPrefillTokensPerStep, MixedSteps = o.MixedSteps, MaxTokensPerStep = o.MaxTokensPerStep,
                PrefixReuse = o.PrefixReuse, MinSharedPrefixTokens = o.MinSharedPrefixTokens },
            extra.Count == 0 ? Observer : new CompositeSchedulerObserver([Observer, .. extra]), time);
        metrics.Observe(Scheduler);
        NodeLog.ModelLoaded(logger, ModelId, c.Architecture.ToString(), slots, _model.MaxContext, (long)_model.LoadTime.TotalMilliseconds, isDefault);
    }

    /// <summary>How tool calls are read from this model's output (<see cref="NodeOptions.ToolCallParser"/>).</summary>
    public OpenAI.Tools.ToolCallParser ToolCallParser { get; }

    /// <summary>The base model's id (<c>model</c> in requests).</summary>
    public string ModelId { get; }

    /// <summary>The checkpoint folder loaded: <see cref="NodeOptions.ModelPath"/>, or the hub cache snapshot a model id resolved to.</summary>
    public string CheckpointDirectory { get; }

    /// <summary>The loaded model (reward heads bind to its final norm).</summary>
    public DecoderModel Model => _model;

    /// <summary>The base model's configuration (adapters are converted against it).</summary>
    public Serving.Checkpoints.ModelConfig Config => _model.Config;

    /// <summary>The checkpoint's tokenizer.</summary>
    public ITokenizer Tokenizer { get; }

    /// <summary>The checkpoint's chat template, <see cref="NodeOptions.ChatTemplate"/>'s, or the documented default.</summary>
    public ChatTemplate Template { get; }

    /// <summary>Templates sent with requests (<c>chat_template</c>), compiled once per text.</summary>
    public ChatTemplateCache RequestTemplates { get; }

    /// <summary>Scheduler events into metrics and logs.</summary>
    internal SchedulerObserver Observer { get; }

    /// <summary>Device adapter slots (0: the node serves the base only).</summary>
    public int AdapterSlots => _decoder.Adapters?.Count ?? 0;

    /// <summary>The scheduler every request goes through.</summary>
    public GenerationScheduler Scheduler { get; }

    /// <summary>Longest prompt + output per row.</summary>
    public int MaxContext => _model.MaxContext;

    /// <summary>The weights' format and bytes, for <c>/node/status</c>.</summary>
    public Status.WeightsStatus Weights => new(_model.Options.Weights.ToString().ToLowerInvariant(), _model.ProjectionWeightBytes, _model.HeadWeightBytes,
        _model.Options.Weights == Graphs.WeightFormat.Fp32 ? null : _model.Options.WeightBlockSize, _model.Options.QuantizeHead,
        _model.Options.Precision == ComputePrecision.Float16 ? "fp16" : "fp32");

    /// <summary>When the model finished loading (for <c>created</c> in /v1/models).</summary>
    public DateTimeOffset LoadedAt { get; } = DateTimeOffset.UtcNow;

    /// <summary>
    /// Disposes <paramref name="resource"/> when the node stops, after the decoder: for native state the decoder may
    /// still refer to (an Otter head's sessions: the decoder keeps a side runtime per side network it has run).
    /// Returns how many resources wait.
    /// </summary>
    public int DisposeAfterDecoder(IDisposable resource)
    {
        lock (_afterDecoder)
        {
            _afterDecoder.Add(resource);
            return _afterDecoder.Count;
        }
    }

    public void Dispose()
    {
        Scheduler.Dispose();
        _decoder.Dispose();
        lock (_afterDecoder)
        {
            foreach (var r in _afterDecoder) r.Dispose();
            _afterDecoder.Clear();
        }
        _model.Dispose();
    }
}

/// <summary>
/// Loads the model at start, runs the scheduler thread, drains it on shutdown. The drain starts at
/// <c>ApplicationStopping</c> (new requests get 503 at once, running streams get <see cref="NodeOptions.ShutdownDrain"/>
/// to finish, then end with <c>abort</c> and <c>[DONE]</c>), whichever order the host stops Kestrel and this service in.
/// </summary>
internal sealed class SchedulerHostedService : IHostedService
{
    private readonly ModelHost _host;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger<SchedulerHostedService> _logger;
    private readonly Lazy<Task> _stop;

    public SchedulerHostedService(ModelHost host, IOptions<NodeOptions> options, IHostApplicationLifetime lifetime, ILogger<SchedulerHostedService> logger)
    {
        _host = host;
        _lifetime = lifetime;
        _logger = logger;
        _stop = new Lazy<Task>(() =>
        {
            var before = host.Scheduler.Status;
            NodeLog.Draining(logger, before.RunningRequests, before.Waiting);
            return host.Scheduler.StopAsync(options.Value.ShutdownDrain);
        });
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _host.Scheduler.Start();
        _lifetime.ApplicationStopping.Register(() => _ = _stop.Value);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stop.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
        NodeLog.Stopped(_logger);
    }
}
