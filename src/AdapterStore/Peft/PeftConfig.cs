using System.Text.Json;
using System.Text.RegularExpressions;
using Serving.Contracts.Json;

namespace Serving.AdapterStore.Peft;

/// <summary>The parts of a PEFT <c>adapter_config.json</c> this store understands; anything else is reported in <see cref="Notes"/>.</summary>
public sealed record PeftConfig
{
    /// <summary>Parameterisation (from <c>peft_type</c>).</summary>
    public required AdapterKind Kind { get; init; }
    /// <summary>Default rank.</summary>
    public int R { get; init; }
    /// <summary>LoRA alpha.</summary>
    public double LoraAlpha { get; init; } = 8;
    /// <summary>rsLoRA scaling α/√r.</summary>
    public bool UseRsLora { get; init; }
    /// <summary>Per-module rank overrides (regex suffix → rank).</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    /// <summary>Per-module alpha overrides.</summary>
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();
    /// <summary>Target module names (suffix match), when given as a list.</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }
    /// <summary>Target modules as one regex (full match), when given as a string.</summary>
    public string? TargetModulesRegex { get; init; }
    /// <summary>Only these layers are adapted, when set.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>The config's fan_in_fan_out (informational: orientation comes from the base architecture).</summary>
    public bool FanInFanOut { get; init; }
    /// <summary>base_model_name_or_path.</summary>
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>task_type.</summary>
    public string? TaskType { get; init; }
    /// <summary>VeRA: save_projection.</summary>
    public bool SaveProjection { get; init; } = true;
    /// <summary>VB-LoRA: num_vectors.</summary>
    public int NumVectors { get; init; } = 256;
    /// <summary>VB-LoRA: vector_length.</summary>
    public int VectorLength { get; init; } = 256;
    /// <summary>VB-LoRA: topk.</summary>
    public int TopK { get; init; } = 2;
    /// <summary>VB-LoRA: save_only_topk_weights.</summary>
    public bool SaveOnlyTopKWeights { get; init; }
    /// <summary>Keys ignored or facts worth telling the uploader.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    private static readonly HashSet<string> Known =
    [
        "peft_type", "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "target_modules", "layers_to_transform",
        "layers_pattern", "fan_in_fan_out", "base_model_name_or_path", "task_type", "use_dora", "modules_to_save", "bias",
        "lora_dropout", "inference_mode", "init_lora_weights", "revision", "auto_mapping", "peft_version", "save_projection",
        "projection_prng_key", "d_initial", "vera_dropout", "num_vectors", "vector_length", "topk", "save_only_topk_weights",
        "vblora_dropout", "init_logits_std", "init_vector_bank_bound", "target_parameters", "exclude_modules", "megatron_config",
        "megatron_core", "loftq_config", "layer_replication", "runtime_config", "use_qalora", "qalora_group_size", "eva_config",
        "corda_config", "trainable_token_indices", "lora_bias", "alora_invocation_tokens", "arrow_config", "ensure_weight_tying",
    ];

    /// <summary>Parses and checks an adapter_config.json.</summary>
    public static PeftConfig Parse(ReadOnlySpan<byte> json)
    {
        // Text that is not UTF-8 passes the parser and fails wherever the string is first read (a 500): refuse it here.
        if (JsonTextCheck.FindInvalidString(json) is { } invalid)
        {
            throw new AdapterValidationException(AdapterErrors.ConfigInvalidJson,
                $"adapter_config.json holds text that is not valid UTF-8 (or an escape that leaves a lone surrogate) in {(invalid.Length == 0 ? "a key" : $"'{invalid}'")}; save it as UTF-8.", status: 400);
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { AllowTrailingCommas = false });
        }
        catch (JsonException e)
        {
            throw new AdapterValidationException(AdapterErrors.ConfigInvalidJson, $"adapter_config.json is not valid JSON: {e.Message}", status: 400);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new AdapterValidationException(AdapterErrors.ConfigInvalidJson, "adapter_config.json must hold a JSON object.", status: 400);
            var notes = new List<string>();
            foreach (var p in root.EnumerateObject())
            {
                if (!Known.Contains(p.Name)) notes.Add($"ignored unknown config key '{p.Name}'");
            }

            string? peftType = OptString(root, "peft_type");
            var kind = peftType switch
            {
                "LORA" => AdapterKind.Lora,
                "VERA" => AdapterKind.Vera,
                "VBLORA" => AdapterKind.VbLora,
                null => throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "adapter_config.json has no 'peft_type'."),
                _ => throw new AdapterValidationException(AdapterErrors.PeftTypeUnsupported, $"peft_type '{peftType}' is not supported; supported: LORA, VERA, VBLORA."),
            };
            if (OptBool(root, "use_dora") == true)
                throw new AdapterValidationException(AdapterErrors.DoraUnsupported, "DoRA adapters (use_dora: true) are not supported yet.");
            if (root.TryGetProperty("modules_to_save", out var mts) && mts.ValueKind == JsonValueKind.Array && mts.GetArrayLength() > 0)
                throw new AdapterValidationException(AdapterErrors.FullTensorUnsupported, $"modules_to_save ({mts.GetRawText()}) stores full module copies; not supported yet.");
            string? bias = OptString(root, "bias");
            if (bias is not null && bias != "none")
                throw new AdapterValidationException(AdapterErrors.BiasUnsupported, $"bias '{bias}' trains bias vectors; only 'none' is supported.");
            if (root.TryGetProperty("target_parameters", out var tp) && tp.ValueKind == JsonValueKind.Array && tp.GetArrayLength() > 0)
                throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "target_parameters (parameter-level LoRA) is not supported.");
            if (root.TryGetProperty("layer_replication", out var lr) && lr.ValueKind == JsonValueKind.Array && lr.GetArrayLength() > 0)
                throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "layer_replication changes the base model's depth; not supported.");

            int defaultR = kind switch { AdapterKind.Lora => 8, AdapterKind.Vera => 256, _ => 4 };
            int r = OptInt(root, "r") ?? defaultR;
            if (r <= 0) throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"r must be positive, got {r}.");
            double alpha = OptDouble(root, "lora_alpha") ?? 8;
            if (!double.IsFinite(alpha)) throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "lora_alpha must be finite.");

            IReadOnlyList<string>? targets = null;
            string? targetRegex = null;
            if (root.TryGetProperty("target_modules", out var tm))
            {
                switch (tm.ValueKind)
                {
                    case JsonValueKind.String:
                        targetRegex = tm.GetString()!;
                        if (targetRegex == "all-linear") { targetRegex = null; notes.Add("target_modules 'all-linear': every linear module may be adapted"); }
                        else
                        {
                            try { _ = new Regex(targetRegex); }
                            catch (ArgumentException e) { throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"target_modules regex is invalid: {e.Message}"); }
                        }
                        break;
                    case JsonValueKind.Array:
                        targets = tm.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! :
                            throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "target_modules entries must be strings.")).ToList();
                        break;
                    case JsonValueKind.Null:
                        break;
                    default:
                        throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "target_modules must be a list of names or a regex string.");
                }
            }

            IReadOnlyList<int>? layers = null;
            if (root.TryGetProperty("layers_to_transform", out var lt))
            {
                layers = lt.ValueKind switch
                {
                    JsonValueKind.Number => [lt.GetInt32()],
                    JsonValueKind.Array => lt.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetInt32() :
                        throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "layers_to_transform entries must be integers.")).ToList(),
                    JsonValueKind.Null => null,
                    _ => throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "layers_to_transform must be an integer or a list of integers."),
                };
            }

            var config = new PeftConfig
            {
                Kind = kind,
                R = r,
                LoraAlpha = alpha,
                UseRsLora = OptBool(root, "use_rslora") ?? false,
                RankPattern = Pattern(root, "rank_pattern", e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v) && v > 0 ? v :
                    throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "rank_pattern values must be positive integers.")),
                AlphaPattern = Pattern(root, "alpha_pattern", e => e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double v) && double.IsFinite(v) ? v :
                    throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "alpha_pattern values must be numbers.")),
                TargetModules = targets,
                TargetModulesRegex = targetRegex,
                LayersToTransform = layers,
                FanInFanOut = OptBool(root, "fan_in_fan_out") ?? false,
                BaseModelNameOrPath = OptString(root, "base_model_name_or_path"),
                TaskType = OptString(root, "task_type"),
                SaveProjection = OptBool(root, "save_projection") ?? true,
                NumVectors = OptInt(root, "num_vectors") ?? 256,
                VectorLength = OptInt(root, "vector_length") ?? 256,
                TopK = OptInt(root, "topk") ?? 2,
                SaveOnlyTopKWeights = OptBool(root, "save_only_topk_weights") ?? false,
                Notes = notes,
            };
            if (kind == AdapterKind.VbLora && (config.NumVectors <= 0 || config.VectorLength <= 0 || config.TopK <= 0 || config.TopK > config.NumVectors))
                throw new AdapterValidationException(AdapterErrors.ConfigInvalid, "VB-LoRA num_vectors, vector_length and topk must be positive with topk ≤ num_vectors.");
            return config;
        }
    }

    /// <summary>Rank of one module (rank_pattern wins over r), by PEFT's rule: first pattern whose regex matches a suffix of the module path.</summary>
    public int RankFor(string modulePath) => Lookup(RankPattern, modulePath) ?? R;

    /// <summary>Alpha of one module (alpha_pattern wins over lora_alpha).</summary>
    public double AlphaFor(string modulePath) => Lookup(AlphaPattern, modulePath) ?? LoraAlpha;

    /// <summary>LoRA scale s = α/r, or α/√r with rsLoRA.</summary>
    public float ScaleFor(string modulePath, int rank)
    {
        double a = AlphaFor(modulePath);
        return (float)(UseRsLora ? a / Math.Sqrt(rank) : a / rank);
    }

    /// <summary>Whether target_modules selects this module path (a missing target_modules selects everything).</summary>
    public bool Targets(string modulePath)
    {
        if (TargetModulesRegex is { } regex) return Regex.IsMatch(modulePath, $"^(?:{regex})$");
        if (TargetModules is { } list) return list.Any(t => modulePath == t || modulePath.EndsWith("." + t, StringComparison.Ordinal));
        return true;
    }

    private static T? Lookup<T>(IReadOnlyDictionary<string, T> pattern, string modulePath) where T : struct
    {
        foreach (var (key, value) in pattern)
        {
            if (Regex.IsMatch(modulePath, $"^(.*\\.)?(?:{key})$")) return value;
        }
        return null;
    }

    private static Dictionary<string, T> Pattern<T>(JsonElement root, string name, Func<JsonElement, T> read)
    {
        var result = new Dictionary<string, T>();
        if (!root.TryGetProperty(name, out var p) || p.ValueKind == JsonValueKind.Null) return result;
        if (p.ValueKind != JsonValueKind.Object) throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"{name} must be an object.");
        foreach (var e in p.EnumerateObject())
        {
            try { _ = new Regex(e.Name); }
            catch (ArgumentException ex) { throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"{name} key '{e.Name}' is not a valid regex: {ex.Message}"); }
            result[e.Name] = read(e.Value);
        }
        return result;
    }

    private static string? OptString(JsonElement root, string name) =>
        !root.TryGetProperty(name, out var p) || p.ValueKind == JsonValueKind.Null ? null
        : p.ValueKind == JsonValueKind.String ? p.GetString()
        : throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"'{name}' must be a string.");

    private static bool? OptBool(JsonElement root, string name) =>
        !root.TryGetProperty(name, out var p) || p.ValueKind == JsonValueKind.Null ? null
        : p.ValueKind is JsonValueKind.True or JsonValueKind.False ? p.GetBoolean()
        : throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"'{name}' must be true or false.");

    private static int? OptInt(JsonElement root, string name) =>
        !root.TryGetProperty(name, out var p) || p.ValueKind == JsonValueKind.Null ? null
        : p.ValueKind == JsonValueKind.Number && p.TryGetInt32(out int v) ? v
        : throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"'{name}' must be an integer.");

    private static double? OptDouble(JsonElement root, string name) =>
        !root.TryGetProperty(name, out var p) || p.ValueKind == JsonValueKind.Null ? null
        : p.ValueKind == JsonValueKind.Number && p.TryGetDouble(out double v) && double.IsFinite(v) ? v
        : throw new AdapterValidationException(AdapterErrors.ConfigInvalid, $"'{name}' must be a finite number.");
}
