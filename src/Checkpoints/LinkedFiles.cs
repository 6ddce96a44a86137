namespace Serving.Checkpoints;

/// <summary>
/// Files that may be symbolic links, as every file of the Hugging Face cache is
/// (<c>snapshots/&lt;rev&gt;/model.safetensors → ../../blobs/&lt;sha&gt;</c>). Opening a link reads its target, but
/// on Linux <see cref="FileInfo.Length"/> describes the link itself and <see cref="File.Exists"/> is true for a link whose
/// target is gone; so readers take lengths from the opened handle and check links here, where a dangling one becomes a
/// <see cref="DanglingLinkException"/> naming the link and its target instead of a "not found" or a wrong length.
/// </summary>
public static class LinkedFiles
{
    /// <summary>
    /// True when a file (or, through a link, a file or folder) is at <paramref name="path"/>; false when nothing is there;
    /// a <see cref="DanglingLinkException"/> when <paramref name="path"/> is a link whose final target does not exist.
    /// </summary>
    public static bool Exists(string path)
    {
        ThrowIfDangling(path);
        return File.Exists(path);
    }

    /// <summary>Throws <see cref="DanglingLinkException"/> when <paramref name="path"/> is a symbolic link (of a file or a folder) whose final target does not exist.</summary>
    public static void ThrowIfDangling(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var target = new FileInfo(path).LinkTarget;
        if (target is null) return; // not a link, or nothing there
        // Ask the OS, which follows the whole chain: .NET's ResolveLinkTarget resolves a relative target against the
        // link's path as written, which is wrong when a folder above it is itself a link (an adapter folder linked to a
        // cache snapshot whose files link to ../../blobs).
        if (Directory.Exists(path)) return;
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new DanglingLinkException(path, target, null);
        }
        catch (IOException e)
        {
            // A cycle (ELOOP) or a chain too long to follow.
            throw new DanglingLinkException(path, target, e.Message);
        }
        catch (UnauthorizedAccessException)
        {
            // The target exists; reading it fails later with its own message.
        }
    }

    /// <summary><see cref="File.ReadAllBytes"/> after <see cref="ThrowIfDangling"/>.</summary>
    public static byte[] ReadAllBytes(string path)
    {
        ThrowIfDangling(path);
        return File.ReadAllBytes(path);
    }

    /// <summary><see cref="File.ReadAllText(string)"/> after <see cref="ThrowIfDangling"/>.</summary>
    public static string ReadAllText(string path)
    {
        ThrowIfDangling(path);
        return File.ReadAllText(path);
    }

    /// <summary><see cref="File.ReadAllBytesAsync"/> after <see cref="ThrowIfDangling"/>.</summary>
    public static Task<byte[]> ReadAllBytesAsync(string path, CancellationToken cancellationToken = default)
    {
        ThrowIfDangling(path);
        return File.ReadAllBytesAsync(path, cancellationToken);
    }
}

/// <summary>A symbolic link whose target does not exist (a Hugging Face cache whose blob was deleted or never finished downloading).</summary>
public sealed class DanglingLinkException : FileNotFoundException
{
    /// <summary>Creates the exception for <paramref name="path"/> pointing at <paramref name="target"/>.</summary>
    public DanglingLinkException(string path, string target, string? reason)
        : base($"'{path}' is a symbolic link to '{target}', which {(reason is null ? "does not exist" : $"cannot be followed ({reason})")}; "
            + "restore the target (for the Hugging Face cache: download the model again) or replace the link with the file.", path)
    {
        Path = path;
        Target = target;
    }

    /// <summary>The link.</summary>
    public string Path { get; }

    /// <summary>Where it points, as the link stores it (relative to the link's real folder).</summary>
    public string Target { get; }
}
