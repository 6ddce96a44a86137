using System.Text.Json;
using System.Text.Json.Serialization;
using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;

namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// vLLM's <c>POST /tokenize</c> and <c>POST /detokenize</c> with vLLM's request and response shapes: text or chat
/// messages to the token ids the completions routes would run (through the same tokenizer and chat template), and ids
/// back to text. <c>model</c> is checked as on the generation routes (the base, or an adapter the caller may use, whose
/// tokenizer is the base's); bad input is a 400 in OpenAI's error shape naming the field.
/// </summary>
public static class TokenizeApi
{
    /// <summary>Maps <c>/tokenize</c> and <c>/detokenize</c> (at the root, as vLLM serves them).</summary>
    public static IEndpointRouteBuilder MapTokenizeApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/tokenize", TokenizeAsync).WithName("Tokenize").WithTags("Tokenizer")
            .Accepts<TokenizeRequestBody>("application/json").Produces<TokenizeResponse>(contentType: "application/json")
            .WithSummary("Text (prompt) or chat messages to token ids, as the completions routes tokenize them (vLLM's /tokenize)");
        app.MapPost("/detokenize", DetokenizeAsync).WithName("Detokenize").WithTags("Tokenizer")
            .Accepts<DetokenizeRequestBody>("application/json").Produces<DetokenizeResponse>(contentType: "application/json")
            .WithSummary("Token ids to text, special tokens included (vLLM's /detokenize)");
        return app;
    }

    /// <summary><c>POST /tokenize</c>.</summary>
    public static async Task<IResult> TokenizeAsync(HttpContext context, ModelHost host, ModelCatalog catalog, AdapterManager adapters)
    {
        var tenant = OpenAIApi.Tenant(context);
        var body = await OpenAIApi.ReadBodyAsync<TokenizeRequestBody>(context).ConfigureAwait(false);
        await CheckModelAsync(body.Model, tenant, catalog, adapters, context.RequestAborted).ConfigureAwait(false);
        int[] tokens;
        switch (body.Prompt.ValueKind, body.Messages)
        {
            case (JsonValueKind.String, null):
                tokens = host.Tokenizer.Encode(body.Prompt.GetString()!, (body.AddSpecialTokens ?? true) && host.Tokenizer.AddBosByDefault);
                break;
            case (JsonValueKind.Undefined or JsonValueKind.Null, { } messages):
                tokens = OpenAIRequestMapper.Render(host, OpenAIRequestMapper.Messages(messages), body.AddGenerationPrompt ?? true, body.AddSpecialTokens ?? false);
                break;
            case (JsonValueKind.Undefined or JsonValueKind.Null, null):
                throw Refusals.Invalid("prompt", "Send prompt (a string) or messages (a chat conversation) to tokenize.");
            case (JsonValueKind.String, not null):
                throw Refusals.Invalid("messages", "Send either prompt or messages, not both.");
            default:
                throw Refusals.Invalid("prompt", "prompt must be a string (tokenize token ids back with /detokenize).");
        }
        return TypedResults.Ok(new TokenizeResponse(tokens.Length, host.MaxContext, tokens));
    }

    /// <summary><c>POST /detokenize</c>.</summary>
    public static async Task<IResult> DetokenizeAsync(HttpContext context, ModelHost host, ModelCatalog catalog, AdapterManager adapters)
    {
        var tenant = OpenAIApi.Tenant(context);
        var body = await OpenAIApi.ReadBodyAsync<DetokenizeRequestBody>(context).ConfigureAwait(false);
        await CheckModelAsync(body.Model, tenant, catalog, adapters, context.RequestAborted).ConfigureAwait(false);
        if (body.Tokens.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) throw Refusals.Invalid("tokens", "tokens (a list of token ids) is required.");
        if (body.Tokens.ValueKind != JsonValueKind.Array) throw Refusals.Invalid("tokens", "tokens must be a list of token ids.");
        var vocab = host.Config.VocabSize;
        var ids = new int[body.Tokens.GetArrayLength()];
        var i = 0;
        foreach (var item in body.Tokens.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out var id))
            {
                throw Refusals.Invalid("tokens", $"tokens[{i}] is {(item.ValueKind == JsonValueKind.Number ? item.GetRawText() : item.ValueKind.ToString().ToLowerInvariant())}; token ids are integers.");
            }
            if ((uint)id >= (uint)vocab) throw Refusals.Invalid("tokens", $"tokens[{i}] = {id} is outside the vocabulary [0, {vocab}).");
            ids[i++] = id;
        }
        return TypedResults.Ok(new DetokenizeResponse(host.Tokenizer.Decode(ids, skipSpecialTokens: false)));
    }

    /// <summary>404 unless <paramref name="model"/> is the base (or absent, as vLLM allows) or an adapter the caller may use.</summary>
    private static async Task CheckModelAsync(string? model, string? tenant, ModelCatalog catalog, AdapterManager adapters, CancellationToken ct)
    {
        switch (catalog.Resolve(model, out var adapter))
        {
            case ModelResolution.UnknownModel:
                throw Refusals.ModelNotFound(model!);
            case ModelResolution.Adapter:
                await adapters.ResolveAsync(adapter!, tenant, model!, ct).ConfigureAwait(false);
                break;
            case ModelResolution.BareAdapter:
                await adapters.ResolveBareAsync(adapter!, tenant, ct).ConfigureAwait(false);
                break;
        }
    }
}

/// <summary>
/// <c>POST /tokenize</c> body (vLLM's): <c>prompt</c> (a string) or <c>messages</c> (a chat conversation, rendered by the
/// model's chat template, with <c>add_generation_prompt</c>, default true). <c>add_special_tokens</c> adds what the
/// tokenizer adds by itself (a BOS when the checkpoint's <c>add_bos_token</c> asks for one); as in vLLM its default is
/// true for a prompt (what the completions route adds) and false for messages (what the chat route does: the template
/// writes its own BOS, as transformers' <c>apply_chat_template</c>).
/// </summary>
public sealed class TokenizeRequestBody
{
    /// <summary>The base model or an adapter (<c>base:tenant/name</c>); the tokenizer is the base's.</summary>
    public string? Model { get; set; }

    /// <summary>Text to tokenize.</summary>
    public JsonElement Prompt { get; set; }

    /// <summary>A conversation to render with the chat template and tokenize.</summary>
    public List<ChatMessageBody>? Messages { get; set; }

    /// <summary>With messages: end with the assistant's turn opening (default true).</summary>
    public bool? AddGenerationPrompt { get; set; }

    /// <summary>Let the tokenizer add its own special tokens (default true).</summary>
    public bool? AddSpecialTokens { get; set; }
}

/// <summary><c>POST /tokenize</c> response (vLLM's).</summary>
/// <param name="Count">How many tokens.</param>
/// <param name="MaxModelLen">The node's context: prompt + output tokens one request may hold.</param>
/// <param name="Tokens">The token ids.</param>
public sealed record TokenizeResponse(int Count, [property: JsonPropertyName("max_model_len")] int MaxModelLen, IReadOnlyList<int> Tokens);

/// <summary><c>POST /detokenize</c> body (vLLM's).</summary>
public sealed class DetokenizeRequestBody
{
    /// <summary>The base model or an adapter (<c>base:tenant/name</c>); the tokenizer is the base's.</summary>
    public string? Model { get; set; }

    /// <summary>Token ids, each in [0, vocabulary size).</summary>
    public JsonElement Tokens { get; set; }
}

/// <summary><c>POST /detokenize</c> response (vLLM's): the text of the ids, special tokens written out.</summary>
/// <param name="Prompt">The decoded text.</param>
public sealed record DetokenizeResponse(string Prompt);
