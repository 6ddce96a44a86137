using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Microsoft.AspNetCore.Http;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;
using Serving.Contracts.Errors;
using Serving.Inference.Chat;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Sampling;
using Serving.Inference.Tokenization;

namespace Serving.Fuzz;

/// <summary>
/// One entry per parser that sees user bytes. Each entry feeds the bytes to the parser and swallows only the exceptions
/// that parser documents for bad input (they become a 4xx, or a refused file); anything else escapes and is a finding.
/// The regression tests (tests/Fuzz.Tests) call the same entries with every file under <c>tools/fuzz/corpus/</c>.
/// </summary>
public static class FuzzTargets
{
    /// <summary>Largest upload the archive and multipart targets accept (small, so a fuzzer's length fields hit it).</summary>
    private const long MaxUploadBytes = 1 << 20;

    /// <summary>The targets by name (the name is also the corpus folder).</summary>
    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>(StringComparer.Ordinal)
    {
        ["safetensors"] = Safetensors,
        ["adapter-config"] = AdapterConfig,
        ["archive"] = Archive,
        ["multipart"] = Multipart,
        ["container"] = Container,
        ["tokenizer-json"] = TokenizerJson,
        ["sentencepiece"] = SentencePiece,
        ["chat-template"] = ChatTemplateSource,
        ["openai-chat"] = OpenAIChat,
        ["openai-completions"] = OpenAICompletions,
    };

    /// <summary>The repository root (found from this assembly's folder upwards, or <c>SERVING_REPO</c>).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>FUZZ_STRICT=1 lets refusals escape too (to check that the seeds are valid inputs).</summary>
    private static readonly bool Strict = Environment.GetEnvironmentVariable("FUZZ_STRICT") == "1";

    /// <summary><c>SafetensorsFile.Parse</c>, then every tensor read as bytes and, for float types, as float32.</summary>
    public static void Safetensors(byte[] data)
    {
        try
        {
            using var file = SafetensorsFile.Parse(data, "fuzz.safetensors");
            foreach (var info in file.Tensors.Values)
            {
                _ = file.GetBytes(info.Name);
                if (info.DType is SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16) _ = file.ReadFloat32(info.Name);
            }
        }
        catch (SafetensorsFormatException) when (!Strict)
        {
        }
    }

    /// <summary><c>adapter_config.json</c>: <c>PeftConfig.Parse</c>, then the lookups the reader makes.</summary>
    public static void AdapterConfig(byte[] data)
    {
        try
        {
            var config = PeftConfig.Parse(data);
            foreach (var path in (string[])["transformer.h.0.attn.c_attn", "model.layers.3.self_attn.q_proj", "model.layers.1.mlp.down_proj"])
            {
                if (!config.Targets(path)) continue;
                int rank = config.RankFor(path);
                _ = config.AlphaFor(path);
                if (rank > 0) _ = config.ScaleFor(path, rank);
            }
        }
        catch (AdapterValidationException) when (!Strict)
        {
        }
    }

    /// <summary>A .tar or .zip upload: <c>PeftArchive.Read</c>, then the PEFT reader against the demo model's shape.</summary>
    public static void Archive(byte[] data)
    {
        try
        {
            var files = PeftArchive.Read(data, MaxUploadBytes);
            _ = PeftAdapterReader.Read(files.ConfigJson, files.Safetensors, DemoShape.Value);
        }
        catch (AdapterValidationException) when (!Strict)
        {
        }
    }

    /// <summary>A multipart/form-data body (fixed boundary <c>B</c>) through <c>MultipartUpload.ReadAsync</c>.</summary>
    public static void Multipart(byte[] data)
    {
        var context = new DefaultHttpContext();
        context.Request.ContentType = "multipart/form-data; boundary=B";
        context.Request.Body = new MemoryStream(data, writable: false);
        try
        {
            _ = MultipartUpload.ReadAsync(context.Request, MaxUploadBytes, "adapter_config.json and adapter_model.safetensors", CancellationToken.None)
                .GetAwaiter().GetResult();
        }
        catch (AdapterValidationException) when (!Strict)
        {
        }
    }

    /// <summary>
    /// A stored adapter container. As given, a corrupted value must fail its checksum (a <c>ContainerFormatException</c>,
    /// never another exception or a hang); then the same bytes with the checksum recomputed, so the fuzzer reaches the
    /// header and the codecs' body decoders, which must refuse what they cannot decode the same way.
    /// </summary>
    public static void Container(byte[] data)
    {
        DecodeContainer(data);
        if (data.Length < 8) return;
        var patched = (byte[])data.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(patched.AsSpan(patched.Length - 8), XxHash64.HashToUInt64(patched.AsSpan(0, patched.Length - 8)));
        DecodeContainer(patched);
    }

    private static void DecodeContainer(byte[] data)
    {
        try
        {
            _ = AdapterContainer.Decode(data);
        }
        catch (ContainerFormatException) when (!Strict)
        {
        }
    }

    /// <summary><c>tokenizer.json</c> (with the demo model's <c>tokenizer_config.json</c>) through the tokenizer loader, then a round trip.</summary>
    public static void TokenizerJson(byte[] data) => LoadTokenizer("tokenizer.json", data, withConfig: true);

    /// <summary><c>tokenizer.model</c> (SentencePiece protobuf) through the tokenizer loader, then a round trip.</summary>
    public static void SentencePiece(byte[] data) => LoadTokenizer("tokenizer.model", data, withConfig: false);

    private static void LoadTokenizer(string fileName, byte[] data, bool withConfig)
    {
        var folder = Path.Combine(ScratchRoot, fileName);
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, fileName), data);
        if (withConfig) File.Copy(Path.Combine(RepoRoot, "models", "demo", "tokenizer_config.json"), Path.Combine(folder, "tokenizer_config.json"), overwrite: true);
        try
        {
            var tokenizer = TokenizerLoader.Load(folder, 0);
            var ids = tokenizer.Encode("Hello wörld, 123 <|endoftext|> \u00e9\u4e2d\U0001F600 ");
            _ = tokenizer.Decode(ids);
            var streaming = tokenizer.CreateStreamingDecoder();
            foreach (var id in ids) _ = streaming.Append(id);
        }
        catch (TokenizerFormatException) when (!Strict)
        {
        }
    }

    /// <summary>A chat template source: parse (a <c>FormatException</c> for syntax outside the subset), then render a short conversation (<c>ChatTemplateException</c> from <c>raise_exception</c>).</summary>
    public static void ChatTemplateSource(byte[] data)
    {
        string source;
        try
        {
            source = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(data);
        }
        catch (DecoderFallbackException)
        {
            return; // tokenizer_config.json is JSON: its strings are valid UTF-16 by then.
        }
        try
        {
            var template = new ChatTemplate(source);
            _ = template.Render([new ChatMessage("system", "Be brief."), new ChatMessage("user", "Hi"), new ChatMessage("assistant", "Hello."), new ChatMessage("user", "Bye")], true, "<s>", "</s>");
        }
        catch (Exception e) when (!Strict && e is ChatTemplateException or FormatException)
        {
        }
    }

    /// <summary>A <c>/v1/chat/completions</c> body: read, then mapped against the demo model.</summary>
    public static void OpenAIChat(byte[] data) => Refused(() =>
    {
        var body = RequestBodyReader.Parse<ChatCompletionRequestBody>(data);
        _ = OpenAIRequestMapper.Chat(body, Host.Value, "fuzz", DateTimeOffset.MaxValue);
    });

    /// <summary>A <c>/v1/completions</c> body: read, then mapped against the demo model.</summary>
    public static void OpenAICompletions(byte[] data) => Refused(() =>
    {
        var body = RequestBodyReader.Parse<CompletionRequestBody>(data);
        _ = OpenAIRequestMapper.Completions(body, Host.Value, "fuzz", DateTimeOffset.MaxValue);
    });

    private static void Refused(Action action)
    {
        try
        {
            action();
        }
        catch (RequestRefusedException e) when (!Strict && e.Error.Status is >= 400 and < 500)
        {
        }
        catch (SamplingParameterException) when (!Strict)
        {
        }
    }

    private static readonly Lazy<BaseModelShape> DemoShape = new(() =>
        BaseModelShape.FromConfig(ModelConfig.Load(Path.Combine(RepoRoot, "models", "demo", "config.json"))));

    private static readonly Lazy<ModelHost> Host = new(() =>
    {
        var services = new ServiceCollection().AddMetrics();
        var provider = services.BuildServiceProvider();
        var meters = provider.GetRequiredService<IMeterFactory>();
        var options = Options.Create(new NodeOptions { ModelPath = Path.Combine(RepoRoot, "models", "demo"), MaxBatch = 1, MaxContext = 256, Threads = 1 });
        return new ModelHost(options, new NodeMetrics(meters), TimeProvider.System, NullLogger<ModelHost>.Instance, []);
    });

    private static readonly string ScratchRoot = Path.Combine(
        Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"serving-fuzz-{Environment.ProcessId}");

    private static string FindRepoRoot()
    {
        if (Environment.GetEnvironmentVariable("SERVING_REPO") is { Length: > 0 } configured) return configured;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Serving.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("Serving.sln not found above the fuzz binary; set SERVING_REPO to the repository root.");
    }
}
