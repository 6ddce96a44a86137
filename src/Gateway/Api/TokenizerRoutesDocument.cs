using System.ComponentModel;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Serving.Gateway.Api;

/// <summary>
/// Adds vLLM's tokenizer routes (<c>POST /tokenize</c>, <c>POST /detokenize</c>), proxied to a node serving the model
/// like the OpenAI routes, to the gateway's OpenAPI document (YARP serves them, so no endpoint describes itself).
/// </summary>
internal sealed class TokenizerRoutesDocument : IOpenApiDocumentTransformer
{
    public async Task TransformAsync(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken cancellationToken)
    {
        document.Paths ??= [];
        document.Tags ??= new HashSet<OpenApiTag>();
        document.Tags.Add(new OpenApiTag { Name = "Tokenizer", Description = "vLLM's tokenizer routes, proxied to inference nodes" });
        var tokenize = await context.GetOrCreateSchemaAsync(typeof(TokenizeRequestDoc), null, cancellationToken);
        var tokens = await context.GetOrCreateSchemaAsync(typeof(TokenizeResponseDoc), null, cancellationToken);
        var detokenize = await context.GetOrCreateSchemaAsync(typeof(DetokenizeRequestDoc), null, cancellationToken);
        var text = await context.GetOrCreateSchemaAsync(typeof(DetokenizeResponseDoc), null, cancellationToken);
        document.Paths["/tokenize"] = Route(document, "Tokenize",
            "Text (prompt) or chat messages to the token ids the completions routes would run (vLLM's /tokenize)", tokenize, tokens);
        document.Paths["/detokenize"] = Route(document, "Detokenize", "Token ids to text, special tokens written out (vLLM's /detokenize)", detokenize, text);
    }

    private static OpenApiPathItem Route(OpenApiDocument document, string id, string summary, IOpenApiSchema request, IOpenApiSchema response) => new()
    {
        Operations = new Dictionary<HttpMethod, OpenApiOperation>
        {
            [HttpMethod.Post] = new()
            {
                OperationId = id,
                Summary = summary,
                Description = "vLLM's request and response. The gateway resolves `model` for the caller's tenant (an adapter's tokenizer is its "
                    + "base's), charges the token budget with the body's size only (nothing is generated) and forwards the request to a node "
                    + "serving the model.",
                Tags = new HashSet<OpenApiTagReference> { new("Tokenizer", document) },
                RequestBody = new OpenApiRequestBody
                {
                    Required = true,
                    Content = new Dictionary<string, OpenApiMediaType> { ["application/json"] = new() { Schema = request } },
                },
                Responses = new OpenApiResponses
                {
                    ["200"] = new OpenApiResponse
                    {
                        Description = "The result",
                        Content = new Dictionary<string, OpenApiMediaType> { ["application/json"] = new() { Schema = response } },
                    },
                    ["400"] = new OpenApiResponse { Description = "Invalid request (OpenAI error JSON; `param` names the field: a missing prompt/messages/tokens, an id outside the vocabulary)" },
                    ["404"] = new OpenApiResponse { Description = "Unknown model or adapter, or one the caller may not see" },
                    ["429"] = new OpenApiResponse { Description = "The tenant's request or token rate (with Retry-After)" },
                },
            },
        },
    };
}

/// <summary><c>POST /tokenize</c> body (vLLM's): <c>prompt</c> or <c>messages</c>.</summary>
internal sealed record TokenizeRequestDoc(
    [property: JsonPropertyName("model"), Description("The base model, or base:adapter, base:tenant/adapter (the tokenizer is the base's); required at the gateway")] string Model,
    [property: JsonPropertyName("prompt"), Description("Text to tokenize")] string? Prompt,
    [property: JsonPropertyName("messages"), Description("A chat conversation, rendered with the model's chat template (instead of prompt)")] JsonArray? Messages,
    [property: JsonPropertyName("add_generation_prompt"), Description("With messages: end with the assistant's turn opening (default true)")] bool? AddGenerationPrompt,
    [property: JsonPropertyName("add_special_tokens"), Description("Let the tokenizer add its own special tokens, e.g. a BOS the checkpoint asks for (default true: what the completions and chat routes do)")] bool? AddSpecialTokens);

/// <summary><c>POST /tokenize</c> response (vLLM's).</summary>
internal sealed record TokenizeResponseDoc(
    [property: JsonPropertyName("count"), Description("How many tokens")] int Count,
    [property: JsonPropertyName("max_model_len"), Description("The node's context: prompt + output tokens of one request")] int MaxModelLen,
    [property: JsonPropertyName("tokens"), Description("The token ids")] IReadOnlyList<int> Tokens);

/// <summary><c>POST /detokenize</c> body (vLLM's).</summary>
internal sealed record DetokenizeRequestDoc(
    [property: JsonPropertyName("model"), Description("The base model, or base:adapter, base:tenant/adapter; required at the gateway")] string Model,
    [property: JsonPropertyName("tokens"), Description("Token ids, each in [0, vocabulary size)")] IReadOnlyList<int> Tokens);

/// <summary><c>POST /detokenize</c> response (vLLM's).</summary>
internal sealed record DetokenizeResponseDoc(
    [property: JsonPropertyName("prompt"), Description("The text of the ids")] string Prompt);
