using System.Text.Json;
using System.Text.Json.Serialization;

namespace Serving.Inference.Node.OpenAI;

// Request bodies. Numbers stay nullable so a missing field takes the OpenAI default; fields with several JSON shapes
// (prompt, stop, content) are JsonElement and checked by OpenAIRequestMapper. Unknown fields land in UnknownFields and
// are judged by RequestFieldPolicy.

/// <summary>Fields shared by completions and chat completions (OpenAI names, plus vLLM's top_k, min_p, repetition_penalty, ignore_eos).</summary>
public abstract class GenerationRequestBody
{
    public string? Model { get; set; }
    public int? MaxTokens { get; set; }
    public float? Temperature { get; set; }
    public float? TopP { get; set; }
    public int? N { get; set; }
    public bool? Stream { get; set; }
    public StreamOptionsBody? StreamOptions { get; set; }
    public JsonElement Stop { get; set; }
    public long? Seed { get; set; }
    public float? PresencePenalty { get; set; }
    public float? FrequencyPenalty { get; set; }
    public string? User { get; set; }
    public int? TopK { get; set; }
    public float? MinP { get; set; }
    public float? RepetitionPenalty { get; set; }
    public bool? IgnoreEos { get; set; }
    public bool? SkipSpecialTokens { get; set; }

    /// <summary>OpenAI's <c>logit_bias</c>: token id (as a string key) → a value in [-100, 100] added to its logit.</summary>
    public Dictionary<string, double>? LogitBias { get; set; }
    public MergedAdaptersBody? MergedAdapters { get; set; }

    /// <summary>vLLM's: logprobs name tokens <c>token_id:&lt;id&gt;</c> instead of their text (which may be empty or shared by several ids).</summary>
    public bool? ReturnTokensAsTokenIds { get; set; }

    /// <summary>Extension: the reward head that scores the output (<c>tenant/name</c> or <c>name</c>).</summary>
    public string? RewardHead { get; set; }

    /// <summary>Extension: report the reward after every token.</summary>
    public bool? ReturnTokenRewards { get; set; }

    /// <summary>Extension: decoding-time alignment with the reward head.</summary>
    public AlignmentBody? Alignment { get; set; }

    /// <summary>OpenAI's <c>response_format</c>: <c>{"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}}</c>.</summary>
    public JsonElement ResponseFormat { get; set; }

    /// <summary>vLLM's <c>guided_json</c>: a JSON Schema (object or string).</summary>
    public JsonElement GuidedJson { get; set; }

    /// <summary>vLLM's <c>guided_regex</c>: the whole output matches this regular expression.</summary>
    public JsonElement GuidedRegex { get; set; }

    /// <summary>vLLM's <c>guided_choice</c>: the output is exactly one of these strings.</summary>
    public JsonElement GuidedChoice { get; set; }

    /// <summary>Extension: FFN early exit (<c>confident</c>) or self-speculative decoding (<c>speculative</c>).</summary>
    public EarlyExitBody? EarlyExit { get; set; }

    /// <summary>Fields without a member here, judged by <see cref="RequestFieldPolicy"/> (refused, or accepted and logged).</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? UnknownFields { get; set; }
}

/// <summary><c>early_exit</c>: <c>{"mode": "confident" | "speculative" | "off", "criterion", "threshold", "draft_layers", "draft_tokens"}</c>.</summary>
public sealed class EarlyExitBody
{
    public string? Mode { get; set; }
    public string? Criterion { get; set; }
    public double? Threshold { get; set; }
    public int? DraftLayers { get; set; }
    public int? DraftTokens { get; set; }
}

/// <summary>
/// <c>alignment</c>: <c>{"method": "best_of_n", "n": 4, "return_all": false}</c>, <c>{"method": "args", "k": 10, "weight": 1.5}</c>
/// or <c>{"method": "darwin", "variants": 5, "interval": 40, "iterations": 1, "survivors": 3}</c>.
/// </summary>
public sealed class AlignmentBody
{
    public string? Method { get; set; }
    public int? N { get; set; }
    public bool? ReturnAll { get; set; }
    public int? K { get; set; }
    public float? Weight { get; set; }
    public int? Variants { get; set; }
    public int? Interval { get; set; }
    public int? Iterations { get; set; }
    public int? Survivors { get; set; }
}

/// <summary>LoRAX-style per-request merge: <c>{"ids": [...], "weights": [...], "merge_strategy": "linear"}</c>.</summary>
public sealed class MergedAdaptersBody
{
    public List<string>? Ids { get; set; }
    public List<double>? Weights { get; set; }
    public string? MergeStrategy { get; set; }
}

/// <summary><c>stream_options</c>.</summary>
public sealed class StreamOptionsBody
{
    public bool? IncludeUsage { get; set; }

    /// <summary>vLLM's extension: with <c>include_usage</c>, every chunk carries the usage so far (the gateway settles cancelled streams by it).</summary>
    public bool? ContinuousUsageStats { get; set; }
}

/// <summary><c>POST /v1/completions</c> body.</summary>
public sealed class CompletionRequestBody : GenerationRequestBody
{
    public JsonElement Prompt { get; set; }
    public int? Logprobs { get; set; }
    public bool? Echo { get; set; }
    public int? BestOf { get; set; }
    public string? Suffix { get; set; }
}

/// <summary><c>POST /v1/chat/completions</c> body.</summary>
public sealed class ChatCompletionRequestBody : GenerationRequestBody
{
    public List<ChatMessageBody>? Messages { get; set; }
    public int? MaxCompletionTokens { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
    public bool? AddGenerationPrompt { get; set; }

    /// <summary>The functions the model may call: <c>[{"type": "function", "function": {"name", "description", "parameters"}}]</c>.</summary>
    public JsonElement Tools { get; set; }

    /// <summary><c>"none"</c>, <c>"auto"</c>, <c>"required"</c> or <c>{"type": "function", "function": {"name": ...}}</c>.</summary>
    public JsonElement ToolChoice { get; set; }

    /// <summary>Whether a forced call may be several calls (default true).</summary>
    public bool? ParallelToolCalls { get; set; }

    /// <summary>vLLM's <c>continue_final_message</c>: the prompt ends inside the last message, which the model continues.</summary>
    public bool? ContinueFinalMessage { get; set; }

    /// <summary>vLLM's <c>chat_template</c>: a Jinja template for this request instead of the model's.</summary>
    public string? ChatTemplate { get; set; }

    /// <summary>vLLM's <c>chat_template_kwargs</c>: further template variables (e.g. <c>enable_thinking</c>).</summary>
    public Dictionary<string, JsonElement>? ChatTemplateKwargs { get; set; }
}

/// <summary>A chat message; <c>content</c> is a string or a list of <c>{"type":"text","text":...}</c> parts.</summary>
public sealed class ChatMessageBody
{
    public string? Role { get; set; }
    public JsonElement Content { get; set; }
    public string? Name { get; set; }

    /// <summary>An assistant message's calls: <c>[{"id", "type": "function", "function": {"name", "arguments"}}]</c>.</summary>
    public JsonElement ToolCalls { get; set; }

    /// <summary>A <c>tool</c> message: the call it answers.</summary>
    public string? ToolCallId { get; set; }
}

// Response bodies (serialised with snake_case names).

/// <summary>OpenAI's error body.</summary>
public sealed record OpenAIErrorBody(OpenAIError Error);

/// <summary>The error object: what went wrong, its type, the offending request field, a stable code.</summary>
public sealed record OpenAIError(string Message, string Type, string? Param, string? Code);

/// <summary>Token usage; <c>generated_tokens</c> (extension) counts every token the node generated (alignment candidates and beams too).</summary>
public sealed record UsageBody(int PromptTokens, int CompletionTokens, int TotalTokens, int GeneratedTokens)
{
    /// <summary>Extension: blocks run per token pass of the decode steps (early exit lowers it).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? LayersPerToken { get; init; }

    /// <summary>Extension: self-speculative decoding's share of drafted tokens the full model accepted.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? DraftAcceptance { get; init; }
}

/// <summary>Non-streamed <c>text_completion</c>.</summary>
public sealed record CompletionResponse(string Id, string Object, long Created, string Model, IReadOnlyList<CompletionChoiceBody> Choices, UsageBody Usage)
{
    /// <summary>Extension: what the alignment method did.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public Decoding.AlignmentReport? Alignment { get; init; }
}

/// <summary>A completion choice.</summary>
public sealed record CompletionChoiceBody(int Index, string Text, CompletionLogprobsBody? Logprobs, string? FinishReason)
{
    /// <summary>Extension: the reward head's reward of the whole choice.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public float? Reward { get; init; }

    /// <summary>Extension: the reward after each token (<c>return_token_rewards</c>).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<float>? TokenRewards { get; init; }
}

/// <summary>Legacy completions logprobs (parallel lists); with <c>echo</c> the prompt's tokens come first, the first of them without a logprob (null).</summary>
public sealed record CompletionLogprobsBody(
    IReadOnlyList<string> Tokens,
    IReadOnlyList<float?> TokenLogprobs,
    IReadOnlyList<Dictionary<string, float>?> TopLogprobs,
    IReadOnlyList<int> TextOffset);

/// <summary>Non-streamed <c>chat.completion</c>.</summary>
public sealed record ChatCompletionResponse(string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoiceBody> Choices, UsageBody Usage)
{
    /// <summary>Extension: what the alignment method did.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public Decoding.AlignmentReport? Alignment { get; init; }
}

/// <summary>A chat choice.</summary>
public sealed record ChatChoiceBody(int Index, ChatMessageOut Message, ChatLogprobsBody? Logprobs, string? FinishReason)
{
    /// <summary>Extension: the reward head's reward of the whole choice.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public float? Reward { get; init; }

    /// <summary>Extension: the reward after each token (<c>return_token_rewards</c>).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<float>? TokenRewards { get; init; }
}

/// <summary>The assistant's message: its text (null when it only made calls) and its calls.</summary>
public sealed record ChatMessageOut(string Role, string? Content)
{
    /// <summary>The calls the model made (absent when none).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<ToolCallOut>? ToolCalls { get; init; }
}

/// <summary>One call in a response: <c>{"id": "call_…", "type": "function", "function": {"name", "arguments"}}</c>.</summary>
public sealed record ToolCallOut(string Id, string Type, FunctionCallOut Function);

/// <summary>A call's function: its name and its arguments as a JSON string.</summary>
public sealed record FunctionCallOut(string Name, string Arguments);

/// <summary>Chat logprobs.</summary>
public sealed record ChatLogprobsBody(IReadOnlyList<ChatTokenLogprob> Content);

/// <summary>One token's logprob with its alternatives.</summary>
public sealed record ChatTokenLogprob(string Token, float Logprob, IReadOnlyList<int>? Bytes, IReadOnlyList<ChatTopLogprob> TopLogprobs);

/// <summary>An alternative token.</summary>
public sealed record ChatTopLogprob(string Token, float Logprob, IReadOnlyList<int>? Bytes);

/// <summary><c>GET /v1/models</c>.</summary>
public sealed record ModelListResponse(string Object, IReadOnlyList<ModelBody> Data);

/// <summary>A model entry.</summary>
public sealed record ModelBody(string Id, string Object, long Created, string OwnedBy, [property: JsonPropertyName("max_model_len")] int MaxModelLen)
{
    /// <summary>For an adapter: the base model it runs on (vLLM's <c>parent</c>).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Parent { get; init; }

    /// <summary>For an adapter: its store version.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? Version { get; init; }
}
