using System.Formats.Tar;
using System.IO.Compression;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Ingest;

/// <summary>The two files of a PEFT folder, however they arrived.</summary>
/// <param name="ConfigJson">adapter_config.json.</param>
/// <param name="Safetensors">adapter_model.safetensors.</param>
public sealed record PeftFiles(byte[] ConfigJson, byte[] Safetensors)
{
    /// <summary>Config file name inside a PEFT folder.</summary>
    public const string ConfigName = "adapter_config.json";
    /// <summary>Weights file name inside a PEFT folder.</summary>
    public const string WeightsName = "adapter_model.safetensors";

    /// <summary>Checks that both files are present and nothing pickled was sent.</summary>
    public static PeftFiles From(byte[]? config, byte[]? weights, bool sawPickle)
    {
        if (weights is null && sawPickle)
            throw new AdapterValidationException(AdapterErrors.PickleRefused,
                "adapter_model.bin is a pickle (arbitrary code on load); upload adapter_model.safetensors instead (peft saves it by default).", status: 400);
        if (config is null) throw new AdapterValidationException(AdapterErrors.ConfigMissing, $"The upload has no {ConfigName}.", status: 400);
        if (weights is null) throw new AdapterValidationException(AdapterErrors.WeightsMissing, $"The upload has no {WeightsName}.", status: 400);
        return new PeftFiles(config, weights);
    }

    /// <summary>A tar of the two files, as kept for audit and re-compression.</summary>
    public byte[] ToTar()
    {
        using var ms = new MemoryStream();
        using (var writer = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var (name, data) in new[] { (ConfigName, ConfigJson), (WeightsName, Safetensors) })
            {
                var entry = new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(data) };
                writer.WriteEntry(entry);
            }
        }
        return ms.ToArray();
    }
}

/// <summary>Reads a PEFT folder from a .tar or .zip, refusing entries that escape the folder, links, and oversized contents.</summary>
public static class PeftArchive
{
    /// <summary>Extracts the two files (at the root or inside one top-level folder).</summary>
    public static PeftFiles Read(byte[] archive, long maxBytes)
    {
        bool zip = archive.Length >= 4 && archive[0] == (byte)'P' && archive[1] == (byte)'K';
        byte[]? config = null, weights = null;
        bool pickle = false;
        long total = 0;
        void Take(string rawName, bool isLink, bool isDirectory, Func<Stream?> open, long declared)
        {
            string name = CheckName(rawName, isLink);
            if (isDirectory) return;
            string file = name.Contains('/') ? name[(name.LastIndexOf('/') + 1)..] : name;
            bool wanted = file is PeftFiles.ConfigName or PeftFiles.WeightsName;
            if (file == "adapter_model.bin") pickle = true;
            if (!wanted) return;
            if (declared > maxBytes) throw TooLarge(maxBytes);
            using var s = open() ?? Stream.Null;
            var data = ReadLimited(s, maxBytes - total, maxBytes);
            total += data.Length;
            if (file == PeftFiles.ConfigName)
            {
                if (config is not null) throw new AdapterValidationException(AdapterErrors.ArchiveInvalid, $"The archive holds more than one {PeftFiles.ConfigName}.", status: 400);
                config = data;
            }
            else
            {
                if (weights is not null) throw new AdapterValidationException(AdapterErrors.ArchiveInvalid, $"The archive holds more than one {PeftFiles.WeightsName}.", status: 400);
                weights = data;
            }
        }
        try
        {
            if (zip)
            {
                using var z = new ZipArchive(new MemoryStream(archive), ZipArchiveMode.Read);
                foreach (var e in z.Entries)
                {
                    bool dir = e.FullName.EndsWith('/');
                    // Unix symlinks in zips carry S_IFLNK in the high bits of the external attributes.
                    bool link = ((e.ExternalAttributes >> 16) & 0xF000) == 0xA000;
                    Take(e.FullName, link, dir, () => dir ? null : e.Open(), e.Length);
                }
            }
            else
            {
                using var reader = new TarReader(new MemoryStream(archive));
                while (reader.GetNextEntry() is { } e)
                {
                    bool link = e.EntryType is TarEntryType.SymbolicLink or TarEntryType.HardLink;
                    bool dir = e.EntryType == TarEntryType.Directory;
                    if (!link && !dir && e.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile)) continue;
                    Take(e.Name, link, dir, () => e.DataStream, e.Length);
                }
            }
        }
        catch (InvalidDataException e)
        {
            throw new AdapterValidationException(AdapterErrors.ArchiveInvalid, $"The archive cannot be read: {e.Message}", status: 400);
        }
        catch (FormatException e)
        {
            throw new AdapterValidationException(AdapterErrors.ArchiveInvalid, $"The archive cannot be read: {e.Message}", status: 400);
        }
        catch (EndOfStreamException)
        {
            throw new AdapterValidationException(AdapterErrors.ArchiveInvalid, "The archive is truncated.", status: 400);
        }
        return PeftFiles.From(config, weights, pickle);
    }

    private static string CheckName(string name, bool isLink)
    {
        string n = name.Replace('\\', '/');
        if (isLink)
            throw new AdapterValidationException(AdapterErrors.ArchivePathTraversal, $"Archive entry '{name}' is a link; links are refused.", status: 400);
        if (n.StartsWith('/') || (n.Length > 1 && n[1] == ':') || n.Split('/').Any(p => p == ".."))
            throw new AdapterValidationException(AdapterErrors.ArchivePathTraversal, $"Archive entry '{name}' escapes the adapter folder.", status: 400);
        return n.StartsWith("./", StringComparison.Ordinal) ? n[2..] : n;
    }

    private static byte[] ReadLimited(Stream s, long remaining, long max)
    {
        using var ms = new MemoryStream();
        var buffer = new byte[81920];
        int read;
        while ((read = s.Read(buffer)) > 0)
        {
            if (ms.Length + read > remaining) throw TooLarge(max);
            ms.Write(buffer, 0, read);
        }
        return ms.ToArray();
    }

    internal static AdapterValidationException TooLarge(long max) =>
        new(AdapterErrors.TooLarge, $"The upload exceeds the limit of {max} bytes.", status: 413);
}
