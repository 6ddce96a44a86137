using System.ComponentModel;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Serving.Gateway.Api;

/// <summary>
/// Adds the proxied OpenAI routes (<c>POST /v1/chat/completions</c>, <c>POST /v1/completions</c>) to the gateway's OpenAPI
/// document: YARP serves them, so no endpoint describes itself. Each request body lists the fields the gateway reads
/// (<c>model</c>, <c>max_tokens</c>, <c>n</c>) and the nodes' extensions, which the gateway passes through untouched;
/// any other OpenAI field is allowed and forwarded as well.
/// </summary>
internal sealed class OpenAiRoutesDocument : IOpenApiDocumentTransformer
{
    public async Task TransformAsync(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken cancellationToken)
    {
        document.Paths ??= [];
        document.Tags ??= new HashSet<OpenApiTag>();
        document.Tags.Add(new OpenApiTag { Name = "OpenAI", Description = "The OpenAI-compatible routes, proxied to inference nodes" });
        var chat = await context.GetOrCreateSchemaAsync(typeof(ChatCompletionRequestDoc), null, cancellationToken);
        var completion = await context.GetOrCreateSchemaAsync(typeof(CompletionRequestDoc), null, cancellationToken);
        var response = await context.GetOrCreateSchemaAsync(typeof(ResponseExtensionsDoc), null, cancellationToken);
        document.Paths["/v1/chat/completions"] = Route(document, "CreateChatCompletion", "Chat completion (OpenAI), proxied to a node serving the model", chat, response);
        document.Paths["/v1/completions"] = Route(document, "CreateCompletion", "Completion (OpenAI), proxied to a node serving the model", completion, response);
    }

    private static OpenApiPathItem Route(OpenApiDocument document, string id, string summary, IOpenApiSchema request, IOpenApiSchema response)
    {
        foreach (var schema in new[] { request, response })
        {
            // OpenAI's other fields are accepted and forwarded as they are.
            if (schema is OpenApiSchema s) s.AdditionalPropertiesAllowed = true;
        }
        return new OpenApiPathItem
        {
            Operations = new Dictionary<HttpMethod, OpenApiOperation>
            {
                [HttpMethod.Post] = new()
                {
                    OperationId = id,
                    Summary = summary,
                    Description = "OpenAI's request and response; the gateway resolves `model` for the caller's tenant, charges its token "
                        + "budget and forwards every other field untouched. Extensions the nodes understand are listed; OpenAI clients ignore "
                        + "the response extensions. Streams (`stream: true`) answer `text/event-stream` chunks ending in `data: [DONE]`.",
                    Tags = new HashSet<OpenApiTagReference> { new("OpenAI", document) },
                    RequestBody = new OpenApiRequestBody
                    {
                        Required = true,
                        Content = new Dictionary<string, OpenApiMediaType> { ["application/json"] = new() { Schema = request } },
                    },
                    Responses = new OpenApiResponses
                    {
                        ["200"] = new OpenApiResponse
                        {
                            Description = "The completion (or an SSE stream of chunks)",
                            Content = new Dictionary<string, OpenApiMediaType>
                            {
                                ["application/json"] = new() { Schema = response },
                                ["text/event-stream"] = new(),
                            },
                        },
                        ["400"] = new OpenApiResponse { Description = "Invalid request (OpenAI error JSON; `param` names the field), or a reservation beyond the tenant's whole token budget (token_budget_exceeded)" },
                        ["404"] = new OpenApiResponse { Description = "Unknown model, adapter or reward head, or one the caller may not see" },
                        ["429"] = new OpenApiResponse { Description = "The tenant's request or token rate (with Retry-After)" },
                    },
                },
            },
        };
    }
}

/// <summary><c>alignment</c>: decoding-time alignment with the request's reward head.</summary>
internal sealed record AlignmentDoc(
    [property: JsonPropertyName("method"), Description("best_of_n | args | darwin")] string Method,
    [property: JsonPropertyName("n"), Description("best_of_n: samples from one prefill (default 4)")] int? N,
    [property: JsonPropertyName("return_all"), Description("best_of_n: return every sample with its reward")] bool? ReturnAll,
    [property: JsonPropertyName("k"), Description("args: candidates scored per step (default 10)")] int? K,
    [property: JsonPropertyName("weight"), Description("args: score = logit + weight · reward (default 1.5)")] float? Weight,
    [property: JsonPropertyName("variants"), Description("darwin: instruction variants, one beam each (default 5)")] int? Variants,
    [property: JsonPropertyName("interval"), Description("darwin: tokens between scorings (default 40)")] int? Interval,
    [property: JsonPropertyName("iterations"), Description("darwin: mutation rounds (default 1)")] int? Iterations,
    [property: JsonPropertyName("survivors"), Description("darwin: beams kept at each scoring (default 3)")] int? Survivors);

/// <summary>The node extensions every generation request may carry.</summary>
internal abstract record GenerationExtensionsDoc
{
    [JsonPropertyName("model"), Description("The base model, or base:adapter, base:tenant/adapter")]
    public required string Model { get; init; }

    [JsonPropertyName("max_tokens"), Description("Output tokens per choice; with n, what the token budget reserves at admission (clamped to the model's context); the response's usage settles it")]
    public int? MaxTokens { get; init; }

    [JsonPropertyName("n"), Description("Choices")]
    public int? N { get; init; }

    [JsonPropertyName("stream"), Description("Answer as server-sent events")]
    public bool? Stream { get; init; }

    [JsonPropertyName("reward_head"), Description("Extension: the reward head that scores the output, tenant/name or name (the caller's, else public's); see /v1/reward-heads")]
    public string? RewardHead { get; init; }

    [JsonPropertyName("return_token_rewards"), Description("Extension: the reward after every token (choices[i].token_rewards, and in each stream chunk)")]
    public bool? ReturnTokenRewards { get; init; }

    [JsonPropertyName("alignment"), Description("Extension: decoding-time alignment with the reward head (the node's default head when none is named)")]
    public AlignmentDoc? Alignment { get; init; }

    [JsonPropertyName("early_exit"), Description("Extension: early-exit settings, passed to the node unchanged (see the node's README)")]
    public JsonObject? EarlyExit { get; init; }

    [JsonPropertyName("return_tokens_as_token_ids"), Description("vLLM's: logprobs name each token and alternative `token_id:<id>` instead of its text (which may be empty or shared by several ids)")]
    public bool? ReturnTokensAsTokenIds { get; init; }
}

/// <summary><c>POST /v1/chat/completions</c> body (OpenAI's; the fields the gateway and the node extensions use are listed).</summary>
internal sealed record ChatCompletionRequestDoc : GenerationExtensionsDoc
{
    [JsonPropertyName("messages"), Description("The conversation (OpenAI's message objects)")]
    public required JsonArray Messages { get; init; }
}

/// <summary><c>POST /v1/completions</c> body.</summary>
internal sealed record CompletionRequestDoc : GenerationExtensionsDoc
{
    [JsonPropertyName("prompt"), Description("A string, a list of strings, a list of token ids, or a list of token-id lists (several prompts: each prompt's n choices follow the previous prompt's)")]
    public required JsonNode Prompt { get; init; }
}

/// <summary>Usage with the node's extension.</summary>
internal sealed record UsageDoc(
    [property: JsonPropertyName("prompt_tokens")] int PromptTokens,
    [property: JsonPropertyName("completion_tokens")] int CompletionTokens,
    [property: JsonPropertyName("total_tokens")] int TotalTokens,
    [property: JsonPropertyName("generated_tokens"), Description("Extension: every token the node generated (alignment candidates and beams too); the token budget counts it")] int? GeneratedTokens);

/// <summary>The response extensions (choices carry <c>reward</c> and <c>token_rewards</c>).</summary>
internal sealed record ResponseExtensionsDoc(
    [property: JsonPropertyName("choices"), Description("OpenAI's choices; with a reward head each has `reward` (after its last token) and, on request, `token_rewards`")] JsonArray Choices,
    [property: JsonPropertyName("usage")] UsageDoc Usage,
    [property: JsonPropertyName("alignment"), Description("Extension: what the alignment method did (candidates' rewards, DARWIN's archive)")] JsonObject? Alignment);
