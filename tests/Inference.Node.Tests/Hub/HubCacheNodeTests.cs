using System.Collections.Concurrent;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Tests.Http;
using Serving.Tests.Shared;
using Xunit;

namespace Serving.Inference.Node.Tests.Hub;

/// <summary>
/// A node started with <c>--Node:ModelPath=org/name</c> on the exact Hugging Face cache layout (every file a symbolic
/// link into <c>blobs/</c>, <c>refs/main</c> naming the snapshot), serving adapters whose folders are links into the
/// cache's snapshots: the same logprobs and text as the node on the plain demo folder (<see cref="EchoFixture"/>), dangling
/// links refused by name, and ids that are not in the cache refused saying where the node looked.
/// </summary>
public sealed class HubCacheNodeTests(EchoFixture fx) : IClassFixture<EchoFixture>, IDisposable
{
    private const string Repo = "serving-demo/demo";
    private static readonly string Commit = HubCacheLayout.Commit("demo-main");

    private readonly HubCacheLayout _cache = new();
    private readonly string _adapters = Directory.CreateTempSubdirectory("hub-adapters-").FullName;

    /// <summary>The model's own files, as a Hub repo holds them (not the adapters, heads and dumps beside it).</summary>
    private static bool ModelFile(string relative) => !relative.Contains('/', StringComparison.Ordinal) && relative != "forge-results.json";

    private string AddModel() => _cache.AddSnapshot(Repo, Commit, EchoFixture.Demo, include: ModelFile);

    /// <summary>An adapter repo in the cache, and a link to its snapshot in the adapter folder.</summary>
    private string AddAdapter(string name)
    {
        var snapshot = _cache.AddSnapshot($"serving-demo/demo-{name}", HubCacheLayout.Commit(name), Path.Combine(EchoFixture.Demo, "adapters", name));
        Directory.CreateSymbolicLink(Path.Combine(_adapters, name), snapshot);
        return snapshot;
    }

    private Dictionary<string, string?> Settings(string modelPath) => new()
    {
        ["Node:ModelPath"] = modelPath,
        ["Node:ModelId"] = null, // the id's org/name
        ["Node:HubCache"] = _cache.Root,
        ["Node:MaxContext"] = EchoFixture.Context.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Node:AdapterDirectory"] = _adapters,
    };

    private static async Task<JsonObject> OkAsync(HttpClient http, string path, object body)
    {
        using var response = await http.SendAsync(Sse.Post(path, body));
        var json = await Sse.JsonAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path}: {(int)response.StatusCode} {json.ToJsonString()}");
        return json;
    }

    [Fact]
    public async Task ModelPathId_CacheOfLinks_ServesModelTokenizerTemplateAndAdaptersAsTheFolderDoes()
    {
        AddModel();
        AddAdapter("german");
        var irc = AddAdapter("irc");
        HubCacheLayout.BreakLink(irc, "adapter_model.safetensors");
        var brokenWeights = Path.Combine(_adapters, "irc", "adapter_model.safetensors"); // as the node reads it, through the folder's link
        var goneFolder = Path.Combine(_adapters, "gone");
        Directory.CreateSymbolicLink(goneFolder, Path.Combine(_cache.Root, "models--serving-demo--demo-gone", "snapshots", "0000"));

        await using var node = await NodeServer.StartAsync(Settings(Repo));
        var models = (await Sse.JsonAsync(await node.Http.GetAsync("v1/models")))["data"]!.AsArray().Select(m => (string)m!["id"]!).ToList();
        Assert.Equal([Repo, Repo + ":public/german"], models);

        // Scoring a German text with the base and with the adapter: the same logprobs as the node on the plain folder.
        const string text = "<|endoftext|>Der Hund und die Katze spielen im Garten.";
        foreach (var (model, reference) in new[] { (Repo, "demo"), (Repo + ":public/german", "demo:public/german") })
        {
            var fromCache = await OkAsync(node.Http, "v1/completions", new { model, prompt = text, max_tokens = 0, echo = true, logprobs = 2 });
            var fromFolder = await OkAsync(fx.Server.Http, "v1/completions", new { model = reference, prompt = text, max_tokens = 0, echo = true, logprobs = 2 });
            Assert.Equal(fromFolder["choices"]![0]!["logprobs"]!.ToJsonString(), fromCache["choices"]![0]!["logprobs"]!.ToJsonString());
        }
        var german = await OkAsync(node.Http, "v1/completions", new { model = Repo + ":public/german", prompt = text, max_tokens = 0, echo = true, logprobs = 0 });
        var plain = await OkAsync(node.Http, "v1/completions", new { model = Repo, prompt = text, max_tokens = 0, echo = true, logprobs = 0 });
        Assert.NotEqual(plain["choices"]![0]!["logprobs"]!.ToJsonString(), german["choices"]![0]!["logprobs"]!.ToJsonString());

        // The chat template and tokenizer came through links too.
        var messages = new[] { new { role = "user", content = "Tell me a fortune" } };
        var chatCache = await OkAsync(node.Http, "v1/chat/completions", new { model = Repo, messages, max_tokens = 12, temperature = 0 });
        var chatFolder = await OkAsync(fx.Server.Http, "v1/chat/completions", new { model = "demo", messages, max_tokens = 12, temperature = 0 });
        Assert.Equal((string)chatFolder["choices"]![0]!["message"]!["content"]!, (string)chatCache["choices"]![0]!["message"]!["content"]!);
        Assert.Equal((int)chatFolder["usage"]!["prompt_tokens"]!, (int)chatCache["usage"]!["prompt_tokens"]!);

        // The adapter folders whose links dangle were skipped, each with the link named in the reason.
        var log = new ConcurrentQueue<string>();
        var host = node.Services.GetRequiredService<ModelHost>();
        var loaded = await AdapterHostedService.LoadDirectoryAsync(new LocalAdapterStore(), _adapters, host, new ListLogger(log), CancellationToken.None);
        Assert.Equal(1, loaded);
        Assert.Contains(log, l => l.Contains($"'{brokenWeights}' is a symbolic link to", StringComparison.Ordinal));
        Assert.Contains(log, l => l.Contains($"'{goneFolder}' is a symbolic link to", StringComparison.Ordinal));
    }

    [Fact]
    public void Options_IdByRevisionHash_ResolvesThatSnapshot_AndAMissingIdSaysWhereItLooked()
    {
        var snapshot = AddModel();
        var other = HubCacheLayout.Commit("other");
        var second = _cache.AddSnapshot(Repo, other, EchoFixture.Demo, branch: null, include: ModelFile); // no ref names it

        NodeOptions Options(string path) => new() { ModelPath = path, HubCache = _cache.Root };
        Assert.Equal(snapshot, Options(Repo).LocateCheckpoint().Directory);
        Assert.Equal(second, Options($"{Repo}@{other}").LocateCheckpoint().Directory);
        Assert.Equal(Repo, Options($"{Repo}@{other}").ResolvedModelId);
        Assert.Equal("demo", Options(EchoFixture.Demo).ResolvedModelId); // a folder keeps its name

        var validator = new NodeOptionsValidator(new ConfigurationBuilder().Build());
        Assert.True(validator.Validate(null, Options($"{Repo}@{other}")).Succeeded);
        var missing = validator.Validate(null, Options("serving-demo/absent"));
        Assert.True(missing.Failed);
        Assert.Contains(Path.Combine(_cache.Root, "models--serving-demo--absent"), missing.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("Node:HubCache", missing.FailureMessage, StringComparison.Ordinal);
        var revision = validator.Validate(null, Options($"{Repo}@v9"));
        Assert.Contains(Path.Combine(_cache.RepoFolder(Repo), "refs", "v9"), revision.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_IdNotInTheCache_FailsSayingWhereItLooked()
    {
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => NodeServer.StartAsync(Settings("serving-demo/absent")));
        Assert.Contains(Path.Combine(_cache.Root, "models--serving-demo--absent"), e.Message, StringComparison.Ordinal);
        Assert.Contains("huggingface-cli download serving-demo/absent", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_DanglingWeightsLink_FailsNamingTheLink()
    {
        var snapshot = AddModel();
        var link = HubCacheLayout.BreakLink(snapshot, "model.safetensors");
        var e = await Assert.ThrowsAnyAsync<Exception>(() => NodeServer.StartAsync(Settings(Repo)));
        Assert.Contains($"'{link}' is a symbolic link to", e.ToString(), StringComparison.Ordinal);
    }

    public void Dispose()
    {
        _cache.Dispose();
        Directory.Delete(_adapters, recursive: true);
    }

    private sealed class ListLogger(ConcurrentQueue<string> sink) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            sink.Enqueue(formatter(state, exception));
    }
}
