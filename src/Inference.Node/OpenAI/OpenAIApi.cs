using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.OpenAI;

/// <summary>The OpenAI-compatible routes: <c>/v1/completions</c>, <c>/v1/chat/completions</c>, <c>/v1/models</c>.</summary>
public static class OpenAIApi
{
    internal static readonly JsonSerializerOptions RequestJson = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        PropertyNameCaseInsensitive = false,
    };

    /// <summary>Maps the routes under <c>/v1</c>.</summary>
    public static IEndpointRouteBuilder MapOpenAIApi(this IEndpointRouteBuilder app)
    {
        var v1 = app.MapGroup("/v1");
        v1.MapPost("/completions", CreateCompletionAsync);
        v1.MapPost("/chat/completions", CreateChatCompletionAsync);
        v1.MapGet("/models", ListModels);
        v1.MapGet("/models/{**id}", GetModel);
        return app;
    }

    /// <summary><c>POST /v1/completions</c>.</summary>
    public static Task<IResult> CreateCompletionAsync(HttpContext context, ModelHost host, ModelCatalog catalog, IOptions<NodeOptions> options,
        NodeMetrics metrics, TimeProvider time, ILoggerFactory loggers) =>
        GenerateAsync<CompletionRequestBody>(context, host, catalog, options.Value, metrics, time, loggers, "cmpl-",
            (body, id, deadline) => OpenAIRequestMapper.Completion(body, host, id, deadline));

    /// <summary><c>POST /v1/chat/completions</c>.</summary>
    public static Task<IResult> CreateChatCompletionAsync(HttpContext context, ModelHost host, ModelCatalog catalog, IOptions<NodeOptions> options,
        NodeMetrics metrics, TimeProvider time, ILoggerFactory loggers) =>
        GenerateAsync<ChatCompletionRequestBody>(context, host, catalog, options.Value, metrics, time, loggers, "chatcmpl-",
            (body, id, deadline) => OpenAIRequestMapper.Chat(body, host, id, deadline));

    /// <summary><c>GET /v1/models</c>: the base model (adapters join when they land).</summary>
    public static Ok<ModelListResponse> ListModels(ModelHost host) =>
        TypedResults.Ok(new ModelListResponse("list", [Model(host)]));

    /// <summary><c>GET /v1/models/{id}</c>.</summary>
    public static IResult GetModel(string id, ModelHost host) =>
        id == host.ModelId ? TypedResults.Ok(Model(host)) : OpenAIErrors.ModelNotFound(id);

    private static ModelBody Model(ModelHost host) => new(host.ModelId, "model", host.LoadedAt.ToUnixTimeSeconds(), "serving", host.MaxContext);

    private static async Task<IResult> GenerateAsync<TBody>(HttpContext context, ModelHost host, ModelCatalog catalog, NodeOptions options,
        NodeMetrics metrics, TimeProvider time, ILoggerFactory loggers, string idPrefix, Func<TBody, string, DateTimeOffset, PreparedRequest> prepare)
        where TBody : GenerationRequestBody
    {
        var logger = loggers.CreateLogger("Serving.Inference.Node.OpenAI");
        var id = idPrefix + Guid.NewGuid().ToString("N");
        var ct = context.RequestAborted;
        PreparedRequest prepared;
        TBody body;
        try
        {
            try
            {
                body = await JsonSerializer.DeserializeAsync<TBody>(context.Request.Body, RequestJson, ct).ConfigureAwait(false)
                    ?? throw OpenAIRequestException.Invalid(null, "The request body must be a JSON object.");
            }
            catch (JsonException e)
            {
                var param = e.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : null;
                throw OpenAIRequestException.Invalid(param, $"The request body is not valid JSON for this endpoint: {e.Message}", "invalid_json");
            }
            switch (catalog.Resolve(body.Model, out var adapter))
            {
                case ModelResolution.UnknownModel:
                    return OpenAIErrors.ModelNotFound(body.Model!);
                case ModelResolution.UnknownAdapter:
                    return OpenAIErrors.AdapterNotFound(body.Model!, adapter!);
            }
            prepared = prepare(body, id, time.GetUtcNow().AddSeconds(options.RequestTimeoutSeconds));
        }
        catch (OpenAIRequestException e)
        {
            NodeLog.InvalidRequest(logger, id, e.Param);
            return OpenAIErrors.Result(e);
        }
        catch (SamplingParameterException e)
        {
            NodeLog.InvalidRequest(logger, id, e.Param);
            return OpenAIErrors.Result(OpenAIRequestException.Invalid(e.Param, e.Message));
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return Results.Empty;
        }

        SubmitStatus status;
        GenerationHandle? handle;
        try
        {
            status = host.Scheduler.Submit(prepared.Generation, out handle);
        }
        catch (SamplingParameterException e)
        {
            var isChat = typeof(TBody) == typeof(ChatCompletionRequestBody);
            var param = e.Param switch { "max_tokens" => prepared.MaxTokensParam, "prompt" when isChat => "messages", var other => other };
            NodeLog.InvalidRequest(logger, id, param);
            return OpenAIErrors.Result(OpenAIRequestException.Invalid(param, e.Message));
        }
        switch (status)
        {
            case SubmitStatus.QueueFull:
                metrics.Rejected("queue_full");
                NodeLog.RequestRefused(logger, id, "queue full");
                return OpenAIErrors.QueueFull(options.RetryAfterSeconds);
            case SubmitStatus.Unavailable:
                metrics.Rejected("draining");
                NodeLog.RequestRefused(logger, id, "draining");
                return OpenAIErrors.Unavailable(options.RetryAfterSeconds);
        }

        var response = new ResponseContext(id, host.ModelId, time.GetUtcNow().ToUnixTimeSeconds(), host.Tokenizer, prepared, handle!,
            typeof(TBody) == typeof(ChatCompletionRequestBody));
        if (prepared.Stream) return new SseResult(response, logger);
        try
        {
            return await NonStreaming.CollectAsync(response, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            handle!.Cancel();
            NodeLog.ClientDisconnected(logger, id);
            return Results.Empty;
        }
    }
}
