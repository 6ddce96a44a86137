using Serving.Checkpoints.Hub;
using Serving.Tests.Shared;
using Xunit;

namespace Serving.Checkpoints.Tests.Hub;

/// <summary>
/// Checkpoints in the Hugging Face cache layout (blobs + snapshots of symbolic links + refs), model ids resolved in it as
/// <c>transformers</c> does offline, and dangling links refused by name.
/// </summary>
public sealed class HubCacheTests : IDisposable
{
    private const string Config = """
        {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2,
         "n_positions": 64, "vocab_size": 50, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
        """;

    private static readonly float[] Weights = [.. Enumerable.Range(0, 4096).Select(i => i * 0.25f - 7f)];

    private readonly HubCacheLayout _cache = new();
    private readonly string _source = Directory.CreateTempSubdirectory("hub-source-").FullName;

    public HubCacheTests()
    {
        File.WriteAllText(Path.Combine(_source, "config.json"), Config);
        SafetensorsWriter.Write(Path.Combine(_source, "model.safetensors"), [SafetensorsWriter.Entry.F32("w", [64, 64], Weights)]);
    }

    private HubCache Cache => new(_cache.Root, "the test");

    [Fact]
    public void SafetensorsOpen_ThroughSymbolicLink_ReadsTheTargetNotTheLink()
    {
        var link = Path.Combine(_source, "linked.safetensors");
        File.CreateSymbolicLink(link, "model.safetensors");
        // What the old reader took as the file's length: the link's own (its target's name), far shorter than the file.
        Assert.NotEqual(new FileInfo(Path.Combine(_source, "model.safetensors")).Length, new FileInfo(link).Length);

        using var file = SafetensorsFile.Open(link);
        Assert.Equal(Weights, file.ReadFloat32("w", [64, 64]));
    }

    [Fact]
    public void Locate_OrgName_FollowsRefsMainToTheSnapshotOfLinks()
    {
        var commit = HubCacheLayout.Commit("a");
        var snapshot = _cache.AddSnapshot("org/tiny", commit, _source);
        Assert.NotNull(new FileInfo(Path.Combine(snapshot, "model.safetensors")).LinkTarget);

        var location = CheckpointLocator.Locate("org/tiny", Cache);

        Assert.Equal(snapshot, location.Directory);
        Assert.Equal(new HubModelId("org/tiny", null), location.HubId);
        using var folder = CheckpointFolder.Open(location.Directory);
        Assert.Equal(16, folder.Config.HiddenSize);
        Assert.Equal(Weights, folder.ReadFloat32("w", 64, 64));
    }

    [Fact]
    public void Locate_Revisions_BranchThroughRefsAndCommitHashDirectly()
    {
        var first = HubCacheLayout.Commit("first");
        var second = HubCacheLayout.Commit("second");
        var third = HubCacheLayout.Commit("third");
        _cache.AddSnapshot("org/tiny", first, _source);                  // refs/main → first
        _cache.AddSnapshot("org/tiny", second, _source, branch: "v2");   // refs/v2 → second
        _cache.AddSnapshot("org/tiny", third, _source, branch: null);    // no ref names it
        _cache.SetRef("org/tiny", "refs/pr/1", second);

        string Snapshot(string commit) => Path.Combine(_cache.RepoFolder("org/tiny"), "snapshots", commit);
        Assert.Equal(Snapshot(first), CheckpointLocator.Locate("org/tiny", Cache).Directory);
        Assert.Equal(Snapshot(first), CheckpointLocator.Locate("org/tiny@main", Cache).Directory);
        Assert.Equal(Snapshot(second), CheckpointLocator.Locate("org/tiny@v2", Cache).Directory);
        Assert.Equal(Snapshot(second), CheckpointLocator.Locate("org/tiny@refs/pr/1", Cache).Directory);
        Assert.Equal(Snapshot(third), CheckpointLocator.Locate($"org/tiny@{third}", Cache).Directory);
        Assert.Equal(Snapshot(second), CheckpointLocator.Locate($"org/tiny@{second}", Cache).Directory);
    }

    [Fact]
    public void Locate_MissingModelOrRevision_SaysWhereItLooked()
    {
        var commit = HubCacheLayout.Commit("a");
        _cache.AddSnapshot("org/tiny", commit, _source);

        var absent = Assert.Throws<HubModelNotFoundException>(() => CheckpointLocator.Locate("org/absent", Cache));
        Assert.Contains(Path.Combine(_cache.Root, "models--org--absent"), absent.Message);
        Assert.Contains("the test", absent.Message);
        Assert.Contains("huggingface-cli download org/absent", absent.Message);

        var branch = Assert.Throws<HubModelNotFoundException>(() => CheckpointLocator.Locate("org/tiny@nope", Cache));
        Assert.Contains(Path.Combine(_cache.RepoFolder("org/tiny"), "refs", "nope"), branch.Message);

        // A ref naming a snapshot that is gone.
        var gone = HubCacheLayout.Commit("gone");
        _cache.SetRef("org/tiny", "stale", gone);
        var stale = Assert.Throws<HubModelNotFoundException>(() => CheckpointLocator.Locate("org/tiny@stale", Cache));
        Assert.Contains(Path.Combine(_cache.RepoFolder("org/tiny"), "snapshots", gone), stale.Message);
        Assert.Equal(Path.Combine(_cache.RepoFolder("org/tiny"), "snapshots", gone), stale.LookedAt);
    }

    [Fact]
    public void Locate_ExistingRelativeFolder_WinsOverTheSameId()
    {
        var org = "hubtest" + Guid.NewGuid().ToString("N")[..8];
        var relative = org + "/model";
        var folder = Directory.CreateDirectory(Path.Combine(Directory.GetCurrentDirectory(), org, "model")).FullName;
        try
        {
            _cache.AddSnapshot(relative, HubCacheLayout.Commit("a"), _source); // the cache has the same id
            var location = CheckpointLocator.Locate(relative, Cache);
            Assert.Equal(relative, location.Directory);
            Assert.Null(location.HubId);
            Assert.False(CheckpointLocator.IsHubId(relative, out _));

            // An absolute path, existing or not, is never an id.
            Assert.Equal(_source, CheckpointLocator.Locate(_source, Cache).Directory);
            Assert.Null(CheckpointLocator.Locate("/no/such/folder", Cache).HubId);
        }
        finally
        {
            Directory.Delete(Path.Combine(Directory.GetCurrentDirectory(), org), recursive: true);
        }
    }

    [Fact]
    public void CheckpointFolderOpen_DanglingWeightsLink_RefusedNamingTheLink()
    {
        var snapshot = _cache.AddSnapshot("org/tiny", HubCacheLayout.Commit("a"), _source);
        var link = HubCacheLayout.BreakLink(snapshot, "model.safetensors");

        var e = Assert.Throws<DanglingLinkException>(() => CheckpointFolder.Open(snapshot).Dispose());
        Assert.Equal(link, e.Path);
        Assert.Contains($"'{link}' is a symbolic link to", e.Message);
        Assert.Contains(".incomplete", e.Message);
        Assert.Throws<DanglingLinkException>(() => SafetensorsFile.Open(link).Dispose());
    }

    [Fact]
    public void CheckpointFolderOpen_DanglingConfigLink_RefusedNamingTheLink()
    {
        var snapshot = _cache.AddSnapshot("org/tiny", HubCacheLayout.Commit("a"), _source);
        var link = HubCacheLayout.BreakLink(snapshot, "config.json");

        var e = Assert.Throws<DanglingLinkException>(() => CheckpointFolder.Open(snapshot).Dispose());
        Assert.Equal(link, e.Path);
        var config = Assert.Throws<ModelConfigException>(() => ModelConfig.Load(link));
        Assert.Contains($"'{link}' is a symbolic link to", config.Message);
    }

    [Fact]
    public void LinkedFiles_LinkCycle_RefusedNamingTheLink()
    {
        var a = Path.Combine(_source, "a.json");
        var b = Path.Combine(_source, "b.json");
        File.CreateSymbolicLink(a, b);
        File.CreateSymbolicLink(b, a);
        var e = Assert.Throws<DanglingLinkException>(() => LinkedFiles.ReadAllBytes(a));
        Assert.Equal(a, e.Path);
        Assert.False(LinkedFiles.Exists(Path.Combine(_source, "absent.json")));
        Assert.True(LinkedFiles.Exists(Path.Combine(_source, "config.json")));
    }

    [Fact]
    public void LinkedFiles_SnapshotReachedThroughAFolderLink_FollowsRelativeLinksFromTheRealFolder()
    {
        // adapters/tiny → snapshots/<rev>, whose files link to ../../blobs: resolved from the snapshot, not from adapters/.
        var snapshot = _cache.AddSnapshot("org/tiny", HubCacheLayout.Commit("a"), _source);
        var linked = Path.Combine(_source, "linked-snapshot");
        Directory.CreateSymbolicLink(linked, snapshot);
        Assert.True(LinkedFiles.Exists(Path.Combine(linked, "model.safetensors")));
        using (var folder = CheckpointFolder.Open(linked)) Assert.Equal(Weights, folder.ReadFloat32("w", 64, 64));

        HubCacheLayout.BreakLink(snapshot, "config.json");
        var e = Assert.Throws<DanglingLinkException>(() => LinkedFiles.Exists(Path.Combine(linked, "config.json")));
        Assert.Equal(Path.Combine(linked, "config.json"), e.Path);
    }

    [Fact]
    public void FromEnvironment_HfHubCacheThenHfHomeThenXdgThenHome()
    {
        HubCache From(params (string Name, string Value)[] vars) =>
            HubCache.FromEnvironment(name => vars.FirstOrDefault(v => v.Name == name).Value);

        var all = From(("HF_HUB_CACHE", "/c/hub"), ("HF_HOME", "/h"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u"));
        Assert.Equal("/c/hub", all.Root);
        Assert.Equal("HF_HUB_CACHE", all.RootSource);
        Assert.Equal("/legacy", From(("HUGGINGFACE_HUB_CACHE", "/legacy"), ("HF_HOME", "/h")).Root);
        Assert.Equal("/h/hub", From(("HF_HOME", "/h"), ("XDG_CACHE_HOME", "/x")).Root);
        Assert.Equal("/x/huggingface/hub", From(("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")).Root);
        Assert.Equal("/home/u/.cache/huggingface/hub", From(("HOME", "/home/u")).Root);
        Assert.Equal("/home/u/models/hub", From(("HF_HOME", "~/models"), ("HOME", "/home/u")).Root);
        Assert.Equal("/home/u/.cache/huggingface/hub", From(("HF_HUB_CACHE", ""), ("HOME", "/home/u")).Root); // empty = unset
    }

    [Theory]
    [InlineData("org/name", "org/name", null)]
    [InlineData("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M", null)]
    [InlineData("TinyLlama/TinyLlama-1.1B-Chat-v1.0@main", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "main")]
    [InlineData("org/name@refs/pr/1", "org/name", "refs/pr/1")]
    [InlineData("org/name@0123456789abcdef0123456789abcdef01234567", "org/name", "0123456789abcdef0123456789abcdef01234567")]
    public void TryParse_ModelIds_Accepted(string text, string repo, string? revision)
    {
        Assert.True(HubModelId.TryParse(text, out var id));
        Assert.Equal(repo, id.Repo);
        Assert.Equal(revision, id.Revision);
        Assert.Equal(text, id.ToString());
    }

    [Theory]
    [InlineData("name")]
    [InlineData("/abs/org/name")]
    [InlineData("./org/name")]
    [InlineData("a/b/c")]
    [InlineData("org/name@")]
    [InlineData("org/na--me")]
    [InlineData("org/..")]
    [InlineData("-org/name")]
    [InlineData("org/name.")]
    [InlineData("org/name@../../etc")]
    [InlineData("org/name@/abs")]
    [InlineData("org/name@a b")]
    public void TryParse_PathsAndMalformedIds_Refused(string text) => Assert.False(HubModelId.TryParse(text, out _));

    public void Dispose()
    {
        _cache.Dispose();
        Directory.Delete(_source, recursive: true);
    }
}
