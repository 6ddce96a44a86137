namespace Serving.Checkpoints.Hub;

/// <summary>
/// The local Hugging Face hub cache, read as <c>huggingface_hub</c> lays it out and as <c>transformers</c> reads it in
/// offline mode: <c>&lt;root&gt;/models--org--name/refs/&lt;revision&gt;</c> holds a commit hash and
/// <c>snapshots/&lt;commit&gt;/</c> the checkpoint's files (symbolic links into <c>blobs/</c>). Nothing is downloaded.
/// </summary>
public sealed class HubCache
{
    /// <summary>Uses the cache at <paramref name="root"/>; <paramref name="rootSource"/> says where that came from (for messages).</summary>
    public HubCache(string root, string rootSource)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        Root = Path.GetFullPath(ExpandHome(root, null));
        RootSource = rootSource;
    }

    /// <summary>The cache folder (holding <c>models--org--name</c> folders).</summary>
    public string Root { get; }

    /// <summary>How <see cref="Root"/> was chosen: an environment variable, the default, or a setting.</summary>
    public string RootSource { get; }

    /// <summary>
    /// The cache <c>huggingface_hub</c> uses: <c>HF_HUB_CACHE</c> (or its older name <c>HUGGINGFACE_HUB_CACHE</c>),
    /// else <c>HF_HOME/hub</c>, else <c>$XDG_CACHE_HOME/huggingface/hub</c>, else <c>~/.cache/huggingface/hub</c>.
    /// <paramref name="environment"/> reads a variable (default: the process environment).
    /// </summary>
    public static HubCache FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string? Var(string name) => environment(name) is { Length: > 0 } v ? v : null;
        if (Var("HF_HUB_CACHE") is { } hub) return new HubCache(ExpandHome(hub, environment), "HF_HUB_CACHE");
        if (Var("HUGGINGFACE_HUB_CACHE") is { } legacy) return new HubCache(ExpandHome(legacy, environment), "HUGGINGFACE_HUB_CACHE");
        if (Var("HF_HOME") is { } home) return new HubCache(Path.Combine(ExpandHome(home, environment), "hub"), "HF_HOME/hub");
        if (Var("XDG_CACHE_HOME") is { } xdg) return new HubCache(Path.Combine(ExpandHome(xdg, environment), "huggingface", "hub"), "XDG_CACHE_HOME/huggingface/hub");
        return new HubCache(Path.Combine(Home(environment), ".cache", "huggingface", "hub"), "the default ~/.cache/huggingface/hub");
    }

    /// <summary>
    /// The snapshot folder of <paramref name="id"/>: <c>refs/&lt;revision&gt;</c> names its commit, or the revision is
    /// itself a commit with a snapshot folder (as <c>huggingface_hub.try_to_load_from_cache</c> resolves). Throws
    /// <see cref="HubModelNotFoundException"/> saying which path it looked for.
    /// </summary>
    public string Resolve(HubModelId id)
    {
        var repo = Path.Combine(Root, id.CacheFolderName);
        var revision = id.EffectiveRevision;
        var refFile = Path.Combine(repo, "refs", revision);
        string commit;
        if (LinkedFiles.Exists(refFile))
        {
            commit = File.ReadAllText(refFile).Trim();
            if (commit.Length == 0 || commit.Contains('/', StringComparison.Ordinal) || commit.Contains('\\', StringComparison.Ordinal) || commit.Contains("..", StringComparison.Ordinal))
            {
                throw NotFound(id, refFile, $"{refFile} does not hold a commit hash (read '{commit}')");
            }
        }
        else
        {
            commit = revision;
        }
        var snapshot = Path.Combine(repo, "snapshots", commit);
        LinkedFiles.ThrowIfDangling(snapshot);
        if (Directory.Exists(snapshot)) return snapshot;
        var detail = !Directory.Exists(repo)
            ? $"no {repo}"
            : commit == revision
                ? $"neither {refFile} nor {snapshot} exists"
                : $"{refFile} names commit {commit}, but {snapshot} does not exist";
        throw NotFound(id, snapshot, detail);
    }

    private HubModelNotFoundException NotFound(HubModelId id, string lookedAt, string detail) =>
        new(id, lookedAt,
            $"Model '{id}' is not in the Hugging Face cache at {Root} (from {RootSource}): {detail}. The cache is read as in "
            + "offline mode and nothing is downloaded: fetch the model first (e.g. `huggingface-cli download " + id.Repo
            + (id.Revision is null ? "" : " --revision " + id.Revision) + "`), point HF_HUB_CACHE or HF_HOME at the cache that holds it, "
            + "or give the checkpoint folder's path.");

    private static string Home(Func<string, string?>? environment) =>
        (environment ?? Environment.GetEnvironmentVariable)("HOME") is { Length: > 0 } home ? home : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);

    private static string ExpandHome(string path, Func<string, string?>? environment) =>
        path == "~" ? Home(environment)
        : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(Home(environment), path[2..])
        : path;
}

/// <summary>A model id that the local Hugging Face cache does not hold (at that revision).</summary>
public sealed class HubModelNotFoundException : DirectoryNotFoundException
{
    /// <summary>Creates the exception; <paramref name="message"/> says where the cache is and what was missing.</summary>
    public HubModelNotFoundException(HubModelId modelId, string lookedAt, string message) : base(message)
    {
        ModelId = modelId;
        LookedAt = lookedAt;
    }

    /// <summary>The id asked for.</summary>
    public HubModelId ModelId { get; }

    /// <summary>The path that was missing.</summary>
    public string LookedAt { get; }
}
