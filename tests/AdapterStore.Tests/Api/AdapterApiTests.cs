using System.Formats.Tar;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests.Peft;
using Serving.AdapterStore.Tests.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.Tests.Api;

/// <summary>The HTTP surface over a real store (redis-server and embedded Garnet).</summary>
public abstract class AdapterApiContractTests : IAsyncLifetime
{
    private readonly IStoreServer _server;
    private WebApplication? _app;
    protected HttpClient Client = null!;
    protected readonly string Tenant = "api" + Guid.NewGuid().ToString("N")[..10];
    protected const long MaxUpload = 1 << 20;

    protected AdapterApiContractTests(IStoreServer server) => _server = server;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseTestServer();
        builder.Services.AddSingleton<IBaseModelCatalog>(new StaticBaseModelCatalog().Add("gpt2-test", PeftFolders.Gpt2).Add("qwen-test", PeftFolders.Llama).Add("phi3-test", PeftFolders.Phi3));
        builder.Services.AddSingleton<ITenantContext>(new SingleTenantContext(Tenant));
        builder.Services.AddAdapterStore(o => o.RedisConnectionString = _server.ConnectionString, api => api.MaxUploadBytes = MaxUpload);
        _app = builder.Build();
        _app.MapAdapterApi();
        await _app.StartAsync();
        Client = _app.GetTestClient();
    }

    public async Task DisposeAsync()
    {
        if (_app is not null) await _app.DisposeAsync();
    }

    private IEnumerable<RedisKey> TenantKeys()
    {
        var redis = _app!.Services.GetRequiredService<IConnectionMultiplexer>();
        return redis.GetServer(redis.GetEndPoints()[0]).Keys(pattern: new AdapterKeys(AdapterStoreOptions.DefaultKeyPrefix).TenantPattern(Tenant)).ToList();
    }

    internal static MultipartFormDataContent Form(params (string Field, string? FileName, byte[] Data)[] parts)
    {
        var form = new MultipartFormDataContent();
        foreach (var (field, fileName, data) in parts)
        {
            var content = new ByteArrayContent(data);
            if (fileName is null) form.Add(content, field);
            else
            {
                content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                form.Add(content, field, fileName);
            }
        }
        return form;
    }

    internal static MultipartFormDataContent Folder(byte[] config, byte[] weights, params (string, string)[] fields) =>
        Form([("config", "adapter_config.json", config), ("weights", "adapter_model.safetensors", weights), .. fields.Select(f => (f.Item1, (string?)null, System.Text.Encoding.UTF8.GetBytes(f.Item2)))]);

    private async Task<JsonElement> AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {status}, got {response.StatusCode}: {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var json = JsonDocument.Parse(body).RootElement;
        Assert.Equal(AdapterApi.ProblemTypeBase + code, json.GetProperty("type").GetString());
        Assert.False(string.IsNullOrWhiteSpace(json.GetProperty("detail").GetString()));
        Assert.Empty(TenantKeys());
        return json;
    }

    [Fact]
    public async Task Upload_Gpt2Lora_IsStoredListedDownloadableAndDeletable()
    {
        var folder = PeftFolders.Gpt2Lora();
        var response = await Client.PostAsync("/v1/adapters/my-lora", Folder(folder.ConfigBytes, folder.Safetensors, ("codec", "compeft"), ("density", "0.1")));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        var body = JsonDocument.Parse(text).RootElement;
        var adapter = body.GetProperty("adapter");
        Assert.Equal(1, adapter.GetProperty("version").GetInt64());
        Assert.Equal("gpt2-test", adapter.GetProperty("baseModel").GetString());
        Assert.True(adapter.GetProperty("ratio").GetDouble() > 5);
        Assert.Equal(8, body.GetProperty("errors").GetArrayLength());
        Assert.All(body.GetProperty("errors").EnumerateArray(), e => Assert.InRange(e.GetProperty("relative").GetDouble(), 0.01, 1.5));

        var list = await Client.GetFromJsonAsync<JsonElement>("/v1/adapters");
        Assert.Equal("my-lora", list[0].GetProperty("name").GetString());
        Assert.Equal(HttpStatusCode.OK, (await Client.GetAsync("/v1/adapters/my-lora")).StatusCode);
        Assert.Equal(1, (await Client.GetFromJsonAsync<JsonElement>("/v1/adapters/my-lora/versions")).GetArrayLength());

        var tar = await Client.GetByteArrayAsync("/v1/adapters/my-lora/versions/1/original");
        var files = new Dictionary<string, byte[]>();
        using (var reader = new TarReader(new MemoryStream(tar)))
        {
            while (reader.GetNextEntry() is { } e)
            {
                using var ms = new MemoryStream();
                e.DataStream!.CopyTo(ms);
                files[e.Name] = ms.ToArray();
            }
        }
        Assert.Equal(folder.Safetensors, files["adapter_model.safetensors"]);

        var store = _app!.Services.GetRequiredService<IAdapterStore>();
        var loaded = await store.LoadAdapterAsync(Tenant, "my-lora", null, CancellationToken.None);
        Assert.Equal(8, loaded!.Value.Adapter.Modules.Count);

        Assert.Equal(HttpStatusCode.NoContent, (await Client.DeleteAsync("/v1/adapters/my-lora")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Client.GetAsync("/v1/adapters/my-lora")).StatusCode);
    }

    [Fact]
    public async Task Upload_TarAndZipArchives_AreAccepted()
    {
        var folder = PeftFolders.LlamaLora();
        var tar = new MemoryStream();
        using (var w = new TarWriter(tar, leaveOpen: true))
        {
            w.WriteEntry(new PaxTarEntry(TarEntryType.Directory, "my-adapter/"));
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "my-adapter/adapter_config.json") { DataStream = new MemoryStream(folder.ConfigBytes) });
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "my-adapter/adapter_model.safetensors") { DataStream = new MemoryStream(folder.Safetensors) });
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "my-adapter/README.md") { DataStream = new MemoryStream("hi"u8.ToArray()) });
        }
        var r1 = await Client.PostAsync("/v1/adapters/qwen-a", Form(("archive", "a.tar", tar.ToArray()), ("base_model", null, "qwen-test"u8.ToArray()), ("codec", null, "lossless"u8.ToArray())));
        Assert.True(r1.StatusCode == HttpStatusCode.Created, await r1.Content.ReadAsStringAsync());
        var meta = (await r1.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("adapter");
        Assert.Equal("Lossless", meta.GetProperty("codec").GetString());
        Assert.Equal(0, meta.GetProperty("maxRelativeError").GetDouble());

        var zip = new MemoryStream();
        using (var z = new ZipArchive(zip, ZipArchiveMode.Create, leaveOpen: true))
        {
            using (var s = z.CreateEntry("adapter_config.json").Open()) s.Write(folder.ConfigBytes);
            using (var s = z.CreateEntry("adapter_model.safetensors").Open()) s.Write(folder.Safetensors);
        }
        var r2 = await Client.PostAsync("/v1/adapters/qwen-a", Form(("archive", "a.zip", zip.ToArray()), ("base_model", null, "qwen-test"u8.ToArray())));
        Assert.True(r2.StatusCode == HttpStatusCode.Created, await r2.Content.ReadAsStringAsync());
        Assert.Equal(2, (await r2.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("adapter").GetProperty("version").GetInt64());
    }

    [Theory]
    [MemberData(nameof(PeftAdapterReaderTests.Malformed), MemberType = typeof(PeftAdapterReaderTests))]
    public async Task Upload_MalformedPeftFolder_Returns4xxProblemAndStoresNothing(string name, string code)
    {
        var (config, weights) = PeftAdapterReaderTests.MalformedCase(name);
        var response = await Client.PostAsync("/v1/adapters/bad", Folder(config, weights));
        var problem = await AssertProblemAsync(response, (HttpStatusCode)(int)response.StatusCode, code);
        Assert.InRange((int)response.StatusCode, 400, 499);
        Assert.Equal(code, problem.GetProperty("code").GetString());
    }

    [Fact]
    public async Task Upload_MissingConfig_Returns400()
    {
        var folder = PeftFolders.Gpt2Lora();
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Form(("weights", "adapter_model.safetensors", folder.Safetensors))), HttpStatusCode.BadRequest, AdapterErrors.ConfigMissing);
    }

    [Fact]
    public async Task Upload_MissingWeights_Returns400()
    {
        var folder = PeftFolders.Gpt2Lora();
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Form(("config", "adapter_config.json", folder.ConfigBytes))), HttpStatusCode.BadRequest, AdapterErrors.WeightsMissing);
    }

    [Fact]
    public async Task Upload_PickledBin_Returns400Pickle()
    {
        var folder = PeftFolders.Gpt2Lora();
        var form = Form(("config", "adapter_config.json", folder.ConfigBytes), ("weights", "adapter_model.bin", [0x80, 0x02, 0x7d]));
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", form), HttpStatusCode.BadRequest, AdapterErrors.PickleRefused);
    }

    [Fact]
    public async Task Upload_Oversized_Returns413()
    {
        var folder = PeftFolders.Gpt2Lora();
        var big = new byte[MaxUpload + 10];
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Folder(folder.ConfigBytes, big)), HttpStatusCode.RequestEntityTooLarge, AdapterErrors.TooLarge);
    }

    [Theory]
    [InlineData("../adapter_config.json")]
    [InlineData("/etc/adapter_config.json")]
    [InlineData("a/../../adapter_config.json")]
    public async Task Upload_TarWithEscapingPath_Returns400Traversal(string entryName)
    {
        var folder = PeftFolders.Gpt2Lora();
        var tar = new MemoryStream();
        using (var w = new TarWriter(tar, leaveOpen: true))
        {
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, entryName) { DataStream = new MemoryStream(folder.ConfigBytes) });
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "adapter_model.safetensors") { DataStream = new MemoryStream(folder.Safetensors) });
        }
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Form(("archive", "a.tar", tar.ToArray()))), HttpStatusCode.BadRequest, AdapterErrors.ArchivePathTraversal);
    }

    [Fact]
    public async Task Upload_TarWithSymlink_Returns400Traversal()
    {
        var tar = new MemoryStream();
        using (var w = new TarWriter(tar, leaveOpen: true))
        {
            w.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "adapter_model.safetensors") { LinkName = "/etc/passwd" });
        }
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Form(("archive", "a.tar", tar.ToArray()))), HttpStatusCode.BadRequest, AdapterErrors.ArchivePathTraversal);
    }

    [Fact]
    public async Task Upload_ZipWithEscapingPath_Returns400Traversal()
    {
        var zip = new MemoryStream();
        using (var z = new ZipArchive(zip, ZipArchiveMode.Create, leaveOpen: true))
        {
            using var s = z.CreateEntry("../../adapter_config.json").Open();
            s.Write("{}"u8);
        }
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Form(("archive", "a.zip", zip.ToArray()))), HttpStatusCode.BadRequest, AdapterErrors.ArchivePathTraversal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Upload_ZipBomb_Returns413WithoutInflatingPastTheLimit(bool lyingSize)
    {
        // 64 MiB of zeros deflate to about 64 KiB: a ratio of ~1000 against an upload limit of 1 MiB. Inflated bytes
        // count against the upload limit as they are read; a declared size patched down to 100 bytes is where the zip
        // reader stops.
        var zip = new MemoryStream();
        using (var z = new ZipArchive(zip, ZipArchiveMode.Create, leaveOpen: true))
        {
            using var s = z.CreateEntry("adapter_model.safetensors", CompressionLevel.Optimal).Open();
            var zeros = new byte[1 << 20];
            for (var i = 0; i < 64; i++) s.Write(zeros);
        }
        var bytes = zip.ToArray();
        Assert.True(bytes.Length < MaxUpload / 4, $"the bomb is {bytes.Length} bytes");
        if (lyingSize)
        {
            // Uncompressed size: offset 22 of the local header (at 0), offset 24 of the central directory entry.
            int central = bytes.AsSpan().LastIndexOf("PK\u0001\u0002"u8);
            BitConverter.TryWriteBytes(bytes.AsSpan(22, 4), 100);
            BitConverter.TryWriteBytes(bytes.AsSpan(central + 24, 4), 100);
        }
        var response = await Client.PostAsync("/v1/adapters/bomb", Form(("archive", "a.zip", bytes)));
        if (lyingSize)
        {
            // The zip reader stops at the declared 100 bytes: nothing is inflated past them, and this zip holds no config.
            await AssertProblemAsync(response, HttpStatusCode.BadRequest, AdapterErrors.ConfigMissing);
        }
        else
        {
            await AssertProblemAsync(response, HttpStatusCode.RequestEntityTooLarge, AdapterErrors.TooLarge);
        }
        Assert.Equal(HttpStatusCode.NotFound, (await Client.GetAsync("/v1/adapters/bomb")).StatusCode);
    }

    [Fact]
    public async Task Upload_GarbageArchive_Returns400()
    {
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Form(("archive", "a.zip", "PK\u0003\u0004garbage-garbage"u8.ToArray()))), HttpStatusCode.BadRequest, AdapterErrors.ArchiveInvalid);
    }

    [Fact]
    public async Task Upload_LlamaAdapterAgainstGpt2Base_Returns422WrongBase()
    {
        var folder = PeftFolders.LlamaLora();
        var problem = await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Folder(folder.ConfigBytes, folder.Safetensors, ("base_model", "gpt2-test"))),
            HttpStatusCode.UnprocessableEntity, AdapterErrors.BaseModelMismatch);
        Assert.StartsWith("base_model.model.model.layers.", problem.GetProperty("tensor").GetString());
    }

    [Fact]
    public async Task Upload_Phi3FusedLora_IsStoredWithItsFusedModules()
    {
        var folder = PeftFolders.Phi3Lora();
        var response = await Client.PostAsync("/v1/adapters/phi3-lora", Folder(folder.ConfigBytes, folder.Safetensors, ("base_model", "phi3-test"), ("codec", "lossless")));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        var store = _app!.Services.GetRequiredService<IAdapterStore>();
        var loaded = await store.LoadAdapterAsync(Tenant, "phi3-lora", null, CancellationToken.None);
        var modules = loaded!.Value.Adapter.Modules;
        Assert.Equal(8, modules.Count);
        Assert.Equal((64, (4 + 2 * 2) * 16), (modules.Single(m => m.Layer == 1 && m.Module == "self_attn.qkv_proj").InFeatures, modules.Single(m => m.Layer == 1 && m.Module == "self_attn.qkv_proj").OutFeatures));
        Assert.Equal(192, modules.Single(m => m.Layer == 0 && m.Module == "mlp.gate_up_proj").OutFeatures);
    }

    [Fact]
    public async Task Upload_SeparateProjectionLoraAgainstPhi3Base_Returns422WrongBase()
    {
        var folder = PeftFolders.LlamaLora();
        var problem = await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Folder(folder.ConfigBytes, folder.Safetensors, ("base_model", "phi3-test"))),
            HttpStatusCode.UnprocessableEntity, AdapterErrors.BaseModelMismatch);
        Assert.Contains("a llama module; the base model is phi3", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Upload_UnknownBaseModel_Returns400()
    {
        var folder = PeftFolders.Gpt2Lora();
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Folder(folder.ConfigBytes, folder.Safetensors, ("base_model", "gpt5"))), HttpStatusCode.BadRequest, AdapterErrors.BaseModelUnknown);
    }

    [Theory]
    [InlineData("compeft", "density", "0")]
    [InlineData("compeft", "density", "1.5")]
    [InlineData("compeft", "factor", "-1")]
    [InlineData("compeft", "magnitude_bits", "5")]
    [InlineData("compeft", "alpha", "component")] // needs scope=per_tensor
    [InlineData("quant", "target_error", "1")]
    [InlineData("quant", "bits", "9")]
    [InlineData("quant", "bits", "3.5")]
    [InlineData("quant", "basis", "fourier")]
    [InlineData("auto", "min_kept", "1.5")]
    [InlineData("auto", "density", "0.1")] // a ComPEFT parameter without codec=compeft
    [InlineData("lossless", "target_error", "0.2")]
    [InlineData("jpeg", "codec", "jpeg")]
    public async Task Upload_BadCodecParameters_Returns400(string codec, string field, string value)
    {
        var folder = PeftFolders.Gpt2Lora();
        var json = await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", Folder(folder.ConfigBytes, folder.Safetensors, ("codec", codec), (field, value))),
            HttpStatusCode.BadRequest, AdapterErrors.CodecInvalid);
        Assert.Contains(field == "codec" ? "codec" : field.Split('_')[0], json.GetProperty("detail").GetString()!, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Upload_Defaults_StoresAutoChoiceAndReportsCodecRatioAndPredictedQuality()
    {
        var folder = PeftFolders.Gpt2Lora();
        var response = await Client.PostAsync("/v1/adapters/auto-lora", Folder(folder.ConfigBytes, folder.Safetensors));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        var body = JsonDocument.Parse(text).RootElement;
        var codec = body.GetProperty("codec");
        Assert.Equal("auto kept>=0.95", codec.GetProperty("requested").GetString());
        Assert.Equal("Quant", codec.GetProperty("codec").GetString());
        Assert.StartsWith("quant svd err=", codec.GetProperty("setting").GetString());
        Assert.True(codec.GetProperty("ratio").GetDouble() > 1.5, text);
        Assert.InRange(codec.GetProperty("predictedKept").GetDouble(), 0.95, 1.0);
        Assert.False(body.TryGetProperty("warning", out _), text);
        var adapter = body.GetProperty("adapter");
        Assert.Equal(codec.GetProperty("setting").GetString(), adapter.GetProperty("setting").GetString());
        Assert.Equal(codec.GetProperty("predictedKept").GetDouble(), adapter.GetProperty("predictedKept").GetDouble());
        var stored = await Client.GetFromJsonAsync<JsonElement>("/v1/adapters/auto-lora");
        Assert.Equal(codec.GetProperty("setting").GetString(), stored.GetProperty("setting").GetString());
    }

    [Fact]
    public async Task Upload_ExplicitSettingPredictingUnderHalf_IsStoredWithWarning()
    {
        var folder = PeftFolders.Gpt2Lora();
        var response = await Client.PostAsync("/v1/adapters/bad-lora", Folder(folder.ConfigBytes, folder.Safetensors, ("codec", "compeft"), ("density", "0.1")));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        var body = JsonDocument.Parse(text).RootElement;
        Assert.True(body.GetProperty("codec").GetProperty("predictedKept").GetDouble() < 0.5, text);
        Assert.Contains("codec=auto", body.GetProperty("warning").GetString());
        Assert.Equal("ComPeft", body.GetProperty("adapter").GetProperty("codec").GetString());
    }

    [Fact]
    public async Task Upload_InvalidName_Returns400()
    {
        var folder = PeftFolders.Gpt2Lora();
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/Bad%20Name!", Folder(folder.ConfigBytes, folder.Safetensors)), HttpStatusCode.BadRequest, AdapterErrors.NameInvalid);
    }

    [Fact]
    public async Task Upload_NotMultipart_Returns400()
    {
        await AssertProblemAsync(await Client.PostAsync("/v1/adapters/x", new StringContent("{}", System.Text.Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest, AdapterErrors.UploadInvalid);
    }

    [Fact]
    public async Task Get_Unknown_Returns404Problem()
    {
        var r = await Client.GetAsync("/v1/adapters/nope");
        Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        Assert.Equal(HttpStatusCode.NotFound, (await Client.DeleteAsync("/v1/adapters/nope/versions/3")).StatusCode);
    }
}

public sealed class RedisAdapterApiTests(RedisFixture server) : AdapterApiContractTests(server), IClassFixture<RedisFixture>;

public sealed class GarnetAdapterApiTests(GarnetFixture server) : AdapterApiContractTests(server), IClassFixture<GarnetFixture>;
