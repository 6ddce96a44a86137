using System.Text.Json;

namespace Serving.Checkpoints;

/// <summary>
/// Typed reads of one JSON object of a <c>config.json</c> (the root, or a nested object such as <c>rope_scaling</c>),
/// each failure a <see cref="ModelConfigException"/> naming the file and the key. A null value reads as absent.
/// </summary>
internal sealed class ConfigReader(JsonElement root, string source, string prefix = "")
{
    public string Source => source;

    /// <summary>The key as the file spells it, with the enclosing object's name (<c>rope_scaling.factor</c>).</summary>
    public string Name(string key) => prefix + key;

    /// <summary>Whether the key is present at all (a null value included: "explicitly off" differs from "default").</summary>
    public bool Contains(string key) => root.TryGetProperty(key, out _);

    public bool HasNonNull(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public string? FirstArchitecture()
    {
        if (!root.TryGetProperty("architectures", out var a) || a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0)
        {
            return null;
        }
        return a[0].ValueKind == JsonValueKind.String ? a[0].GetString() : throw Invalid("architectures", "a list of strings");
    }

    /// <summary>The nested object under <paramref name="key"/>, or null when absent or null.</summary>
    public ConfigReader? OptionalObject(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Object ? new ConfigReader(v, source, prefix + key + ".") : throw Invalid(key, "an object");
    }

    /// <summary>A list of strings, or null when absent or null.</summary>
    public IReadOnlyList<string>? OptionalStrings(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Array) throw Invalid(key, "a list of strings");
        var list = new List<string>(v.GetArrayLength());
        foreach (var item in v.EnumerateArray())
        {
            list.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw Invalid(key, "a list of strings"));
        }
        return list;
    }

    public int RequiredInt(string key) =>
        OptionalInt(key) ?? throw new ModelConfigException($"{source}: missing required key '{Name(key)}'");

    public int? OptionalInt(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i)) return i;
        // A list of eos ids is legal in newer configs: the first is the canonical one.
        if (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0 && v[0].TryGetInt32(out var first)) return first;
        throw Invalid(key, "an integer");
    }

    public float? OptionalFloat(string key) => OptionalDouble(key) is { } d ? (float)d : null;

    public double? OptionalDouble(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw Invalid(key, "a number");
    }

    public double RequiredDouble(string key) =>
        OptionalDouble(key) ?? throw new ModelConfigException($"{source}: missing required key '{Name(key)}'");

    public bool? OptionalBool(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Invalid(key, "true or false"),
        };
    }

    public string? OptionalString(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Invalid(key, "a string");
    }

    /// <summary>A refusal naming this key: the file says something the engine does not serve.</summary>
    public ModelConfigException Unsupported(string key, string what) => new($"{source}: {Name(key)}: {what}");

    private ModelConfigException Invalid(string key, string expected) =>
        new($"{source}: key '{Name(key)}' must be {expected}");
}
