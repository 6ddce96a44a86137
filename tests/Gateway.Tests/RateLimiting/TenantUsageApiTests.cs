using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Serving.Gateway.Tests.Infrastructure;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary><c>GET /admin/tenants/{id}/usage</c> and the per-tenant token counters on <c>/metrics</c>.</summary>
[Collection(RedisCollection.Name)]
public sealed class TenantUsageApiTests(RedisFixture redis)
{
    [Fact]
    public async Task Usage_LastMinuteAndHour_FromSettledRequests_AdminOnly()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        await h.Gateway.PublishAdapterAsync("tenant-a", "support");
        await h.ExpectAsync(200, chat: true, AccountingHarness.Body(true, "hi", new { max_tokens = 20, x_fake_tokens = 7, x_fake_prompt_tokens = 5 }));
        await h.SettledAsync();
        await h.ExpectAsync(400, chat: true, AccountingHarness.Body(true, "hi", new { max_tokens = 20, x_fake_status = 400 }));
        await h.SettledAsync();
        h.Clock.Advance(TimeSpan.FromSeconds(90));
        var adapter = AccountingHarness.Body(true, "hi", new { max_tokens = 20, n = 2, x_fake_tokens = 3, x_fake_prompt_tokens = 4 });
        adapter = System.Text.Encoding.UTF8.GetBytes(System.Text.Encoding.UTF8.GetString(adapter).Replace("\"fake\"", "\"fake:support\""));
        await h.ExpectAsync(200, chat: true, adapter);
        await h.SettledAsync();

        using var admin = h.Gateway.Client(GatewayHost.AdminKey);
        var usage = await admin.GetFromJsonAsync<JsonElement>("/admin/tenants/tenant-a/usage");
        Assert.Equal("tenant-a", usage.GetProperty("tenant").GetString());
        Assert.Equal(6000, usage.GetProperty("tokens_per_minute").GetInt32());
        Assert.Equal(6000 - 10, usage.GetProperty("available_tokens").GetInt64()); // clock moved 90 s: refilled, then the last request
        Assert.Equal(0, usage.GetProperty("reserved_tokens").GetInt64());
        Assert.Equal("""{"requests":1,"prompt_tokens":4,"generated_tokens":6,"charged_tokens":10}""", usage.GetProperty("last_minute").GetRawText());
        Assert.Equal("""{"requests":3,"prompt_tokens":9,"generated_tokens":13,"charged_tokens":22}""", usage.GetProperty("last_hour").GetRawText());

        h.Clock.Advance(TimeSpan.FromMinutes(61));
        var later = await admin.GetFromJsonAsync<JsonElement>("/admin/tenants/tenant-a/usage");
        Assert.Equal(0, later.GetProperty("last_hour").GetProperty("requests").GetInt64());

        // Admin keys only; unknown and malformed tenants.
        Assert.Equal(HttpStatusCode.Forbidden, (await h.Client.GetAsync("/admin/tenants/tenant-a/usage")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.GetAsync("/admin/tenants/nobody/usage")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await admin.GetAsync("/admin/tenants/Not%20Valid/usage")).StatusCode);
        // A tenant created through the admin API but idle is known: zeros.
        Assert.Equal(HttpStatusCode.Created, (await admin.PostAsJsonAsync("/admin/tenants", new { id = "quiet" })).StatusCode);
        var quiet = await admin.GetFromJsonAsync<JsonElement>("/admin/tenants/quiet/usage");
        Assert.Equal(0, quiet.GetProperty("last_minute").GetProperty("requests").GetInt64());
    }

    [Fact]
    public async Task Metrics_PromptAndGeneratedTokens_ByTenantAndAdapter()
    {
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, 6000);
        await h.ExpectAsync(200, chat: false, AccountingHarness.Body(false, "hi", new { max_tokens = 20, n = 4, x_fake_tokens = 5, x_fake_prompt_tokens = 6 }));
        await h.SettledAsync();
        await h.ExpectAsync(400, chat: false, AccountingHarness.Body(false, "hi", new { max_tokens = 20, x_fake_status = 400 }));
        await h.SettledAsync();
        using var anonymous = new HttpClient { BaseAddress = new Uri(h.Gateway.BaseUrl) };
        var text = await anonymous.GetStringAsync("/metrics");
        Assert.Contains("serving_gateway_prompt_tokens_total{otel_scope_name=\"Serving.Gateway\",adapter=\"none\",tenant=\"tenant-a\"} 6", text);
        Assert.Contains("serving_gateway_generated_tokens_total{otel_scope_name=\"Serving.Gateway\",adapter=\"none\",tenant=\"tenant-a\"} 20", text);
        Assert.Contains("serving_gateway_token_settlements_total{otel_scope_name=\"Serving.Gateway\",outcome=\"usage\"} 1", text);
        Assert.Contains("serving_gateway_token_settlements_total{otel_scope_name=\"Serving.Gateway\",outcome=\"refused\"} 1", text);
    }
}
