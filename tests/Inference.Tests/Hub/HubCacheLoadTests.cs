using System.Text;
using Serving.Checkpoints;
using Serving.Checkpoints.Hub;
using Serving.Inference.Chat;
using Serving.Inference.Engine;
using Serving.Inference.Runtime;
using Serving.Inference.Tests.Engine;
using Serving.Inference.Tokenization;
using Serving.Tests.Shared;
using Xunit;

namespace Serving.Inference.Tests.Hub;

/// <summary>
/// The demo model laid out as the Hugging Face cache holds a download (every file a symbolic link into <c>blobs/</c>),
/// loaded by its id: logits against the forge's PyTorch dumps, the tokenizer against the forge's ids, the chat template;
/// a dangling tokenizer link is refused by name instead of falling back to another tokenizer.
/// </summary>
public sealed class HubCacheLoadTests : IDisposable
{
    private const string Repo = "serving-demo/demo";

    /// <summary>The model's own files (not the adapters, heads and dumps beside it).</summary>
    internal static bool ModelFile(string relative) => !relative.Contains('/', StringComparison.Ordinal) && relative != "forge-results.json";

    private readonly HubCacheLayout _cache = new();
    private readonly string _snapshot;

    public HubCacheLoadTests() =>
        _snapshot = _cache.AddSnapshot(Repo, HubCacheLayout.Commit("demo"), DemoModelReferenceTests.DemoDirectory, include: ModelFile);

    private string Locate(string id) => CheckpointLocator.Locate(id, new HubCache(_cache.Root, "the test")).Directory;

    [Fact]
    public void LoadById_ModelAndTokenizer_MatchPyTorchAndTheForgesIds()
    {
        var dir = Locate(Repo);
        Assert.Equal(_snapshot, dir);
        Assert.NotNull(new FileInfo(Path.Combine(dir, "tokenizer.json")).LinkTarget);

        using var reference = SafetensorsFile.Open(Path.Combine(DemoModelReferenceTests.DemoDirectory, "reference", "reference.safetensors"));
        using var model = DecoderModel.Load(dir, new RuntimeOptions { MaxBatch = 1, MaxContext = 256 });
        var prompt = reference.Tensors.Keys.First(k => k.EndsWith(".input_ids", StringComparison.Ordinal))[..^".input_ids".Length];
        var ids = reference.ReadInt64(prompt + ".input_ids").Select(x => (int)x).ToArray();
        using var dec = new BatchDecoder(model, 1);
        var logits = new float[ids.Length * model.Config.VocabSize];
        dec.Prefill(dec.TryAllocate()!, ids, allLogits: logits);
        ReferenceLogitsTests.AssertClose(reference.ReadFloat32(prompt + ".logits").Select(x => (double)x).ToArray(), logits, 1e-4, $"{prompt} prefill logits");

        var tokenizer = TokenizerLoader.Load(dir, model.Config.VocabSize);
        Assert.Equal(TokenizerNames.HfBpe, tokenizer.Name);
        foreach (var key in reference.Tensors.Keys.Where(k => k.EndsWith(".text_utf8", StringComparison.Ordinal)))
        {
            var text = Encoding.UTF8.GetString(reference.GetBytes(key));
            Assert.Equal(reference.ReadInt64(key[..^".text_utf8".Length] + ".ids").Select(x => (int)x).ToArray(), tokenizer.Encode(text));
        }

        var messages = new[] { new ChatMessage("user", "Tell me a fortune") };
        Assert.Equal(ChatTemplate.FromCheckpoint(DemoModelReferenceTests.DemoDirectory, out _).Render(messages),
            ChatTemplate.FromCheckpoint(dir, out var isDefault).Render(messages));
        Assert.False(isDefault);
    }

    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("tokenizer_config.json")]
    [InlineData("special_tokens_map.json")]
    public void TokenizerLoad_DanglingLink_RefusedNamingTheLink(string file)
    {
        var link = HubCacheLayout.BreakLink(_snapshot, file);
        var e = Assert.Throws<TokenizerFormatException>(() => TokenizerLoader.Load(_snapshot, 4096));
        Assert.Equal(link, e.FilePath);
        Assert.Contains($"'{link}' is a symbolic link to", e.Message);
    }

    [Fact]
    public void ChatTemplate_DanglingConfigLink_RefusedNamingTheLink()
    {
        var link = HubCacheLayout.BreakLink(_snapshot, "tokenizer_config.json");
        var e = Assert.Throws<DanglingLinkException>(() => ChatTemplate.FromCheckpoint(_snapshot, out _));
        Assert.Equal(link, e.Path);
    }

    public void Dispose() => _cache.Dispose();
}
