using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints;
using Serving.Checkpoints.Hub;
using Serving.Inference.Decoding;
using Serving.Inference.Graphs;
using Serving.Inference.Runtime;

namespace Serving.Inference.Node.Hosting;

/// <summary>Node settings, bound from the <c>Node</c> configuration section (e.g. <c>Node__ModelPath</c>).</summary>
public sealed class NodeOptions
{
    /// <summary>Configuration section name.</summary>
    public const string Section = "Node";

    /// <summary>Time the host gives the node to stop beyond <see cref="ShutdownDrain"/> (leaving the registry, disposing).</summary>
    public static readonly TimeSpan ShutdownMargin = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files; symbolic links followed), or a model id
    /// <c>org/name[@revision]</c> read from the local hub cache (<see cref="HubCache"/>) as <c>transformers</c> does
    /// offline, never downloaded. A path that exists always wins: only a value that is no existing path and is shaped
    /// <c>org/name</c> is an id. Required.
    /// </summary>
    public string ModelPath { get; set; } = string.Empty;

    /// <summary>
    /// The Hugging Face hub cache that a model id in <see cref="ModelPath"/> is resolved in; default: <c>HF_HUB_CACHE</c>,
    /// else <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>.
    /// </summary>
    public string? HubCache { get; set; }

    /// <summary>
    /// A chat template file (Jinja) used instead of the checkpoint's own (<c>chat_template.jinja</c> beside it, else
    /// <c>chat_template</c> of <c>tokenizer_config.json</c>), as vLLM's <c>--chat-template</c>. Checked and compiled at
    /// start: a construct the engine cannot render stops the node naming it and its line.
    /// </summary>
    public string? ChatTemplate { get; set; }

    /// <summary>The <c>model</c> name clients use; defaults to the model id (<c>org/name</c>) or the checkpoint folder's name.</summary>
    public string? ModelId { get; set; }

    /// <summary>ONNX Runtime execution provider: <c>Cpu</c> or <c>Cuda</c>.</summary>
    public ExecutionProviderKind ExecutionProvider { get; set; } = ExecutionProviderKind.Cpu;

    /// <summary>CUDA device ordinal.</summary>
    public int DeviceId { get; set; }

    /// <summary>ONNX Runtime intra-op threads (0 = processor count).</summary>
    public int Threads { get; set; }

    /// <summary>Most rows decoding together (KV slots); one row per choice.</summary>
    public int MaxBatch { get; set; } = 16;

    /// <summary>Longest prompt + output per row (capped by the model's positions).</summary>
    public int MaxContext { get; set; } = 1024;

    /// <summary>KV cache budget in MiB; when set, the slot count is lowered to fit it (0 = only <see cref="MaxBatch"/> counts).</summary>
    public long KvBudgetMiB { get; set; }

    /// <summary>Requests waiting for a slot before new ones get 429.</summary>
    public int MaxQueue { get; set; } = 64;

    /// <summary>Prompt tokens prefilled between two decode steps (with <see cref="MixedSteps"/>: the prompt share of a step).</summary>
    public int MaxPrefillTokensPerStep { get; set; } = 512;

    /// <summary>
    /// Mixed steps (chunked prefill): each engine step carries every running stream's next token and chunks of waiting
    /// prompts together, so new prompts do not stall running streams (CPU provider; loads the packed block variants).
    /// </summary>
    public bool MixedSteps { get; set; }

    /// <summary>
    /// With <see cref="MixedSteps"/>: tokens per step, decode tokens first, prompt chunks fill the rest
    /// (docs/scheduling.md). The step buffers are sized for it, independently of <see cref="MaxContext"/>.
    /// </summary>
    public int MaxTokensPerStep { get; set; } = 128;

    /// <summary>
    /// Prefix reuse: a prompt starting with tokens a running request on the same adapter has cached (a shared system
    /// prompt) copies their K/V instead of computing them (docs/scheduling.md).
    /// </summary>
    public bool PrefixReuse { get; set; }

    /// <summary>With <see cref="PrefixReuse"/>: the shortest shared prefix worth a copy, in tokens.</summary>
    public int MinSharedPrefixTokens { get; set; } = 16;

    /// <summary>Per-request deadline from arrival (queue wait included); default 10 min.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>On shutdown, how long running streams may finish before they are ended with <c>abort</c>; default 30 s.</summary>
    public TimeSpan ShutdownDrain { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary><c>Retry-After</c> on 429/503 (sent in whole seconds, at least 1); default 1 s.</summary>
    public TimeSpan RetryAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Let ONNX Runtime's idle pool threads spin (process-wide). Off by default in the node: spinning takes CPU from
    /// Kestrel and the scheduler on small machines (measured in docs/benchmarks.md, node section).
    /// </summary>
    public bool OrtSpin { get; set; }

    /// <summary>
    /// Device adapter slots S: how many distinct adapters one step can mix. Used only when the node has an adapter
    /// source (<see cref="Redis"/> or <see cref="AdapterDirectory"/>); without one the node serves the base only.
    /// </summary>
    public int AdapterSlots { get; set; } = 8;

    /// <summary>Largest LoRA rank per module a slot holds (a merge's rank is the sum of its parts').</summary>
    public int AdapterMaxRank { get; set; } = 64;

    /// <summary>
    /// How adapter updates are computed: <c>Auto</c> (the segmented custom operator on CPU, stock-ONNX batched graphs on
    /// CUDA), <c>Segmented</c> (CPU only) or <c>BatchedMatMul</c>.
    /// </summary>
    public AdapterKernelKind AdapterKernel { get; set; } = AdapterKernelKind.Auto;

    /// <summary>
    /// How the projection weights are stored: <c>Fp32</c>, or <c>Int8</c> / <c>Int4</c> quantised at load (block-wise,
    /// round to nearest, run by ONNX Runtime's <c>MatMulNBits</c>); adapters stay fp32 on top. See docs/engine.md.
    /// </summary>
    public WeightFormat Weights { get; set; } = WeightFormat.Fp32;

    /// <summary>Values per quantisation block (a power of two, 16 to 256).</summary>
    public int WeightBlockSize { get; set; } = 32;

    /// <summary><c>MatMulNBits</c> accuracy level: 0 = fp32 compute on the dequantised weights, 4 = int8 activations (faster).</summary>
    public int WeightAccuracyLevel { get; set; } = 4;

    /// <summary>Also quantise the LM head (with <see cref="Weights"/> Int8/Int4).</summary>
    public bool QuantizeHead { get; set; }

    /// <summary>
    /// The blocks' arithmetic: <c>Float32</c>, or <c>Float16</c> (fp16 weights, activations and K/V cache inside the
    /// blocks: what the CUDA provider's attention needs, half the cache bytes). Not with early exit, mixed steps, the
    /// Segmented kernel or quantised weights. On the CPU provider it runs, slower than fp32 (a test path).
    /// </summary>
    public ComputePrecision Precision { get; set; } = ComputePrecision.Float32;

    /// <summary>Byte budget of the host cache of decoded adapters (LRU; pinned adapters are never evicted).</summary>
    public long AdapterHostCacheMiB { get; set; } = 1024;

    /// <summary>
    /// Redis (or Garnet) connection string of the adapter store (StackExchange.Redis syntax); the node reads adapters
    /// and their publish/delete events from it. The same connection serves the node registry's heartbeats.
    /// </summary>
    public string? Redis { get; set; }

    /// <summary>Key prefix of the adapter store (the store's <c>AdapterStore:KeyPrefix</c>); default <see cref="AdapterStoreOptions.DefaultKeyPrefix"/>.</summary>
    public string AdapterKeyPrefix { get; set; } = AdapterStoreOptions.DefaultKeyPrefix;

    /// <summary>
    /// The gateway's credential (<c>Gateway:Routing:NodeKey</c>, from a Secret): when set, the node serves only requests
    /// carrying it in <c>X-Serving-Gateway-Key</c> (health and <c>/metrics</c> stay open), 401 otherwise; at least 16
    /// characters. Empty (the default): every request is served, as on a loopback-only node.
    /// </summary>
    public string? GatewayKey { get; set; }

    /// <summary>Key layout of the adapter store (the store's <c>AdapterStore:KeyLayout</c>); default per adapter.</summary>
    public KeyLayout AdapterKeyLayout { get; set; } = KeyLayout.PerAdapter;

    /// <summary>
    /// Without <see cref="Redis"/>: a folder of PEFT adapter folders (<c>&lt;dir&gt;/&lt;name&gt;/adapter_config.json</c> +
    /// <c>adapter_model.safetensors</c>), validated and decoded by the store's reader at start and served as tenant <c>public</c>.
    /// </summary>
    public string? AdapterDirectory { get; set; }

    /// <summary>
    /// Build the model for early exit (packed steps: the C# whole-cache attention, K/V-only units): requests may then ask
    /// for <c>early_exit</c>. Every decode step of the node then runs the packed blocks (the same for every request, so
    /// batch composition never changes an answer). CPU only.
    /// </summary>
    public bool EarlyExit { get; set; }

    /// <summary>The exit probe folder (default: <c>&lt;ModelPath&gt;/exit-probe</c> when it exists).</summary>
    public string? ExitProbe { get; set; }

    /// <summary>Early exit for requests that do not ask: <c>off</c> (default), <c>confident</c> or <c>speculative</c>.</summary>
    public string DefaultEarlyExit { get; set; } = "off";

    /// <summary>Per criterion (<c>probe</c>, <c>cosine</c>, <c>update_view</c>, <c>margin</c>), the threshold requests get by default (e.g. from bench/EarlyExitBench's calibration).</summary>
    public Dictionary<string, double> ExitThresholds { get; set; } = [];

    /// <summary>Self-speculative drafts run this many blocks (default: half the model's).</summary>
    public int? DraftLayers { get; set; }

    /// <summary>Self-speculative tokens drafted per verification.</summary>
    public int DraftTokens { get; set; } = SpeculativeSpec.DefaultDraftTokens;

    /// <summary>
    /// Reward heads served as <c>public/&lt;name&gt;</c>: name → folder (<c>config.json</c> + <c>head.safetensors</c>, or
    /// the Otter form), validated against the model at start (e.g. <c>--Node:RewardHeads:positive=models/demo/reward-head</c>).
    /// With <see cref="Redis"/> the store's heads are served too (a folder head of the same name wins).
    /// </summary>
    public Dictionary<string, string> RewardHeads { get; set; } = [];

    /// <summary>
    /// The head (<c>public/&lt;name&gt;</c>) a request gets when it asks for rewards or alignment without naming one; null:
    /// none. Without <see cref="Redis"/> it must be one of <see cref="RewardHeads"/>; with it, it may also be a store head
    /// (resolved on use, so it may be uploaded after the node starts).
    /// </summary>
    public string? DefaultRewardHead { get; set; }

    /// <summary>Reward heads from the store kept loaded (least recently used out first); at least 1, default 32.</summary>
    public int RewardHeadCacheSize { get; set; } = 32;

    /// <summary>
    /// How tool calls are read from this model's output: <c>hermes</c> (<c>&lt;tool_call&gt;</c>, Qwen2.5/Qwen3),
    /// <c>llama3_json</c>, <c>mistral</c> (<c>[TOOL_CALLS]</c>), or <c>auto</c> (default: the chat template's own markers
    /// decide, Hermes when it has none).
    /// </summary>
    public string ToolCallParser { get; set; } = OpenAI.Tools.ToolCallParsers.Auto;

    /// <summary>True when adapters can be served (a store or a directory is configured).</summary>
    public bool AdaptersEnabled => !string.IsNullOrWhiteSpace(Redis) || !string.IsNullOrWhiteSpace(AdapterDirectory);

    /// <summary>Address to listen on (ignored when <c>urls</c>/<c>ASPNETCORE_URLS</c> is set).</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>Port to listen on (0 picks a free one; ignored when <c>urls</c> is set).</summary>
    public int Port { get; set; } = 8000;

    /// <summary>The model id served: <see cref="ModelId"/>, else the Hugging Face id's <c>org/name</c>, else the folder name.</summary>
    public string ResolvedModelId =>
        !string.IsNullOrWhiteSpace(ModelId) ? ModelId!
        : CheckpointLocator.IsHubId(ModelPath, out var id) ? id.Repo
        : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(ModelPath)));

    /// <summary>
    /// The checkpoint folder <see cref="ModelPath"/> names (for an id, its snapshot in the hub cache); throws
    /// <see cref="HubModelNotFoundException"/> saying where it looked.
    /// </summary>
    public CheckpointLocation LocateCheckpoint() =>
        CheckpointLocator.Locate(ModelPath, string.IsNullOrWhiteSpace(HubCache) ? null : new HubCache(HubCache, "Node:HubCache"));
}

/// <summary>Checks <see cref="NodeOptions"/> at start (<c>ValidateOnStart</c>); also refuses the keys renamed when durations became TimeSpans.</summary>
internal sealed class NodeOptionsValidator(IConfiguration configuration) : IValidateOptions<NodeOptions>
{
    private static readonly (string Old, string New, string Example)[] Renamed =
    [
        ("RequestTimeoutSeconds", nameof(NodeOptions.RequestTimeout), "00:10:00"),
        ("ShutdownDrainSeconds", nameof(NodeOptions.ShutdownDrain), "00:00:30"),
        ("RetryAfterSeconds", nameof(NodeOptions.RetryAfter), "00:00:01"),
    ];

    public ValidateOptionsResult Validate(string? name, NodeOptions o)
    {
        var errors = new List<string>();
        if (!string.IsNullOrEmpty(o.GatewayKey) && o.GatewayKey.Length < Serving.Contracts.Security.GatewayCredential.MinLength)
            errors.Add($"Node:GatewayKey must be at least {Serving.Contracts.Security.GatewayCredential.MinLength} characters.");
        foreach (var (old, renamed, example) in Renamed)
        {
            if (configuration[$"{NodeOptions.Section}:{old}"] is not null)
                errors.Add($"Node:{old} was renamed Node:{renamed}, a duration (e.g. {example}).");
        }
        if (!string.IsNullOrWhiteSpace(o.HubCache) && !Directory.Exists(o.HubCache)) errors.Add($"Node:HubCache '{o.HubCache}' does not exist.");
        if (o.ChatTemplate is not null && !File.Exists(o.ChatTemplate)) errors.Add($"Node:ChatTemplate '{o.ChatTemplate}' is not a file (give a Jinja chat template file, or leave it unset to use the checkpoint's template).");
        if (string.IsNullOrWhiteSpace(o.ModelPath)) errors.Add("Node:ModelPath is required (a Hugging Face checkpoint folder, or a model id org/name in the local hub cache).");
        else CheckModelPath(o, errors);
        if (o.ModelId is not null && (o.ModelId.Length == 0 || o.ModelId.Contains(':'))) errors.Add("Node:ModelId must be non-empty and must not contain ':' (it separates adapters).");
        if (o.MaxBatch is < 1 or > 4096) errors.Add("Node:MaxBatch must be in [1, 4096].");
        if (o.MaxContext < 2) errors.Add("Node:MaxContext must be at least 2.");
        if (o.KvBudgetMiB < 0) errors.Add("Node:KvBudgetMiB must be non-negative.");
        if (o.MaxQueue < 1) errors.Add("Node:MaxQueue must be at least 1.");
        if (o.MaxPrefillTokensPerStep < 1) errors.Add("Node:MaxPrefillTokensPerStep must be at least 1.");
        if (o.RequestTimeout <= TimeSpan.Zero) errors.Add("Node:RequestTimeout must be positive.");
        if (o.ShutdownDrain < TimeSpan.Zero) errors.Add("Node:ShutdownDrain must not be negative.");
        if (o.RetryAfter < TimeSpan.FromSeconds(1)) errors.Add("Node:RetryAfter must be at least 1 s.");
        if (o.Threads < 0) errors.Add("Node:Threads must be non-negative.");
        if (o.AdapterSlots is < 0 or > 256) errors.Add("Node:AdapterSlots must be in [0, 256].");
        if (o.AdapterMaxRank is < 1 or > 1024) errors.Add("Node:AdapterMaxRank must be in [1, 1024].");
        if (o.AdapterHostCacheMiB < 1) errors.Add("Node:AdapterHostCacheMiB must be at least 1.");
        if (!Enum.IsDefined(o.Weights)) errors.Add("Node:Weights must be Fp32, Int8 or Int4.");
        if (o.WeightBlockSize is < 16 or > 256 || (o.WeightBlockSize & (o.WeightBlockSize - 1)) != 0) errors.Add("Node:WeightBlockSize must be a power of two in [16, 256].");
        if (o.WeightAccuracyLevel is < 0 or > 4) errors.Add("Node:WeightAccuracyLevel must be in [0, 4].");
        if (o.QuantizeHead && o.Weights == WeightFormat.Fp32) errors.Add("Node:QuantizeHead needs Node:Weights Int8 or Int4.");
        if (!Enum.IsDefined(o.Precision)) errors.Add("Node:Precision must be Float32 or Float16.");
        if (o.Precision == ComputePrecision.Float16 && (o.EarlyExit || o.MixedSteps || o.Weights != WeightFormat.Fp32 || o.AdapterKernel == AdapterKernelKind.Segmented))
            errors.Add("Node:Precision Float16 does not run with Node:EarlyExit, Node:MixedSteps, quantised Node:Weights or Node:AdapterKernel Segmented (fp32 CPU operators).");
        if (o.AdapterKernel == AdapterKernelKind.Segmented && o.ExecutionProvider != ExecutionProviderKind.Cpu)
            errors.Add("Node:AdapterKernel Segmented runs on the CPU provider only; use Auto or BatchedMatMul with Cuda.");
        if (!string.IsNullOrWhiteSpace(o.Redis) && !string.IsNullOrWhiteSpace(o.AdapterDirectory))
            errors.Add("Set either Node:Redis (adapters from the store) or Node:AdapterDirectory (local PEFT folders), not both.");
        if (!string.IsNullOrWhiteSpace(o.AdapterDirectory) && !Directory.Exists(o.AdapterDirectory))
            errors.Add($"Node:AdapterDirectory '{o.AdapterDirectory}' does not exist.");
        if (o.Port is < 0 or > 65535) errors.Add("Node:Port must be in [0, 65535].");
        if (o.DefaultEarlyExit is not ("off" or "confident" or "speculative")) errors.Add($"Node:DefaultEarlyExit must be off, confident or speculative, got '{o.DefaultEarlyExit}'.");
        if (o.DefaultEarlyExit != "off" && !o.EarlyExit) errors.Add("Node:DefaultEarlyExit needs Node:EarlyExit=true.");
        if (o.EarlyExit && o.ExecutionProvider != ExecutionProviderKind.Cpu) errors.Add("Node:EarlyExit runs on the CPU provider only.");
        if (o.MixedSteps && o.ExecutionProvider != ExecutionProviderKind.Cpu) errors.Add("Node:MixedSteps runs on the CPU provider only.");
        if (o.MixedSteps && o.AdaptersEnabled && o.AdapterKernel == AdapterKernelKind.BatchedMatMul) errors.Add("Node:MixedSteps takes adapters through the Segmented kernel only (AdapterKernel Auto or Segmented).");
        if (o.MaxTokensPerStep is < 1 or > 65536) errors.Add($"Node:MaxTokensPerStep must be in [1, 65536], got {o.MaxTokensPerStep}.");
        if (o.MinSharedPrefixTokens < 1) errors.Add("Node:MinSharedPrefixTokens must be at least 1.");
        if (o.EarlyExit && o.AdaptersEnabled && o.AdapterKernel == AdapterKernelKind.BatchedMatMul) errors.Add("Node:EarlyExit takes adapters through the Segmented kernel only (AdapterKernel Auto or Segmented).");
        if (o.ExitProbe is { } probe && !Directory.Exists(probe)) errors.Add($"Node:ExitProbe '{probe}' does not exist.");
        if (o.DraftTokens is < 1 or > SpeculativeSpec.MaxDraftTokens) errors.Add($"Node:DraftTokens must be in [1, {SpeculativeSpec.MaxDraftTokens}].");
        if (o.DraftLayers is < 1) errors.Add("Node:DraftLayers must be at least 1.");
        foreach (var (criterion, t) in o.ExitThresholds)
        {
            if (criterion is not ("probe" or "cosine" or "update_view" or "margin")) errors.Add($"Node:ExitThresholds: '{criterion}' is not a criterion (probe, cosine, update_view, margin).");
            else if (!(t >= -1 && t <= 1)) errors.Add($"Node:ExitThresholds:{criterion} must be in [-1, 1].");
        }
        foreach (var (head, folder) in o.RewardHeads)
        {
            if (!AdapterStore.Storage.AdapterKeys.IsValidName(head)) errors.Add($"Node:RewardHeads: '{head}' is not a valid name.");
            if (!Directory.Exists(folder)) errors.Add($"Node:RewardHeads:{head} '{folder}' does not exist.");
        }
        if (o.DefaultRewardHead is { } d)
        {
            var headName = d.StartsWith("public/", StringComparison.Ordinal) ? d["public/".Length..] : null;
            if (headName is null || !AdapterStore.Storage.AdapterKeys.IsValidName(headName))
                errors.Add($"Node:DefaultRewardHead '{d}' must be 'public/<name>' (every tenant may use the default).");
            else if (string.IsNullOrWhiteSpace(o.Redis) && !o.RewardHeads.ContainsKey(headName))
                errors.Add($"Node:DefaultRewardHead '{d}' must be a head in Node:RewardHeads (or set Node:Redis to serve heads from the store).");
        }
        if (!OpenAI.Tools.ToolCallParsers.Names.Contains(o.ToolCallParser))
            errors.Add($"Node:ToolCallParser must be one of {string.Join(", ", OpenAI.Tools.ToolCallParsers.Names)}, got '{o.ToolCallParser}'.");
        if (o.RewardHeadCacheSize < 1) errors.Add("Node:RewardHeadCacheSize must be at least 1.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void CheckModelPath(NodeOptions o, List<string> errors)
    {
        try
        {
            if (!Directory.Exists(o.LocateCheckpoint().Directory))
            {
                errors.Add($"Node:ModelPath '{o.ModelPath}' does not exist (give a checkpoint folder, or a model id org/name[@revision] held by the local Hugging Face cache).");
            }
        }
        catch (HubModelNotFoundException e)
        {
            errors.Add($"Node:ModelPath: {e.Message}");
        }
        catch (DanglingLinkException e)
        {
            errors.Add($"Node:ModelPath: {e.Message}");
        }
    }
}
