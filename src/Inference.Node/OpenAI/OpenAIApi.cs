using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.EarlyExit;
using Serving.Inference.Node.RewardHeads;
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

    /// <summary>How extension objects (the alignment report) are written inside streamed chunks: as the non-streamed body writes them.</summary>
    internal static readonly JsonSerializerOptions ResponseJson = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Maps the routes under <c>/v1</c>, and vLLM's <c>/tokenize</c> and <c>/detokenize</c> (<see cref="TokenizeApi"/>).</summary>
    public static IEndpointRouteBuilder MapOpenAIApi(this IEndpointRouteBuilder app)
    {
        var v1 = app.MapGroup("/v1").WithTags("OpenAI");
        // The handlers read their bodies themselves (to name the offending field); Accepts/Produces describe them in /openapi/v1.json.
        v1.MapPost("/completions", CreateCompletionAsync).WithName("CreateCompletion")
            .Accepts<CompletionRequestBody>("application/json").Produces<CompletionResponse>(contentType: "application/json");
        v1.MapPost("/chat/completions", CreateChatCompletionAsync).WithName("CreateChatCompletion")
            .Accepts<ChatCompletionRequestBody>("application/json").Produces<ChatCompletionResponse>(contentType: "application/json");
        v1.MapGet("/models", ListModels).WithName("ListModels").Produces<ModelListResponse>();
        v1.MapGet("/models/{**id}", GetModel).WithName("GetModel").Produces<ModelBody>();
        app.MapTokenizeApi();
        return app;
    }

    /// <summary><c>POST /v1/completions</c>.</summary>
    public static Task<IResult> CreateCompletionAsync(HttpContext context, ModelHost host, ModelCatalog catalog, AdapterManager adapters, RewardHeadCatalog rewardHeads,
        ExitCatalog exits, IOptions<NodeOptions> options, NodeMetrics metrics, TimeProvider time, ILoggerFactory loggers) =>
        GenerateAsync<CompletionRequestBody>(context, host, catalog, adapters, rewardHeads, exits, options.Value, metrics, time, loggers, "cmpl-",
            (body, id, deadline, head) => OpenAIRequestMapper.Completions(body, host, id, deadline, head));

    /// <summary><c>POST /v1/chat/completions</c>.</summary>
    public static Task<IResult> CreateChatCompletionAsync(HttpContext context, ModelHost host, ModelCatalog catalog, AdapterManager adapters, RewardHeadCatalog rewardHeads,
        ExitCatalog exits, IOptions<NodeOptions> options, NodeMetrics metrics, TimeProvider time, ILoggerFactory loggers) =>
        GenerateAsync<ChatCompletionRequestBody>(context, host, catalog, adapters, rewardHeads, exits, options.Value, metrics, time, loggers, "chatcmpl-",
            (body, id, deadline, head) => [OpenAIRequestMapper.Chat(body, host, id, deadline, head)]);

    /// <summary>Header carrying the caller's tenant (set by the gateway); absent means tenant <c>public</c>.</summary>
    public const string TenantHeader = "X-Serving-Tenant";

    /// <summary>Response header naming the adapter content a request ran with (<c>tenant/name@version</c> or a merge key).</summary>
    public const string AdapterHeader = "X-Serving-Adapter";

    /// <summary>Response header naming the reward head a request ran with (<c>tenant/name@version</c>).</summary>
    public const string RewardHeadHeader = "X-Serving-Reward-Head";

    /// <summary>
    /// <c>GET /v1/models</c>: the base model and the adapters the caller may use (its tenant's and <c>public</c>'s, made
    /// for this base), as <c>base:tenant/name</c>.
    /// </summary>
    public static async Task<IResult> ListModels(HttpContext context, ModelHost host, AdapterManager adapters)
    {
        var tenant = Tenant(context);
        var list = new List<ModelBody> { Model(host) };
        foreach (var m in await adapters.ListVisibleAsync(tenant, context.RequestAborted).ConfigureAwait(false)) list.Add(AdapterModel(host, m));
        return TypedResults.Ok(new ModelListResponse("list", list));
    }

    /// <summary><c>GET /v1/models/{id}</c>: the base or a visible adapter (<c>base:tenant/name</c>).</summary>
    public static async Task<IResult> GetModel(string id, HttpContext context, ModelHost host, ModelCatalog catalog, AdapterManager adapters)
    {
        var tenant = Tenant(context);
        // SDKs percent-encode the '/' of an adapter id (base:tenant%2Fname); the catch-all keeps %2F encoded.
        id = Uri.UnescapeDataString(id);
        if (id == host.ModelId) return TypedResults.Ok(Model(host));
        if (catalog.Resolve(id, out var adapter) != ModelResolution.Adapter) throw Refusals.ModelNotFound(id);
        foreach (var m in await adapters.ListVisibleAsync(tenant, context.RequestAborted).ConfigureAwait(false))
        {
            if (adapter == $"{m.Tenant}/{m.Name}" || (adapter == m.Name && m.Tenant == (tenant ?? Serving.Contracts.Models.ModelId.PublicTenant)))
            {
                return TypedResults.Ok(AdapterModel(host, m));
            }
        }
        throw Refusals.ModelNotFound(id);
    }

    private static ModelBody Model(ModelHost host) => new(host.ModelId, "model", host.LoadedAt.ToUnixTimeSeconds(), "serving", host.MaxContext);

    private static ModelBody AdapterModel(ModelHost host, AdapterMetadata m) =>
        new($"{host.ModelId}:{m.Tenant}/{m.Name}", "model", m.Created.ToUnixTimeSeconds(), m.Tenant, host.MaxContext) { Parent = host.ModelId, Version = m.Version };

    /// <summary>Reads <c>X-Serving-Tenant</c> (null when absent); a malformed value is a 400.</summary>
    internal static string? Tenant(HttpContext context)
    {
        var tenant = context.Request.Headers[TenantHeader].FirstOrDefault();
        if (tenant is null || AdapterKeys.IsValidTenant(tenant)) return tenant;
        throw Refusals.Invalid(null, $"The {TenantHeader} header must be a tenant id (1–64 of a-z, 0-9, '_', '-'), got '{tenant}'.", ErrorCodes.InvalidTenant);
    }

    /// <summary>The adapter a request runs with: <c>model</c>'s adapter, or a <c>merged_adapters</c> merge (validated here).</summary>
    private static async Task<Serving.Inference.Scheduling.AdapterRef?> ResolveAdapterAsync(GenerationRequestBody body, ModelResolution resolution, string? adapter,
        string? tenant, AdapterManager adapters, CancellationToken ct)
    {
        if (body.MergedAdapters is { } merge)
        {
            if (resolution != ModelResolution.Base)
            {
                throw Refusals.Invalid("merged_adapters", "merged_adapters takes the adapters to merge; set model to the base model alone.");
            }
            if (merge.MergeStrategy is { } strategy && strategy != "linear")
            {
                throw Refusals.Invalid("merged_adapters.merge_strategy", $"merge_strategy '{strategy}' is not supported; use 'linear'.");
            }
            if (merge.Ids is not { Count: > 0 } ids || ids.Any(string.IsNullOrEmpty))
            {
                throw Refusals.Invalid("merged_adapters.ids", "merged_adapters.ids must be a non-empty list of adapter ids (name, tenant/name or base:tenant/name).");
            }
            if (ids.Count > AdapterManager.MaxMergeParts)
            {
                throw Refusals.Invalid("merged_adapters.ids", $"A merge takes at most {AdapterManager.MaxMergeParts} adapters, got {ids.Count}.");
            }
            if (merge.Weights is not { } weights || weights.Count != ids.Count)
            {
                throw Refusals.Invalid("merged_adapters.weights", $"merged_adapters.weights must hold one number per id ({ids.Count}).");
            }
            for (var i = 0; i < weights.Count; i++)
            {
                if (!double.IsFinite(weights[i]) || Math.Abs(weights[i]) > 1e6)
                {
                    throw Refusals.Invalid($"merged_adapters.weights[{i}]", $"Merge weights must be finite numbers of magnitude at most 1e6, got {weights[i]}.");
                }
            }
            if (!adapters.Enabled) throw Refusals.ModelNotFound(ids[0], "merged_adapters.ids[0]");
            return await adapters.ResolveMergeAsync(ids, [.. weights.Select(w => (float)w)], tenant, ct).ConfigureAwait(false);
        }
        return resolution switch
        {
            ModelResolution.Adapter => await adapters.ResolveAsync(adapter!, tenant, body.Model!, ct).ConfigureAwait(false),
            ModelResolution.BareAdapter => await adapters.ResolveBareAsync(adapter!, tenant, ct).ConfigureAwait(false),
            _ => null,
        };
    }

    /// <summary>
    /// The request body as <typeparamref name="TBody"/>; malformed JSON is a 400 naming the field the parser stopped at.
    /// </summary>
    internal static async Task<TBody> ReadBodyAsync<TBody>(HttpContext context) where TBody : class
    {
        // Strings that are not UTF-8 are a 400 naming the field before anything is parsed (RequestBodyReader).
        return await RequestBodyReader.ReadAsync<TBody>(context.Request, context.RequestAborted).ConfigureAwait(false);
    }

    private static async Task<IResult> GenerateAsync<TBody>(HttpContext context, ModelHost host, ModelCatalog catalog, AdapterManager adapters,
        RewardHeadCatalog rewardHeads, ExitCatalog exits, NodeOptions options, NodeMetrics metrics, TimeProvider time, ILoggerFactory loggers, string idPrefix,
        Func<TBody, string, DateTimeOffset, Rewards.RewardHead?, IReadOnlyList<PreparedRequest>> prepare)
        where TBody : GenerationRequestBody
    {
        var logger = loggers.CreateLogger("Serving.Inference.Node.OpenAI");
        var id = idPrefix + Guid.NewGuid().ToString("N");
        // The request's X-Request-Id (the client's, or the one the gateway or UseRequestIds gave it): the id its log
        // records and spans carry, those the scheduler writes on its own thread included. The response's "id" is the
        // OpenAI-shaped completion id.
        var requestId = context.TraceIdentifier;
        var ct = context.RequestAborted;
        var responseModel = host.ModelId; // echoed as the response's "model": the base, or what the client asked for with an adapter
        // Refusals (RequestRefusedException, SamplingParameterException, an unreachable store) and a client that went
        // away are the node's exception handler's to answer.
        var tenant = Tenant(context);
        // Overloaded: refuse before the body is parsed, templated and tokenized, so that a refusal costs next to nothing
        // and the decode loop keeps the CPU (docs/overload.md). Submit checks again, exactly, under the queue's lock.
        if (host.Scheduler.QueueFull) throw QueueFull(metrics, logger, id);
        var body = await ReadBodyAsync<TBody>(context).ConfigureAwait(false);
        RequestFieldPolicy.Check(body, logger);
        var resolution = catalog.Resolve(body.Model, out var adapter);
        if (resolution == ModelResolution.UnknownModel) throw Refusals.ModelNotFound(body.Model!);
        var adapterRef = await ResolveAdapterAsync(body, resolution, adapter, tenant, adapters, ct).ConfigureAwait(false);
        var head = await rewardHeads.ResolveAsync(body.RewardHead, tenant, wanted: body.Alignment is not null || body.ReturnTokenRewards == true, ct).ConfigureAwait(false);
        if (head is not null) context.Response.Headers[RewardHeadHeader] = head.Key;
        // One prepared request per prompt (a completions prompt may hold several); chat always has one.
        var prepared = prepare(body, requestId, time.GetUtcNow() + options.RequestTimeout, head).ToArray();
        for (var i = 0; i < prepared.Length; i++)
        {
            var p = prepared[i];
            if (p.IncludeUsage && body.StreamOptions?.ContinuousUsageStats == true) p = p with { ContinuousUsage = true };
            // echo scores the prompt with every layer (an explicit early_exit was refused): the node's default mode stays off.
            if (p.Echo is null) p = exits.Apply(body.EarlyExit, p);
            if (tenant is not null) p = p with { Generation = p.Generation with { Tenant = tenant } };
            if (adapterRef is not null) p = p with { Generation = p.Generation with { Adapter = adapterRef } };
            prepared[i] = p;
        }
        if (adapterRef is not null)
        {
            responseModel = string.IsNullOrEmpty(body.Model) ? host.ModelId : body.Model;
            context.Response.Headers[AdapterHeader] = adapterRef.Key;
        }

        var handles = Submit(host, prepared, body, typeof(TBody) == typeof(ChatCompletionRequestBody), metrics, logger, requestId);
        var created = time.GetUtcNow().ToUnixTimeSeconds();
        var parts = new ResponseContext[prepared.Length];
        var offset = 0;
        for (var i = 0; i < parts.Length; i++)
        {
            parts[i] = new ResponseContext(id, responseModel, created, host.Tokenizer, prepared[i], handles[i], typeof(TBody) == typeof(ChatCompletionRequestBody))
            {
                ChoiceOffset = offset,
                Logger = logger,
            };
            offset += parts[i].Choices;
        }
        if (prepared[0].Stream) return new SseResult(parts, logger);
        try
        {
            return await NonStreaming.CollectAsync(parts, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            foreach (var h in handles) h.Cancel();
            NodeLog.ClientDisconnected(logger, requestId);
            return Results.Empty;
        }
    }

    private static RequestRefusedException QueueFull(NodeMetrics metrics, ILogger logger, string id)
    {
        metrics.Rejected("queue_full");
        NodeLog.RequestRefused(logger, id, "queue full");
        return Refusals.QueueFull();
    }

    /// <summary>
    /// Queues every prompt's request, all or none: a refusal of one (a sampling field, a full queue, draining) cancels
    /// those already queued before it is thrown, so no prompt of a refused request runs.
    /// </summary>
    private static GenerationHandle[] Submit(ModelHost host, PreparedRequest[] prepared, GenerationRequestBody body, bool isChat, NodeMetrics metrics, ILogger logger, string id)
    {
        var handles = new GenerationHandle[prepared.Length];
        var submitted = 0;
        try
        {
            for (; submitted < prepared.Length; submitted++)
            {
                SubmitStatus status;
                GenerationHandle? handle;
                try
                {
                    status = host.Scheduler.Submit(prepared[submitted].Generation, out handle);
                }
                catch (SamplingParameterException e)
                {
                    var param = e.Param switch
                    {
                        "max_tokens" => prepared[submitted].MaxTokensParam,
                        "prompt" when isChat => "messages",
                        "prompt" when prepared.Length > 1 => $"prompt[{submitted}]",
                        "model" when body.MergedAdapters is not null => "merged_adapters",
                        var other => other,
                    };
                    throw Refusals.Invalid(param, e.Message);
                }
                switch (status)
                {
                    case SubmitStatus.QueueFull:
                        throw QueueFull(metrics, logger, id);
                    case SubmitStatus.Unavailable:
                        metrics.Rejected("draining");
                        NodeLog.RequestRefused(logger, id, "draining");
                        throw Refusals.Draining();
                }
                handles[submitted] = handle!;
            }
            return handles;
        }
        catch
        {
            for (var i = 0; i < submitted; i++) handles[i].Cancel();
            throw;
        }
    }
}
