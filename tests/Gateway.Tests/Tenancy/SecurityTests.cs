using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.Tenancy;

[Collection(RedisCollection.Name)]
public sealed class SecurityTests(RedisFixture redis)
{
    [Theory]
    [InlineData(null, "missing_api_key")]
    [InlineData("sk-wrong", "invalid_api_key")]
    public async Task OpenAiRoutes_MissingOrBadKey_401WithOpenAiError(string? key, string code)
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        using var client = gw.Client(key);
        foreach (var response in new[] { await Chat.SendAsync(client, "fake"), await client.GetAsync("/v1/models") })
        {
            using var r = response;
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
            Assert.Equal(code, Chat.ErrorCode(await r.Content.ReadAsStringAsync()));
        }
        using var adapters = await client.GetAsync("/v1/adapters/");
        Assert.Equal(HttpStatusCode.Unauthorized, adapters.StatusCode);
    }

    [Fact]
    public async Task TenantA_CannotSeeUseDownloadOrDeleteTenantBsAdapter_Gets404()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.PublishAdapterAsync("tenant-b", "secret", original: [9, 9, 9]);
        await gw.PublishAdapterAsync("tenant-a", "mine");
        await gw.PublishAdapterAsync("public", "shared");
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);
        using var b = gw.Client(GatewayHost.KeyB);

        // B can reach its own adapter (so the 404s below are about isolation, not absence).
        Assert.Equal(HttpStatusCode.OK, (await b.GetAsync("/v1/adapters/secret")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await b.GetAsync("/v1/adapters/secret/versions/1/original")).StatusCode);
        using (var own = await Chat.SendAsync(b, "fake:secret")) Assert.Equal(HttpStatusCode.OK, own.StatusCode);

        Assert.Equal(HttpStatusCode.NotFound, (await a.GetAsync("/v1/adapters/secret")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await a.GetAsync("/v1/adapters/secret/versions")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await a.GetAsync("/v1/adapters/secret/versions/1/original")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await a.DeleteAsync("/v1/adapters/secret")).StatusCode);
        // Naming the other tenant in a header of the gateway's namespace changes nothing: the tenant is the key's.
        foreach (var path in new[] { "/v1/adapters/secret", "/v1/adapters/secret/versions", "/v1/adapters/secret/versions/1/original" })
        {
            using var spoofed = new HttpRequestMessage(HttpMethod.Get, path);
            spoofed.Headers.Add("X-Serving-Tenant", "tenant-b");
            using var r = await a.SendAsync(spoofed);
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        }
        var list = await a.GetFromJsonAsync<JsonElement>("/v1/adapters/");
        Assert.DoesNotContain("secret", list.GetRawText());
        foreach (var model in new[] { "fake:secret", "fake:tenant-b/secret" })
        {
            using var use = await Chat.SendAsync(a, model);
            Assert.Equal(HttpStatusCode.NotFound, use.StatusCode);
            Assert.Equal("model_not_found", Chat.ErrorCode(await use.Content.ReadAsStringAsync()));
        }
        // A tenant-b adapter that does not exist looks exactly the same to A.
        using var missing = await Chat.SendAsync(a, "fake:tenant-b/nothing");
        using var hidden = await Chat.SendAsync(a, "fake:tenant-b/secret");
        Assert.Equal((await missing.Content.ReadAsStringAsync()).Replace("nothing", "X"), (await hidden.Content.ReadAsStringAsync()).Replace("secret", "X"));

        // Still there for B after A's delete attempt.
        Assert.Equal(HttpStatusCode.OK, (await b.GetAsync("/v1/adapters/secret")).StatusCode);

        var modelsA = (await a.GetFromJsonAsync<JsonElement>("/v1/models")).GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()).ToList();
        var modelsB = (await b.GetFromJsonAsync<JsonElement>("/v1/models")).GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()).ToList();
        Assert.Equal(["fake", "fake:mine", "fake:public/shared"], modelsA);
        Assert.Equal(["fake", "fake:secret", "fake:public/shared"], modelsB);
        Assert.Single(n1.Received);
    }

    [Fact]
    public async Task AdminRoutes_RefuseTenantKeys_AndTenantRoutesRefuseAdminKeys()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        using var tenant = gw.Client(GatewayHost.KeyA);
        using var admin = gw.Client(GatewayHost.AdminKey);
        using var anonymous = gw.Client(null);
        Assert.Equal(HttpStatusCode.Forbidden, (await tenant.GetAsync("/admin/tenants")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await tenant.PostAsJsonAsync("/admin/tenants", new { id = "evil" })).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/admin/tenants")).StatusCode);
        using var adminChat = await Chat.SendAsync(admin, "fake");
        Assert.Equal(HttpStatusCode.Forbidden, adminChat.StatusCode);
    }

    [Fact]
    public async Task AdminApi_IssuesKeyThatWorks_RevokedKeyIsRefused()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Tenancy:CacheTtl"] = "00:00:00" });
        using var admin = gw.Client(GatewayHost.AdminKey);
        Assert.Equal(HttpStatusCode.Created, (await admin.PostAsJsonAsync("/admin/tenants", new { id = "acme", name = "Acme" })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await admin.PostAsJsonAsync("/admin/tenants", new { id = "Bad Id" })).StatusCode);
        var issued = await (await admin.PostAsync("/admin/tenants/acme/keys", null)).Content.ReadFromJsonAsync<JsonElement>();
        string key = issued.GetProperty("key").GetString()!, keyId = issued.GetProperty("key_id").GetString()!;
        Assert.StartsWith("sk-", key);

        var keys = await admin.GetStringAsync("/admin/tenants/acme/keys");
        Assert.Contains(keyId, keys);
        Assert.DoesNotContain(key, keys);

        using var acme = gw.Client(key);
        Assert.Equal(HttpStatusCode.OK, (await acme.GetAsync("/v1/models")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/admin/tenants/acme/keys/{keyId}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await acme.GetAsync("/v1/models")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.PostAsync("/admin/tenants/nobody/keys", null)).StatusCode);
    }

    [Fact]
    public async Task RequestRateLimit_Exceeded_429WithRetryAfter()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:RateLimits:RequestsPerMinute"] = "3" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);
        for (int i = 0; i < 3; i++)
        {
            using var ok = await Chat.SendAsync(a, "fake");
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        using var limited = await Chat.SendAsync(a, "fake");
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.True(limited.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        Assert.Equal("rate_limit_exceeded", Chat.ErrorCode(await limited.Content.ReadAsStringAsync()));
        // Another tenant has its own budget.
        using var b = gw.Client(GatewayHost.KeyB);
        using var other = await Chat.SendAsync(b, "fake");
        Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        Assert.Equal(4, n1.Received.Count);
    }

    [Fact]
    public async Task TokenRateLimit_Exceeded_429WithRetryAfter()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:RateLimits:TokensPerMinute"] = "200" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        n1.GeneratedTokens = 150; // the first request's usage takes most of the budget
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);
        using (var ok = await Chat.SendAsync(a, "fake", maxTokens: 100)) Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using var limited = await Chat.SendAsync(a, "fake", maxTokens: 100);
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.NotNull(limited.Headers.RetryAfter);
        Assert.Single(n1.Received);
    }

    [Fact]
    public async Task Logs_NeverContainKeysOrPromptText()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString);
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        const string prompt = "PROMPT-SECRET-7f3a";
        using var a = gw.Client(GatewayHost.KeyA);
        using (var r = await Chat.SendAsync(a, "fake", prompt: prompt)) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        using (var r = await Chat.SendAsync(a, "fake", stream: true, prompt: prompt)) await Chat.ReadEventsAsync(r);
        using var bad = gw.Client("sk-not-a-real-key-123");
        using (var r = await Chat.SendAsync(bad, "fake", prompt: prompt)) Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
        Assert.NotEmpty(gw.Logs);
        Assert.DoesNotContain(gw.Logs, l => l.Contains(GatewayHost.KeyA) || l.Contains("sk-not-a-real-key-123") || l.Contains(prompt));
    }

    [Fact]
    public async Task Logs_NeverContainAdapterBytes_AcceptedOrRefused()
    {
        const string marker = "ADAPTER-SECRET-91c2";
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:BaseModels:fake"] = TinyPeft.WriteBaseConfig() });
        using var a = gw.Client(GatewayHost.KeyA);
        // Accepted: the marker in a config field and in the safetensors metadata.
        using (var up = await a.PostAsync("/v1/adapters/ok", Upload(revision: marker, metadata: marker)))
            Assert.True(up.StatusCode == HttpStatusCode.Created, await up.Content.ReadAsStringAsync());
        // Refused: the marker where a number belongs, and inside a corrupt safetensors header.
        using (var up = await a.PostAsync("/v1/adapters/bad-config", Upload(rank: $"\"{marker}\"")))
            Assert.InRange((int)up.StatusCode, 400, 499); // the specific codes are the bad-input matrix's (docs/bad-input.md)
        using (var up = await a.PostAsync("/v1/adapters/bad-weights", Upload(weights: CorruptSafetensors(marker))))
            Assert.InRange((int)up.StatusCode, 400, 499);
        Assert.NotEmpty(gw.Logs);
        Assert.DoesNotContain(gw.Logs, l => l.Contains(marker, StringComparison.Ordinal)
            || l.Contains(Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(marker))[..12], StringComparison.Ordinal)
            || l.Contains(Convert.ToHexString(System.Text.Encoding.UTF8.GetBytes(marker))[..12], StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>The TinyPeft adapter with a chosen config revision, rank text, safetensors metadata or weights file.</summary>
    private static MultipartFormDataContent Upload(string? revision = null, string rank = "2", string? metadata = null, byte[]? weights = null)
    {
        const int d = 16, r = 2;
        float[] Fill(int n) => Enumerable.Range(0, n).Select(i => (i % 7 - 3) * 0.01f).ToArray();
        weights ??= Serving.Checkpoints.SafetensorsWriter.ToBytes(
            [
                Serving.Checkpoints.SafetensorsWriter.Entry.F32("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", [r, d], Fill(r * d)),
                Serving.Checkpoints.SafetensorsWriter.Entry.F32("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", [3 * d, r], Fill(3 * d * r)),
            ],
            new Dictionary<string, string> { ["format"] = "pt", ["note"] = metadata ?? "none" });
        string config = $$"""
            {"base_model_name_or_path": "fake", "revision": {{(revision is null ? "null" : $"\"{revision}\"")}}, "bias": "none", "fan_in_fan_out": true,
             "lora_alpha": 4, "peft_type": "LORA", "r": {{rank}}, "target_modules": ["c_attn"], "task_type": "CAUSAL_LM"}
            """;
        var form = new MultipartFormDataContent();
        var c = new ByteArrayContent(System.Text.Encoding.UTF8.GetBytes(config));
        c.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        form.Add(c, "config", "adapter_config.json");
        form.Add(new ByteArrayContent(weights), "weights", "adapter_model.safetensors");
        form.Add(new StringContent("fake"), "base_model");
        return form;
    }

    /// <summary>A safetensors file whose header is not JSON and carries <paramref name="marker"/>.</summary>
    private static byte[] CorruptSafetensors(string marker)
    {
        byte[] header = System.Text.Encoding.UTF8.GetBytes("{\"x\": " + marker + "}");
        var bytes = new byte[8 + header.Length + 16];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)header.Length);
        header.CopyTo(bytes, 8);
        return bytes;
    }

    [Fact]
    public async Task RequestBody_OverLimit_413()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Routing:MaxRequestBodyBytes"] = "2048" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);
        using var r = await Chat.SendAsync(a, "fake", prompt: new string('x', 4000));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r.StatusCode);
        Assert.Empty(n1.Received);
    }

    [Fact]
    public async Task RequestBody_WithContentLength_ForwardedWhole_OverLimit413()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Routing:MaxRequestBodyBytes"] = "2048" });
        await using var n1 = await FakeNode.StartAsync(redis.ConnectionString, gw.RegistryPrefix, "n1");
        await gw.PublishAdapterAsync("tenant-a", "mine");
        await gw.WaitForNodesAsync("n1");
        using var a = gw.Client(GatewayHost.KeyA);

        // StringContent sends Content-Length (JsonContent is chunked): the body is read into one exact buffer.
        string Body(int padding) => $$"""{"messages":[{"role":"user","content":"{{new string('x', padding)}}"}],"model":"fake:mine","user":"len"}""";
        using (var ok = await a.PostAsync("/v1/chat/completions", new StringContent(Body(1500), System.Text.Encoding.UTF8, "application/json")))
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        var received = Assert.Single(n1.Received);
        Assert.Equal("fake:tenant-a/mine", received.Model); // spliced into the exact-length body
        Assert.Equal("len", received.User);                 // the rest of the body intact after the splice

        using var tooLarge = await a.PostAsync("/v1/chat/completions", new StringContent(Body(4000), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Single(n1.Received);
    }
}
