using Microsoft.Extensions.Options;
using Serving.Checkpoints.ExitProbes;
using Serving.Contracts.Errors;
using Serving.Inference.Decoding;
using Serving.Inference.EarlyExit;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;

namespace Serving.Inference.Node.EarlyExit;

/// <summary>
/// The node's early-exit settings and criteria, and the mapping of a request's <c>early_exit</c> field:
/// <c>{"mode": "confident" | "speculative" | "off", "criterion": "probe" | "cosine" | "update_view" | "margin",
/// "threshold": …, "draft_layers": …, "draft_tokens": …}</c>. Confident mode sets the rows' exit policy; speculative
/// mode is a decoding strategy (<see cref="SpeculativeSpec"/>). Needs <see cref="NodeOptions.EarlyExit"/>; the probe
/// comes from <see cref="NodeOptions.ExitProbe"/> (default: the model folder's <c>exit-probe</c>).
/// </summary>
public sealed class ExitCatalog
{
    private readonly NodeOptions _options;
    private readonly ModelHost _host;
    private readonly ProbeCriterion? _probe;

    public ExitCatalog(ModelHost host, IOptions<NodeOptions> options, ILogger<ExitCatalog> logger)
    {
        _host = host;
        _options = options.Value;
        if (!_options.EarlyExit) return;
        var folder = _options.ExitProbe ?? Path.Combine(host.CheckpointDirectory, "exit-probe");
        if (Directory.Exists(folder))
        {
            _probe = new ProbeCriterion(ExitProbeReader.ReadFolder(folder, host.Model.Config), host.Model);
            logger.LogInformation("Exit probe loaded from {Folder}", folder);
        }
    }

    /// <summary>The threshold a criterion uses when the request names none.</summary>
    public double DefaultThreshold(string criterion) => _options.ExitThresholds.TryGetValue(criterion, out var t) ? t : criterion switch
    {
        "probe" => _probe?.RecommendedThreshold ?? 0.9,
        "cosine" => 0.995,
        "update_view" => 0.7,
        _ => 0.5,
    };

    /// <summary>The request with its early-exit setting applied (<paramref name="body"/> null: the node's default mode).</summary>
    internal PreparedRequest Apply(EarlyExitBody? body, PreparedRequest prepared)
    {
        var mode = body?.Mode ?? _options.DefaultEarlyExit;
        if (mode is "off") return prepared;
        if (mode is not ("confident" or "speculative"))
        {
            throw Refusals.Invalid("early_exit.mode", $"early_exit.mode must be \"confident\", \"speculative\" or \"off\", got \"{mode}\".");
        }
        if (!_options.EarlyExit)
        {
            throw new RequestRefusedException(ErrorCodes.FeatureUnavailable,
                "This node runs every layer of every token: it was started without early exit (Node:EarlyExit=true).", "early_exit");
        }
        var generation = prepared.Generation;
        if (generation.RewardHead?.Side is not null)
        {
            throw Refusals.Invalid("early_exit", "early exit does not run with an Otter reward head (its side network reads the inputs of base layers an exited row skips).");
        }
        var layers = _host.Model.Config.NumLayers;
        if (mode == "speculative")
        {
            if (generation.Decoding is not SamplingSpec) throw Refusals.Invalid("early_exit", "speculative early exit cannot be combined with alignment.");
            var draftLayers = body?.DraftLayers ?? _options.DraftLayers ?? Math.Max(1, layers / 2);
            if (draftLayers < 1 || draftLayers >= layers) throw Refusals.Invalid("early_exit.draft_layers", $"early_exit.draft_layers must be between 1 and {layers - 1}, got {draftLayers}.");
            var spec = new SpeculativeSpec(draftLayers, body?.DraftTokens ?? _options.DraftTokens);
            return prepared with { Generation = generation with { Decoding = spec } };
        }
        var criterionName = body?.Criterion ?? (_probe is not null ? "probe" : "cosine");
        IExitCriterion criterion = criterionName switch
        {
            "probe" => _probe ?? throw new RequestRefusedException(ErrorCodes.FeatureUnavailable,
                $"The model has no exit probe: add one (tools/forge exit_probe.py writes <model>/exit-probe) or set Node:ExitProbe; the criteria without training are cosine, update_view and margin.", "early_exit.criterion"),
            "cosine" => CosineCriterion.Instance,
            "update_view" => UpdateViewCriterion.For(_host.Model),
            "margin" => new MarginCriterion(_host.Model),
            _ => throw Refusals.Invalid("early_exit.criterion", $"early_exit.criterion must be probe, cosine, update_view or margin, got \"{criterionName}\"."),
        };
        var threshold = body?.Threshold ?? DefaultThreshold(criterionName);
        var (low, high) = criterionName == "cosine" ? (-1.0, 1.0) : (0.0, 1.0);
        if (!(threshold >= low && threshold <= high)) throw Refusals.Invalid("early_exit.threshold", $"early_exit.threshold for {criterionName} must be in [{low}, {high}], got {threshold}.");
        return prepared with { Generation = generation with { EarlyExit = new ExitPolicy(criterion, (float)threshold) } };
    }
}
