using System.Security.Cryptography;

namespace Serving.Tests.Shared;

/// <summary>
/// Writes the exact layout <c>huggingface_hub</c> gives a downloaded model, for tests: each file's bytes once in
/// <c>models--org--name/blobs/&lt;sha256&gt;</c>, the checkpoint's files as relative symbolic links
/// <c>snapshots/&lt;commit&gt;/&lt;file&gt; → ../../blobs/&lt;sha256&gt;</c> (one <c>../</c> more per subfolder), and
/// <c>refs/&lt;branch&gt;</c> holding the commit. Linked into the test projects that load from a cache.
/// </summary>
public sealed class HubCacheLayout : IDisposable
{
    /// <summary>Creates an empty cache folder under the temp folder.</summary>
    public HubCacheLayout() => Root = Directory.CreateTempSubdirectory("hf-hub-cache-").FullName;

    /// <summary>The cache folder (what <c>HF_HUB_CACHE</c> names).</summary>
    public string Root { get; }

    /// <summary>A 40-hex commit hash made from <paramref name="seed"/>.</summary>
    public static string Commit(string seed) => Convert.ToHexStringLower(SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(seed)));

    /// <summary>The repo folder <c>models--org--name</c> of <paramref name="repo"/> (<c>org/name</c>).</summary>
    public string RepoFolder(string repo) => Path.Combine(Root, "models--" + repo.Replace("/", "--", StringComparison.Ordinal));

    /// <summary>
    /// Adds every file under <paramref name="source"/> (subfolders included) as snapshot <paramref name="commit"/> of
    /// <paramref name="repo"/>, and points <c>refs/<paramref name="branch"/></c> at it unless <paramref name="branch"/> is
    /// null. <paramref name="include"/> filters relative paths (forward slashes). Returns the snapshot folder.
    /// </summary>
    public string AddSnapshot(string repo, string commit, string source, string? branch = "main", Func<string, bool>? include = null)
    {
        var repoFolder = RepoFolder(repo);
        var blobs = Directory.CreateDirectory(Path.Combine(repoFolder, "blobs")).FullName;
        var snapshot = Directory.CreateDirectory(Path.Combine(repoFolder, "snapshots", commit)).FullName;
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(source, file).Replace('\\', '/');
            if (include is not null && !include(relative)) continue;
            var bytes = File.ReadAllBytes(file);
            var blob = Convert.ToHexStringLower(SHA256.HashData(bytes));
            var blobPath = Path.Combine(blobs, blob);
            if (!File.Exists(blobPath)) File.WriteAllBytes(blobPath, bytes);
            var link = Path.Combine(snapshot, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(link)!);
            var depth = relative.Count(c => c == '/');
            File.CreateSymbolicLink(link, string.Concat(Enumerable.Repeat("../", depth + 2)) + "blobs/" + blob);
        }
        if (branch is not null) SetRef(repo, branch, commit);
        return snapshot;
    }

    /// <summary>Writes <c>refs/<paramref name="branch"/></c> = <paramref name="commit"/> (no newline, as huggingface_hub writes it).</summary>
    public void SetRef(string repo, string branch, string commit)
    {
        var refFile = Path.Combine(RepoFolder(repo), "refs", branch);
        Directory.CreateDirectory(Path.GetDirectoryName(refFile)!);
        File.WriteAllText(refFile, commit);
    }

    /// <summary>
    /// Points a snapshot file's link at a blob that does not exist (an interrupted download, a pruned blob), leaving the
    /// real blob in place for other snapshots; returns the link.
    /// </summary>
    public static string BreakLink(string snapshot, string relative)
    {
        var link = Path.Combine(snapshot, relative);
        var target = new FileInfo(link).LinkTarget ?? throw new InvalidOperationException($"{link} is not a link");
        File.Delete(link);
        File.CreateSymbolicLink(link, target + ".incomplete");
        return link;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A test host still holding a mapped file: the temp folder is cleaned by the OS.
        }
    }
}
