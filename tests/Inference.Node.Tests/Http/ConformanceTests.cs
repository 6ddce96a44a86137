using System.Net;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>A node serving its base under an <c>org/name</c> id.</summary>
public sealed class SlashIdNode : IAsyncLifetime
{
    public const string ModelId = "org/tiny";

    public NodeServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await NodeServer.StartAsync(new Dictionary<string, string?> { ["Node:ModelId"] = ModelId });

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>What the official SDKs rely on: ids with '/', OpenAI-shaped errors on every /v1 route, X-Request-Id, unsupported fields refused.</summary>
public sealed class ConformanceTests(SlashIdNode node) : IClassFixture<SlashIdNode>
{
    private HttpClient Http => node.Server.Http;

    private static async Task<JsonElement> ErrorOf(HttpResponseMessage response)
    {
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString());
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
    }

    [Theory]
    [InlineData("/v1/models/org%2Ftiny")] // what the SDKs send
    [InlineData("/v1/models/org%2ftiny")]
    [InlineData("/v1/models/org/tiny")]
    public async Task GetModel_IdWithSlash_EncodedOrNot_Found(string path)
    {
        using var response = await Http.GetAsync(path);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("org/tiny", JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString());
    }

    [Fact]
    public async Task GetModel_UnknownEncodedId_404ModelNotFound()
    {
        using var response = await Http.GetAsync("/v1/models/org%2Fother");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = await ErrorOf(response);
        Assert.Equal("model_not_found", error.GetProperty("code").GetString());
        Assert.Contains("org/other", error.GetProperty("message").GetString());
    }

    [Theory]
    [InlineData("POST", "/v1/embeddings")]
    [InlineData("GET", "/v1/files")]
    [InlineData("POST", "/v1/audio/speech")]
    [InlineData("GET", "/v1")]
    public async Task UnknownRoute_404OpenAIErrorNamingIt(string method, string path)
    {
        using var response = await Http.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") });
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = await ErrorOf(response);
        Assert.Equal("unknown_url", error.GetProperty("code").GetString());
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Contains(path, error.GetProperty("message").GetString());
        Assert.True(error.TryGetProperty("param", out _));
    }

    [Theory]
    [InlineData("GET", "/v1/chat/completions", "POST")]
    [InlineData("DELETE", "/v1/completions", "POST")]
    [InlineData("POST", "/v1/models", "GET")]
    public async Task WrongMethod_405OpenAIErrorWithAllow(string method, string path, string allowed)
    {
        using var response = await Http.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        var error = await ErrorOf(response);
        Assert.Equal("method_not_allowed", error.GetProperty("code").GetString());
        Assert.Contains(allowed, response.Content.Headers.Allow);
    }

    [Fact]
    public async Task RequestId_Absent_NewOneOnEveryResponse()
    {
        using var ok = await Http.GetAsync("/v1/models");
        using var missing = await Http.GetAsync("/v1/embeddings");
        var a = Assert.Single(ok.Headers.GetValues("x-request-id"));
        var b = Assert.Single(missing.Headers.GetValues("x-request-id"));
        Assert.StartsWith("req_", a);
        Assert.StartsWith("req_", b);
        Assert.NotEqual(a, b);
    }

    [Fact]
    public async Task RequestId_ClientsOwn_KeptOnSuccessAndOnErrors()
    {
        foreach (var (path, body) in new[] { ("/v1/chat/completions", """{"model": "org/tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}"""),
                     ("/v1/chat/completions", """{"model": "org/tiny", "max_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}""") })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            request.Headers.Add("X-Request-Id", "client-id-42");
            using var response = await Http.SendAsync(request);
            Assert.Equal("client-id-42", Assert.Single(response.Headers.GetValues("x-request-id")));
        }
    }

    [Fact]
    public async Task RequestId_Unusable_Replaced()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        request.Headers.TryAddWithoutValidation("X-Request-Id", new string('x', 200));
        using var response = await Http.SendAsync(request);
        Assert.StartsWith("req_", Assert.Single(response.Headers.GetValues("x-request-id")));
    }

    [Theory]
    [InlineData("functions", """[{"name": "f", "parameters": {}}]""")]
    [InlineData("function_call", "\"auto\"")]
    [InlineData("audio", """{"voice": "alloy", "format": "wav"}""")]
    [InlineData("modalities", """["text", "audio"]""")]
    [InlineData("prediction", """{"type": "content", "content": "x"}""")]
    [InlineData("web_search_options", "{}")]
    public async Task UnsupportedField_400UnsupportedParameterNamingIt(string field, string value)
    {
        var body = $$"""{"model": "org/tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "{{field}}": {{value}}}""";
        using var response = await Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = await ErrorOf(response);
        Assert.Equal("unsupported_parameter", error.GetProperty("code").GetString());
        Assert.Equal(field, error.GetProperty("param").GetString());
    }

    [Fact]
    public async Task NoEffectFields_Accepted()
    {
        var body = """
            {"model": "org/tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}],
             "user": "u1", "store": false, "metadata": {"k": "v"}, "service_tier": "auto", "functions": null, "some_future_field": 1}
            """;
        using var response = await Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }
}
