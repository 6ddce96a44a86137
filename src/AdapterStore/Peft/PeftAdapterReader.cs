using Serving.Checkpoints;

namespace Serving.AdapterStore.Peft;

/// <summary>A PEFT upload that passed every check against its base model.</summary>
/// <param name="Config">The parsed adapter_config.json.</param>
/// <param name="Payload">Manifest plus tensors in their native parameterisation.</param>
/// <param name="Notes">Things worth telling the uploader (ignored keys, corrected flags).</param>
public sealed record ValidatedAdapter(PeftConfig Config, AdapterPayload Payload, IReadOnlyList<string> Notes);

/// <summary>
/// Reads <c>adapter_config.json</c> + <c>adapter_model.safetensors</c> as written by Hugging Face <c>peft</c> and checks
/// them against a base model: every tensor maps to a real module, shapes agree with the module and the rank,
/// values are finite, layers exist. Each refusal is an <see cref="AdapterValidationException"/> naming the tensor and the rule.
/// </summary>
public static class PeftAdapterReader
{
    private const string ModelPrefix = "base_model.model.";

    /// <summary>Parses and validates an upload.</summary>
    public static ValidatedAdapter Read(byte[] configJson, byte[] safetensors, BaseModelShape shape)
    {
        var config = PeftConfig.Parse(configJson);
        var notes = new List<string>(config.Notes);
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Parse(safetensors, "adapter_model.safetensors");
        }
        catch (SafetensorsFormatException e)
        {
            string code = e.Reason.Contains("duplicate", StringComparison.OrdinalIgnoreCase) ? AdapterErrors.TensorDuplicate : AdapterErrors.SafetensorsInvalid;
            throw new AdapterValidationException(code, e.Message, e.TensorName, status: 400);
        }
        using (file)
        {
            if (shape.Architecture == BaseModelShape.Gpt2 && !config.FanInFanOut && config.Kind == AdapterKind.Lora)
                notes.Add("fan_in_fan_out is false although GPT-2 uses Conv1D; orientation is taken from the base architecture (LoRA A/B are unaffected)");
            var payload = config.Kind switch
            {
                AdapterKind.Lora => ReadLora(file, config, shape),
                AdapterKind.Vera => ReadVera(file, config, shape),
                _ => ReadVbLora(file, config, shape),
            };
            return new ValidatedAdapter(config, payload, notes);
        }
    }

    // ---------------- tensor naming ----------------

    private readonly record struct ModuleRef(string Path, int Layer, string Module, int In, int Out);

    /// <summary>Splits <c>base_model.model.&lt;path&gt;.&lt;suffix&gt;</c>, resolves the module and applies the targeting rules.</summary>
    private static ModuleRef Resolve(string tensor, string suffix, PeftConfig config, BaseModelShape shape)
    {
        if (!tensor.StartsWith(ModelPrefix, StringComparison.Ordinal))
            throw new AdapterValidationException(AdapterErrors.UnknownModule, $"Tensor '{tensor}' does not start with '{ModelPrefix}' as peft writes it.", tensor);
        string path = tensor[ModelPrefix.Length..^suffix.Length];
        if (!shape.TryParsePath(path, out int layer, out string module))
        {
            string? family = BaseModelShape.FamilyOf(path);
            if (family is not null && family != shape.Architecture)
                throw new AdapterValidationException(AdapterErrors.BaseModelMismatch, $"Tensor '{tensor}' adapts '{path}', a {family} module; the base model is {shape.Architecture}.", tensor);
            throw new AdapterValidationException(AdapterErrors.UnknownModule,
                $"Tensor '{tensor}' names module '{path}', which is not an adaptable module of {shape.Architecture} ({string.Join(", ", shape.Modules)}).", tensor);
        }
        if (layer >= shape.NumLayers)
            throw new AdapterValidationException(AdapterErrors.LayerOutOfRange, $"Tensor '{tensor}' is for layer {layer}; the base model has layers 0..{shape.NumLayers - 1}.", tensor);
        string canonical = shape.PathOf(layer, module);
        if (!config.Targets(canonical) && !config.Targets(path))
            throw new AdapterValidationException(AdapterErrors.NotTargeted, $"Tensor '{tensor}' adapts '{path}', which target_modules does not select.", tensor);
        if (config.LayersToTransform is { } layers && !layers.Contains(layer))
            throw new AdapterValidationException(AdapterErrors.NotTargeted, $"Tensor '{tensor}' is for layer {layer}, which layers_to_transform excludes.", tensor);
        var (inF, outF) = shape.Widths(module)!.Value;
        // Keep the path as uploaded (a headless GPT2Model adapter has no 'transformer.'): tensor names are rebuilt from it.
        return new ModuleRef(path, layer, module, inF, outF);
    }

    private static void RefuseForeign(string name, AdapterKind kind)
    {
        if (name.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal) || name.Contains(".lora_magnitude_vector.", StringComparison.Ordinal))
            throw new AdapterValidationException(AdapterErrors.DoraUnsupported, $"Tensor '{name}' is a DoRA magnitude vector; DoRA is not supported yet.", name);
        if (name.Contains(".modules_to_save.", StringComparison.Ordinal) || name.Contains(".original_module.", StringComparison.Ordinal))
            throw new AdapterValidationException(AdapterErrors.FullTensorUnsupported, $"Tensor '{name}' is a full module copy (modules_to_save); not supported yet.", name);
        if (name.Contains("lora_embedding_", StringComparison.Ordinal))
            throw new AdapterValidationException(AdapterErrors.UnknownModule, $"Tensor '{name}' adapts an embedding; only attention and MLP projections are supported.", name);
        if (name.EndsWith(".bias", StringComparison.Ordinal))
            throw new AdapterValidationException(AdapterErrors.BiasUnsupported, $"Tensor '{name}' is a bias; only bias 'none' adapters are supported.", name);
        string[] markers = ["lora_A", "lora_B", "vera_", "vblora_"];
        if (!markers.Any(m => name.Contains(m, StringComparison.Ordinal)))
            throw new AdapterValidationException(AdapterErrors.FullTensorUnsupported,
                $"Tensor '{name}' is a full weight, not an adapter factor (e.g. a classification head); a causal-LM server cannot use it.", name);
        throw new AdapterValidationException(AdapterErrors.UnknownModule, $"Tensor '{name}' is not a {kind} adapter tensor this store understands.", name);
    }

    // ---------------- element access ----------------

    private static TensorElementType FloatType(TensorInfo info) => info.DType switch
    {
        SafetensorsDType.F16 => TensorElementType.F16,
        SafetensorsDType.BF16 => TensorElementType.BF16,
        SafetensorsDType.F32 => TensorElementType.F32,
        _ => throw new AdapterValidationException(AdapterErrors.DtypeUnsupported, $"Tensor '{info.Name}' has dtype {info.DType}; adapter weights must be F16, BF16 or F32.", info.Name),
    };

    private static AdapterTensor ReadFloat(SafetensorsFile file, string name, long[] expected)
    {
        var info = file.Tensors[name];
        var type = FloatType(info);
        CheckShape(info, expected);
        var data = file.ReadFloat32(name);
        for (int i = 0; i < data.Length; i++)
        {
            if (!float.IsFinite(data[i]))
                throw new AdapterValidationException(AdapterErrors.NotFinite, $"Tensor '{name}' holds {data[i]} at flat index {i}; all values must be finite.", name);
        }
        return new AdapterTensor(name, info.Shape, data, type);
    }

    private static void CheckShape(TensorInfo info, long[] expected)
    {
        bool ok = info.Shape.Length == expected.Length;
        for (int i = 0; ok && i < expected.Length; i++) ok = expected[i] < 0 || info.Shape[i] == expected[i];
        if (!ok)
        {
            string want = "[" + string.Join(", ", expected.Select(e => e < 0 ? "*" : e.ToString())) + "]";
            throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}], expected {want}.", info.Name);
        }
    }

    private static long[] ShapeOf(SafetensorsFile file, string name, int rank, string expectation)
    {
        var s = file.Tensors[name].Shape;
        if (s.Length != rank)
            throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Tensor '{name}' has shape [{string.Join(", ", s)}]; expected {expectation}.", name);
        return s;
    }

    // ---------------- LoRA ----------------

    private static AdapterPayload ReadLora(SafetensorsFile file, PeftConfig config, BaseModelShape shape)
    {
        var modules = new List<ModuleSpec>();
        var tensors = new List<AdapterTensor>();
        foreach (var (r, a, b) in Pairs(file, config, shape, AdapterKind.Lora, ("lora_A", ".lora_A.weight"), ("lora_B", ".lora_B.weight")))
        {
            long rankA = ShapeOf(file, a, 2, "[r, in]")[0];
            long rankB = ShapeOf(file, b, 2, "[out, r]")[1];
            var ta = ReadFloat(file, a, [-1, r.In]);
            var tb = ReadFloat(file, b, [r.Out, -1]);
            if (rankA != rankB)
                throw new AdapterValidationException(AdapterErrors.RankMismatch, $"Module '{r.Path}': lora_A has rank {rankA} but lora_B has rank {rankB}.", b);
            int expected = config.RankFor(r.Path);
            if (rankA != expected)
                throw new AdapterValidationException(AdapterErrors.RankMismatch,
                    $"Tensor '{a}' has rank {rankA}; adapter_config.json gives rank {expected} for '{r.Path}' (r / rank_pattern).", a);
            if (rankA <= 0) throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Tensor '{a}' has rank 0.", a);
            modules.Add(new ModuleSpec(r.Path, r.Module, r.Layer, r.In, r.Out, (int)rankA, config.ScaleFor(r.Path, (int)rankA)));
            tensors.Add(ta);
            tensors.Add(tb);
        }
        return new AdapterPayload(new AdapterManifest { Kind = AdapterKind.Lora, Architecture = shape.Architecture, Modules = modules }, tensors);
    }

    /// <summary>
    /// The tensors of a two-factor kind grouped by module (layer, then the base's module order): every tensor must end
    /// in one of the two suffixes (anything else is refused as foreign) and resolve to a targeted module. Each module
    /// must have both; the refusal for one that has not comes when the enumeration reaches it, so modules are checked
    /// in order. An adapter with no such tensor is refused as empty.
    /// </summary>
    private static IEnumerable<(ModuleRef Ref, string First, string Second)> Pairs(SafetensorsFile file, PeftConfig config, BaseModelShape shape,
        AdapterKind kind, (string Name, string Suffix) first, (string Name, string Suffix) second, string[]? shared = null)
    {
        var pairs = new SortedDictionary<(int Layer, int Order), (ModuleRef Ref, string? First, string? Second)>();
        foreach (var name in file.Tensors.Keys)
        {
            if (shared is not null && shared.Contains(name)) continue;
            string suffix = name.EndsWith(first.Suffix, StringComparison.Ordinal) ? first.Suffix
                : name.EndsWith(second.Suffix, StringComparison.Ordinal) ? second.Suffix : "";
            if (suffix.Length == 0) RefuseForeign(name, kind);
            var r = Resolve(name, suffix, config, shape);
            var key = (r.Layer, IndexOf(shape, r.Module));
            pairs.TryGetValue(key, out var entry);
            entry.Ref = r;
            if (suffix == first.Suffix) entry.First = name; else entry.Second = name;
            pairs[key] = entry;
        }
        if (pairs.Count == 0)
            throw new AdapterValidationException(AdapterErrors.Empty, $"adapter_model.safetensors holds no {first.Name}/{second.Name} tensors.");
        foreach (var (_, (r, a, b)) in pairs)
        {
            if (a is null || b is null)
            {
                string have = (a ?? b)!;
                throw new AdapterValidationException(AdapterErrors.Unpaired,
                    $"Tensor '{have}' has no matching {(a is null ? first.Name : second.Name)} for module '{r.Path}'.", have);
            }
            yield return (r, a, b);
        }
    }

    private static int IndexOf(BaseModelShape shape, string module)
    {
        var list = shape.Modules;
        for (int i = 0; i < list.Count; i++) if (list[i] == module) return i;
        return list.Count;
    }

    // ---------------- VeRA ----------------

    /// <summary>Shared projection keys written with save_projection (the adapter name is stripped on save).</summary>
    public const string VeraA = "base_model.vera_A", VeraB = "base_model.vera_B";

    private static AdapterPayload ReadVera(SafetensorsFile file, PeftConfig config, BaseModelShape shape)
    {
        if (!file.Tensors.ContainsKey(VeraA) || !file.Tensors.ContainsKey(VeraB))
        {
            string why = config.SaveProjection ? "they are missing from adapter_model.safetensors" : "the adapter was saved with save_projection=false";
            throw new AdapterValidationException(AdapterErrors.VeraProjectionMissing,
                $"VeRA adapters must carry their shared projections '{VeraA}' and '{VeraB}'; {why}. Regenerating them needs torch's RNG; save with save_projection=True.");
        }
        var sa = ShapeOf(file, VeraA, 2, "[r, max_in]");
        var sb = ShapeOf(file, VeraB, 2, "[max_out, r]");
        int r = config.R;
        if (sa[0] != r) throw new AdapterValidationException(AdapterErrors.RankMismatch, $"Tensor '{VeraA}' has rank {sa[0]}; adapter_config.json says r = {r}.", VeraA);
        if (sb[1] != r) throw new AdapterValidationException(AdapterErrors.RankMismatch, $"Tensor '{VeraB}' has rank {sb[1]}; adapter_config.json says r = {r}.", VeraB);
        var tensors = new List<AdapterTensor> { ReadFloat(file, VeraA, sa), ReadFloat(file, VeraB, sb) };

        var modules = new List<ModuleSpec>();
        foreach (var (m, b, d) in Pairs(file, config, shape, AdapterKind.Vera, ("vera_lambda_b", ".vera_lambda_b"), ("vera_lambda_d", ".vera_lambda_d"), [VeraA, VeraB]))
        {
            if (m.In > sa[1]) throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Module '{m.Path}' needs {m.In} input columns but '{VeraA}' has {sa[1]}.", VeraA);
            if (m.Out > sb[0]) throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Module '{m.Path}' needs {m.Out} output rows but '{VeraB}' has {sb[0]}.", VeraB);
            tensors.Add(ReadFloat(file, d, [r]));
            tensors.Add(ReadFloat(file, b, [m.Out]));
            modules.Add(new ModuleSpec(m.Path, m.Module, m.Layer, m.In, m.Out, r, 1f));
        }
        return new AdapterPayload(new AdapterManifest
        {
            Kind = AdapterKind.Vera, Architecture = shape.Architecture, Modules = modules, Vera = new VeraSpec(r, (int)sa[1], (int)sb[0]),
        }, tensors);
    }

    // ---------------- VB-LoRA ----------------

    /// <summary>The shared vector bank key (the adapter name is stripped on save).</summary>
    public const string VectorBank = "base_model.vblora_vector_bank";

    private static AdapterPayload ReadVbLora(SafetensorsFile file, PeftConfig config, BaseModelShape shape)
    {
        if (!file.Tensors.ContainsKey(VectorBank))
            throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"VB-LoRA adapter lacks its vector bank '{VectorBank}'.");
        int nv = config.NumVectors, len = config.VectorLength, k = config.TopK, r = config.R;
        var tensors = new List<AdapterTensor> { ReadFloat(file, VectorBank, [nv, len]) };
        string[] suffixes = config.SaveOnlyTopKWeights
            ? [".vblora_logits_A_topk_indices", ".vblora_logits_A_topk_weights", ".vblora_logits_B_topk_indices", ".vblora_logits_B_topk_weights"]
            : [".vblora_logits_A", ".vblora_logits_B"];
        var found = new SortedDictionary<(int, int), (ModuleRef Ref, Dictionary<string, string> Parts)>();
        foreach (var name in file.Tensors.Keys)
        {
            if (name == VectorBank) continue;
            string? suffix = suffixes.FirstOrDefault(s => name.EndsWith(s, StringComparison.Ordinal));
            if (suffix is null)
            {
                if (name.Contains("vblora_logits", StringComparison.Ordinal))
                    throw new AdapterValidationException(AdapterErrors.ConfigInvalid,
                        $"Tensor '{name}' does not fit save_only_topk_weights = {config.SaveOnlyTopKWeights.ToString().ToLowerInvariant()} in adapter_config.json.", name);
                RefuseForeign(name, AdapterKind.VbLora);
            }
            var m = Resolve(name, suffix!, config, shape);
            var key = (m.Layer, IndexOf(shape, m.Module));
            if (!found.TryGetValue(key, out var e)) e = (m, new Dictionary<string, string>());
            e.Parts[suffix!] = name;
            found[key] = e;
        }
        if (found.Count == 0) throw new AdapterValidationException(AdapterErrors.Empty, "adapter_model.safetensors holds no vblora_logits tensors.");
        var modules = new List<ModuleSpec>();
        foreach (var (_, (m, parts)) in found)
        {
            foreach (var s in suffixes)
            {
                if (!parts.ContainsKey(s))
                    throw new AdapterValidationException(AdapterErrors.Unpaired, $"Module '{m.Path}' lacks '{s.TrimStart('.')}'.", parts.Values.First());
            }
            if (m.In % len != 0 || m.Out % len != 0)
                throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Module '{m.Path}' ({m.In}→{m.Out}) is not divisible by vector_length {len}.", parts.Values.First());
            long inTiles = m.In / len, outTiles = m.Out / len;
            if (config.SaveOnlyTopKWeights)
            {
                tensors.Add(ReadIndices(file, parts[suffixes[0]], [r, inTiles, k], nv));
                tensors.Add(ReadFloat(file, parts[suffixes[1]], [r, inTiles, k - 1]));
                tensors.Add(ReadIndices(file, parts[suffixes[2]], [outTiles, r, k], nv));
                tensors.Add(ReadFloat(file, parts[suffixes[3]], [outTiles, r, k - 1]));
            }
            else
            {
                tensors.Add(ReadFloat(file, parts[suffixes[0]], [r, inTiles, nv]));
                tensors.Add(ReadFloat(file, parts[suffixes[1]], [outTiles, r, nv]));
            }
            modules.Add(new ModuleSpec(m.Path, m.Module, m.Layer, m.In, m.Out, r, 1f));
        }
        return new AdapterPayload(new AdapterManifest
        {
            Kind = AdapterKind.VbLora, Architecture = shape.Architecture, Modules = modules,
            VbLora = new VbLoraSpec(r, nv, len, k, config.SaveOnlyTopKWeights),
        }, tensors);
    }

    private static AdapterTensor ReadIndices(SafetensorsFile file, string name, long[] expected, int numVectors)
    {
        var info = file.Tensors[name];
        var type = info.DType switch
        {
            SafetensorsDType.U8 => TensorElementType.U8,
            SafetensorsDType.I16 => TensorElementType.I16,
            SafetensorsDType.I32 => TensorElementType.I32,
            SafetensorsDType.I64 => TensorElementType.I64,
            _ => throw new AdapterValidationException(AdapterErrors.DtypeUnsupported, $"Tensor '{name}' has dtype {info.DType}; top-k indices must be U8, I16, I32 or I64.", name),
        };
        CheckShape(info, expected);
        var raw = file.ReadInt64(name);
        var data = new float[raw.Length];
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] < 0 || raw[i] >= numVectors)
                throw new AdapterValidationException(AdapterErrors.ShapeMismatch, $"Tensor '{name}' holds index {raw[i]} at flat index {i}; the bank has {numVectors} vectors.", name);
            data[i] = raw[i];
        }
        return new AdapterTensor(name, info.Shape, data, type);
    }
}
