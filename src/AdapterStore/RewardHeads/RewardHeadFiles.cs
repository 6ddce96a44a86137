using System.Formats.Tar;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;
using Serving.Checkpoints.RewardHeads;

namespace Serving.AdapterStore.RewardHeads;

/// <summary>
/// The two files of a reward head, however they arrived: <c>config.json</c> and its tensors, <c>head.safetensors</c>
/// (head-only form, <c>kind: reward-head</c>) or <c>otter.safetensors</c> (full Otter form, <c>kind: otter-side-network</c>).
/// Stored as they were uploaded, in a tar (the payload), so every reader validates the same bytes against its own base.
/// </summary>
/// <param name="ConfigJson">config.json.</param>
/// <param name="Tensors">The safetensors file.</param>
/// <param name="TensorsName">Its file name (<see cref="HeadTensorsName"/> or <see cref="OtterTensorsName"/>).</param>
public sealed record RewardHeadFiles(byte[] ConfigJson, byte[] Tensors, string TensorsName)
{
    /// <summary>Config file name.</summary>
    public const string ConfigName = "config.json";

    /// <summary>Tensors of the head-only form.</summary>
    public const string HeadTensorsName = "head.safetensors";

    /// <summary>Tensors of the full Otter form.</summary>
    public const string OtterTensorsName = "otter.safetensors";

    /// <summary>True when config.json declares the full Otter form.</summary>
    public bool IsOtter => OtterReader.IsOtter(ConfigJson);

    /// <summary>Checks that both files are present and nothing pickled was sent (400s naming the missing file).</summary>
    public static RewardHeadFiles From(byte[]? config, byte[]? tensors, string? tensorsName, bool sawPickle)
    {
        if (tensors is null && sawPickle)
        {
            throw new AdapterValidationException(AdapterErrors.PickleRefused,
                $"Pickled tensors (.bin, .pt) run arbitrary code on load; upload {HeadTensorsName} (or {OtterTensorsName}) instead.", status: 400);
        }
        if (config is null) throw new AdapterValidationException(RewardHeadErrors.ConfigMissing, $"The upload has no {ConfigName}; send it as a file part named {ConfigName}.", status: 400);
        if (tensors is null)
        {
            throw new AdapterValidationException(RewardHeadErrors.TensorsMissing,
                $"The upload has no tensors; send {HeadTensorsName} (head-only form) or {OtterTensorsName} (Otter form) as a file part.", status: 400);
        }
        return new RewardHeadFiles(config, tensors, tensorsName ?? HeadTensorsName);
    }

    /// <summary>Reads a head folder: <c>config.json</c> and <c>head.safetensors</c> or <c>otter.safetensors</c>.</summary>
    public static RewardHeadFiles ReadFolder(string folder)
    {
        var config = Path.Combine(folder, ConfigName);
        var tensors = new[] { HeadTensorsName, OtterTensorsName }.Select(n => Path.Combine(folder, n)).FirstOrDefault(LinkedFiles.Exists);
        return From(LinkedFiles.Exists(config) ? LinkedFiles.ReadAllBytes(config) : null, tensors is null ? null : LinkedFiles.ReadAllBytes(tensors),
            tensors is null ? null : Path.GetFileName(tensors), sawPickle: false);
    }

    /// <summary>The stored payload: a tar of the two files, the same bytes for the same files (ustar, fixed times and modes).</summary>
    public byte[] ToPayload()
    {
        using var ms = new MemoryStream();
        using (var writer = new TarWriter(ms, TarEntryFormat.Ustar, leaveOpen: true))
        {
            foreach (var (name, data) in new[] { (ConfigName, ConfigJson), (TensorsName, Tensors) })
            {
                writer.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, name)
                {
                    DataStream = new MemoryStream(data),
                    ModificationTime = DateTimeOffset.UnixEpoch,
                    Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
                });
            }
        }
        return ms.ToArray();
    }

    /// <summary>The files of a stored payload; <see cref="InvalidDataException"/> when it is not one.</summary>
    public static RewardHeadFiles FromPayload(byte[] payload)
    {
        byte[]? config = null, tensors = null;
        string? tensorsName = null;
        try
        {
            using var reader = new TarReader(new MemoryStream(payload));
            while (reader.GetNextEntry() is { } e)
            {
                if (e.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || e.DataStream is null) continue;
                using var ms = new MemoryStream();
                e.DataStream.CopyTo(ms);
                if (e.Name == ConfigName) config = ms.ToArray();
                else if (e.Name is HeadTensorsName or OtterTensorsName)
                {
                    tensors = ms.ToArray();
                    tensorsName = e.Name;
                }
            }
        }
        catch (Exception e) when (e is FormatException or EndOfStreamException)
        {
            throw new InvalidDataException($"the payload is not a reward head archive: {e.Message}", e);
        }
        if (config is null || tensors is null) throw new InvalidDataException($"the payload lacks {(config is null ? ConfigName : "the tensors file")}");
        return new RewardHeadFiles(config, tensors, tensorsName!);
    }
}

/// <summary>Stable codes of refused reward-head uploads (besides the readers' <see cref="RewardHeadFormatException"/> codes and reasons).</summary>
public static class RewardHeadErrors
{
    /// <summary>config.json is missing.</summary>
    public const string ConfigMissing = "head_config_missing";

    /// <summary>Neither head.safetensors nor otter.safetensors was sent.</summary>
    public const string TensorsMissing = "head_tensors_missing";

    /// <summary>The base model has no config.json known to the store, so heads cannot be validated against it.</summary>
    public const string BaseConfigUnknown = "base_config_unknown";
}
