using System.Text.Json;
using Serving.Inference.Chat;
using Serving.Inference.Decoding;
using Serving.Inference.Rewards;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI.Tools;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.OpenAI;

/// <summary>A validated request ready for the scheduler, with what the response needs to know.</summary>
internal sealed record PreparedRequest(GenerationRequest Generation, bool Stream, bool IncludeUsage, LogprobsStyle Logprobs, string MaxTokensParam)
{
    /// <summary>
    /// <c>echo</c>: the prompt's text, which the choice's text starts with (its token logprobs, with <c>logprobs</c>,
    /// come first in the choice's logprobs); null without echo.
    /// </summary>
    public string? Echo { get; init; }

    /// <summary><c>return_tokens_as_token_ids</c>: logprobs name tokens <c>token_id:&lt;id&gt;</c>.</summary>
    public bool TokenIdsAsText { get; init; }

    /// <summary>Streams: every chunk carries the usage so far (<c>stream_options.continuous_usage_stats</c> with <c>include_usage</c>).</summary>
    public bool ContinuousUsage { get; init; }

    /// <summary>The request's tools (null without): the output is read for calls unless <c>tool_choice</c> is none.</summary>
    public ToolRequest? Tools { get; init; }
}

/// <summary>One prompt of a completions request: its tokens, and its text when it was sent as text.</summary>
internal sealed record PromptInput(int[] Tokens, string? Text);

/// <summary>Whether and how logprobs are reported.</summary>
internal enum LogprobsStyle { None, Completion, Chat }

/// <summary>Turns OpenAI request bodies into <see cref="GenerationRequest"/>s; throws a <see cref="Serving.Contracts.Errors.RequestRefusedException"/> naming the field.</summary>
internal static class OpenAIRequestMapper
{
    /// <summary>Most stop strings OpenAI accepts.</summary>
    public const int MaxStopStrings = 4;

    /// <summary>Most logprobs alternatives the legacy completions API accepts.</summary>
    public const int MaxCompletionLogprobs = 5;

    /// <summary>The instruction DARWIN's beams answer is rewritten through this request (a user message of the chat template).</summary>
    internal const string MutationInstruction = "Rewrite the following instruction in other words, keeping its meaning:\n\n";

    /// <summary>
    /// <c>/v1/completions</c>: one prepared request per prompt (<c>prompt</c> may hold several, as OpenAI allows: a list
    /// of strings or a list of token-id lists); their choices follow one another in the response.
    /// </summary>
    public static IReadOnlyList<PreparedRequest> Completions(CompletionRequestBody body, ModelHost host, string requestId, DateTimeOffset deadline, RewardHead? head = null)
    {
        var prompts = CompletionPrompts(body.Prompt, host);
        if (prompts.Count > 1 && body.Alignment is not null)
        {
            throw Refusals.Invalid("alignment", $"alignment takes one prompt per request, got {prompts.Count}; send the prompts in separate requests.");
        }
        var prepared = new PreparedRequest[prompts.Count];
        for (var i = 0; i < prompts.Count; i++) prepared[i] = Completion(body, host, prompts[i], requestId, deadline, head);
        return prepared;
    }

    private static PreparedRequest Completion(CompletionRequestBody body, ModelHost host, PromptInput input, string requestId, DateTimeOffset deadline, RewardHead? head)
    {
        var echo = body.Echo == true;
        if (echo) CheckEcho(body);
        if (body.Suffix is { Length: > 0 }) throw Refusals.Invalid("suffix", "suffix is not supported by this node.");
        if (body.BestOf is int bo && bo != (body.N ?? 1)) throw Refusals.Invalid("best_of", "best_of other than n is not supported by this node.");
        var prompt = input.Tokens;
        if (body.Logprobs is int lp && (lp < 0 || lp > MaxCompletionLogprobs))
        {
            throw Refusals.Invalid("logprobs", $"logprobs must be between 0 and {MaxCompletionLogprobs}, got {lp}.");
        }
        if (body.MaxTokens == 0 && !echo)
        {
            throw Refusals.Invalid("max_tokens", "max_tokens must be at least 1; 0 (generate nothing) is allowed with echo: true, which returns the prompt and, with logprobs, its token logprobs.");
        }
        // max_tokens 0 with echo scores the prompt and generates nothing; the scheduler still wants room for one token.
        var scoreOnly = echo && body.MaxTokens == 0;
        var maxTokens = scoreOnly ? 1 : body.MaxTokens ?? Math.Max(1, Math.Min(16, host.MaxContext - prompt.Length));
        var sampling = Sampling(body, maxTokens, body.Logprobs);
        var instruction = input.Text;
        var decoding = scoreOnly ? ScoreOnlySpec.Instance : Decoding(body.Alignment, instruction,
            text => host.Tokenizer.Encode(text, host.Tokenizer.AddBosByDefault),
            text => RenderUser(host, MutationInstruction + text));
        var generation = Generation(body, prompt, sampling, body.Logprobs is not null, requestId, deadline, head, decoding);
        if (echo && body.Logprobs is int top) generation = generation with { PromptLogprobs = top };
        return new PreparedRequest(generation, body.Stream == true, body.StreamOptions?.IncludeUsage == true,
            body.Logprobs is null ? LogprobsStyle.None : LogprobsStyle.Completion, "max_tokens")
        {
            Echo = echo ? input.Text ?? host.Tokenizer.Decode(prompt) : null,
            TokenIdsAsText = body.ReturnTokensAsTokenIds == true,
        };
    }

    /// <summary>
    /// What <c>echo</c> does not combine with, each a 400 naming <c>echo</c>: streaming and several choices (as vLLM
    /// refuses prompt logprobs with streaming), alignment (its rows run other prompts), early exit (a scored prompt runs
    /// every layer; the node's default mode is not applied to echo requests).
    /// </summary>
    private static void CheckEcho(CompletionRequestBody body)
    {
        if (body.Stream == true) throw Refusals.Invalid("echo", "echo cannot be combined with stream: true; send the request without streaming.");
        if ((body.N ?? 1) != 1 || (body.BestOf ?? 1) != 1)
        {
            throw Refusals.Invalid("echo", $"echo takes one choice: n and best_of must be 1, got n = {body.N ?? 1}, best_of = {body.BestOf ?? 1}.");
        }
        if (body.Alignment is not null) throw Refusals.Invalid("echo", "echo cannot be combined with alignment; score the prompt in a request without it.");
        if (body.EarlyExit?.Mode is { } mode && mode != "off")
        {
            throw Refusals.Invalid("echo", $"echo runs every layer: early_exit.mode must be \"off\" or absent, got \"{mode}\".");
        }
    }

    /// <summary>
    /// <c>messages</c> checked (a non-empty list, each with a role and text content; an assistant's <c>tool_calls</c>
    /// well formed; a <c>tool</c> message answering a call made before it) and converted; a refusal naming the offending
    /// field otherwise. A template that reads <c>tool_calls</c> gets the calls as message fields; any other gets them as
    /// text in <paramref name="parser"/>'s format (and a <c>tool</c> message as a <c>&lt;tool_response&gt;</c> user turn
    /// when it knows no tool role).
    /// </summary>
    internal static List<ChatMessage> Messages(List<ChatMessageBody>? bodies, ChatTemplate? template = null, ToolCallParser? parser = null)
    {
        if (bodies is null || bodies.Count == 0) throw Refusals.Invalid("messages", "messages must be a non-empty list.");
        var messages = new List<ChatMessage>(bodies.Count);
        var callIds = new HashSet<string>(StringComparer.Ordinal);
        var structured = template is not null && TemplateRenders(template, "tool_calls");
        var toolRole = template is null || structured || TemplateKnowsToolRole(template);
        for (var i = 0; i < bodies.Count; i++)
        {
            var m = bodies[i];
            if (m is null) throw Refusals.Invalid($"messages[{i}]", "Each message must be an object with a role and content.");
            if (string.IsNullOrEmpty(m.Role)) throw Refusals.Invalid($"messages[{i}].role", "Each message needs a role.");
            var parts = TextParts(m.Content, i);
            var text = parts is null ? MessageText(m.Content, i) : string.Join('\n', parts);
            IReadOnlyList<ChatToolCall>? toolCalls = null;
            if (m.ToolCalls.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null))
            {
                if (m.Role != "assistant") throw Refusals.Invalid($"messages[{i}].tool_calls", "Only assistant messages carry tool_calls.");
                var calls = AssistantCalls(m.ToolCalls, i);
                foreach (var c in calls) callIds.Add(c.Id);
                if (structured)
                {
                    toolCalls = [.. calls.Select(c => new ChatToolCall(c.Id, c.Name, c.Arguments))];
                }
                else
                {
                    // The template does not render tool_calls: the calls reach it as text in the model's own format.
                    var callText = ToolRequest.CallsAsText(parser ?? new HermesToolCallParser(), calls);
                    text = text.Length == 0 ? callText : text + "\n" + callText;
                    parts = null;
                }
            }
            if (m.Role == "tool")
            {
                if (string.IsNullOrEmpty(m.ToolCallId)) throw Refusals.Invalid($"messages[{i}].tool_call_id", "A tool message needs the tool_call_id of the call it answers.");
                if (!callIds.Contains(m.ToolCallId))
                {
                    throw Refusals.Invalid($"messages[{i}].tool_call_id",
                        $"tool_call_id '{m.ToolCallId}' answers no call: a tool message must follow an assistant message whose tool_calls hold that id.");
                }
                if (!toolRole)
                {
                    messages.Add(new ChatMessage("user", "<tool_response>\n" + text + "\n</tool_response>"));
                    continue;
                }
            }
            // An assistant turn that only made calls has no content (null, as the client sent it).
            var content = toolCalls is not null && m.Content.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null ? null : text;
            messages.Add(new ChatMessage(m.Role, content) { ContentParts = parts, Name = m.Name, ToolCalls = toolCalls, ToolCallId = m.Role == "tool" ? m.ToolCallId : null });
        }
        return messages;
    }

    /// <summary>True when the template reads the variable or message field <paramref name="name"/> (<c>tools</c>, <c>tool_calls</c>).</summary>
    private static bool TemplateRenders(ChatTemplate template, string name) => template.Source.Contains(name, StringComparison.Ordinal);

    /// <summary>True when the template writes messages of role <c>tool</c> (else they would vanish from the prompt).</summary>
    private static bool TemplateKnowsToolRole(ChatTemplate template) =>
        template.Source.Contains("'tool'", StringComparison.Ordinal) || template.Source.Contains("\"tool\"", StringComparison.Ordinal)
        || template.Source == ChatTemplate.DefaultTemplate;

    private static List<(string Id, string Name, string Arguments)> AssistantCalls(JsonElement toolCalls, int index)
    {
        var at = $"messages[{index}].tool_calls";
        if (toolCalls.ValueKind != JsonValueKind.Array) throw Refusals.Invalid(at, "tool_calls must be a list of {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}.");
        var calls = new List<(string, string, string)>();
        var j = 0;
        foreach (var call in toolCalls.EnumerateArray())
        {
            var c = $"{at}[{j++}]";
            if (call.ValueKind != JsonValueKind.Object) throw Refusals.Invalid(c, "Each tool call must be an object.");
            if (!call.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.String || id.GetString() is not { Length: > 0 } callId)
            {
                throw Refusals.Invalid($"{c}.id", "Each tool call needs its id (a string).");
            }
            if (call.TryGetProperty("type", out var type) && !(type.ValueKind == JsonValueKind.String && type.GetString() == "function"))
            {
                throw Refusals.Invalid($"{c}.type", "Only tool calls of type \"function\" are supported.");
            }
            if (!call.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object
                || !f.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString() is not { Length: > 0 } fn)
            {
                throw Refusals.Invalid($"{c}.function.name", "Each tool call needs function.name.");
            }
            var args = "{}";
            if (f.TryGetProperty("arguments", out var a) && a.ValueKind != JsonValueKind.Null)
            {
                if (a.ValueKind != JsonValueKind.String) throw Refusals.Invalid($"{c}.function.arguments", "function.arguments must be a string holding JSON.");
                args = a.GetString()!;
            }
            calls.Add((callId, fn, args));
        }
        return calls;
    }

    /// <summary>
    /// The tools shown to the model: as a system instruction (the Hermes convention Qwen2.5's template writes) joined to
    /// the first system message, or as a system message of its own.
    /// </summary>
    private static void AddToolInstruction(List<ChatMessage> messages, ToolRequest tools)
    {
        var instruction = tools.Instruction();
        if (messages.Count > 0 && messages[0].Role == "system") messages[0] = messages[0] with { Content = messages[0].Content + "\n\n" + instruction };
        else messages.Insert(0, new ChatMessage("system", instruction));
    }

    public static PreparedRequest Chat(ChatCompletionRequestBody body, ModelHost host, string requestId, DateTimeOffset deadline, RewardHead? head = null)
    {
        var tools = ToolRequest.Read(body.Tools, body.ToolChoice, body.ParallelToolCalls, host.ToolCallParser);
        var template = RequestTemplate(host, body.ChatTemplate);
        var messages = Messages(body.Messages, template ?? host.Template, host.ToolCallParser);
        var continueFinal = body.ContinueFinalMessage == true;
        if (continueFinal && body.AddGenerationPrompt == true)
        {
            throw Refusals.Invalid("continue_final_message", "continue_final_message continues the last message; it cannot be combined with add_generation_prompt: true.");
        }
        var addGenerationPrompt = body.AddGenerationPrompt ?? !continueFinal;
        // A template that renders tools gets them as the variable `tools`; any other sees them as a system instruction.
        var toolsVariable = tools is not null && TemplateRenders(template ?? host.Template, "tools") ? tools.ToolObjects() : null;
        if (tools is not null && toolsVariable is null) AddToolInstruction(messages, tools);
        var options = new ChatRenderOptions { AddGenerationPrompt = addGenerationPrompt, ContinueFinalMessage = continueFinal, Kwargs = body.ChatTemplateKwargs, Tools = toolsVariable };
        var prompt = Render(host, messages, options, template);
        if (body.TopLogprobs is not null && body.Logprobs != true)
        {
            throw Refusals.Invalid("top_logprobs", "top_logprobs needs logprobs set to true.");
        }
        var param = body.MaxCompletionTokens is not null ? "max_completion_tokens" : "max_tokens";
        var maxTokens = body.MaxCompletionTokens ?? body.MaxTokens ?? Math.Max(1, host.MaxContext - prompt.Length);
        var logprobs = body.Logprobs == true;
        var sampling = Sampling(body, maxTokens, logprobs ? body.TopLogprobs ?? 0 : null);
        var lastUser = messages.FindLastIndex(m => m.Role == "user");
        var decoding = Decoding(body.Alignment, lastUser >= 0 ? messages[lastUser].Content : null,
            variant =>
            {
                var rewritten = new List<ChatMessage>(messages);
                rewritten[lastUser] = rewritten[lastUser] with { Content = variant, ContentParts = null };
                return Render(host, rewritten, options, template);
            },
            text => RenderUser(host, MutationInstruction + text));
        var generation = Generation(body, prompt, sampling, logprobs, requestId, deadline, head, decoding);
        if (tools is { ParsesCalls: true, Forced: false, Parser.NeedsSpecialTokens: true } && body.SkipSpecialTokens is null)
        {
            // The format's marker is a special token ([TOOL_CALLS], <|python_tag|>): keep it in the text the parser reads.
            generation = generation with { SkipSpecialTokens = false };
        }
        if (tools is { Forced: true }) generation = ToolConstraint.Apply(generation, tools);
        return new PreparedRequest(generation,
            body.Stream == true, body.StreamOptions?.IncludeUsage == true, logprobs ? LogprobsStyle.Chat : LogprobsStyle.None, param)
        {
            TokenIdsAsText = body.ReturnTokensAsTokenIds == true,
            Tools = tools,
        };
    }

    private static GenerationRequest Generation(GenerationRequestBody body, int[] prompt, SamplingParameters sampling, bool logprobs, string requestId, DateTimeOffset deadline,
        RewardHead? head, DecodingSpec decoding)
    {
        var n = body.N ?? 1;
        if (n < 1) throw Refusals.Invalid("n", $"n must be at least 1, got {n}.");
        if (body.ReturnTokenRewards == true && head is null)
        {
            throw Refusals.Invalid("return_token_rewards", "return_token_rewards needs a reward head: name one in \"reward_head\".");
        }
        return new GenerationRequest
        {
            PromptTokens = prompt,
            Sampling = sampling,
            Choices = n,
            Logprobs = logprobs,
            SkipSpecialTokens = body.SkipSpecialTokens ?? true,
            Deadline = deadline,
            Id = requestId,
            RewardHead = head,
            ReturnTokenRewards = body.ReturnTokenRewards == true,
            Decoding = StructuredOutput.Apply(body, decoding),
        };
    }

    /// <summary>The decoding method of <c>alignment</c> (plain sampling without one); ranges are checked by the spec on submit.</summary>
    private static DecodingSpec Decoding(AlignmentBody? alignment, string? instruction, Func<string, int[]> renderPrompt, Func<string, int[]> renderMutation)
    {
        if (alignment is null) return SamplingSpec.Instance;
        return alignment.Method switch
        {
            "best_of_n" => new BestOfNSpec(alignment.N ?? 4, alignment.ReturnAll ?? false),
            "args" => new ArgsSpec(alignment.K ?? ArgsSpec.DefaultK, alignment.Weight ?? ArgsSpec.DefaultWeight),
            "darwin" => new DarwinSpec
            {
                Instruction = instruction ?? throw Refusals.Invalid("alignment.method",
                    "darwin rewrites the instruction: it needs a text prompt, or a user message in messages."),
                Variants = alignment.Variants ?? DarwinSpec.DefaultVariants,
                Interval = alignment.Interval ?? DarwinSpec.DefaultInterval,
                Iterations = alignment.Iterations ?? 1,
                Survivors = alignment.Survivors ?? 3,
                RenderPrompt = renderPrompt,
                RenderMutation = renderMutation,
            },
            null => throw Refusals.Invalid("alignment.method", "alignment.method is required: best_of_n, args or darwin."),
            var other => throw Refusals.Invalid("alignment.method", $"alignment.method '{other}' is not one of best_of_n, args, darwin."),
        };
    }

    /// <summary>
    /// Messages through the chat template, tokenised as transformers' <c>apply_chat_template</c> does (no special tokens
    /// beyond what the template writes); <paramref name="addSpecialTokens"/> (vLLM's /tokenize option) adds the BOS the
    /// tokenizer would add (<c>add_bos_token</c>).
    /// </summary>
    internal static int[] Render(ModelHost host, List<ChatMessage> messages, bool addGenerationPrompt, bool addSpecialTokens = false) =>
        Render(host, messages, new ChatRenderOptions { AddGenerationPrompt = addGenerationPrompt }, null, addSpecialTokens);

    /// <summary>
    /// Messages through <paramref name="template"/> (the model's when null) with <paramref name="options"/>; the bos and
    /// eos token texts are the tokenizer's. A template that raises (<c>raise_exception</c>) or fails for these messages
    /// is a 400 carrying its message.
    /// </summary>
    internal static int[] Render(ModelHost host, List<ChatMessage> messages, ChatRenderOptions options, ChatTemplate? template, bool addSpecialTokens = false)
    {
        string text;
        try
        {
            text = (template ?? host.Template).Render(messages, options with { BosToken = BosText(host), EosToken = EosText(host) });
        }
        catch (ChatTemplateException e)
        {
            throw Refusals.Invalid("messages", e.Message);
        }
        // As transformers' apply_chat_template: the rendered text is tokenised without special tokens, the template
        // places BOS itself (Llama 3's tokenizer would otherwise add a second <|begin_of_text|>); /tokenize may ask for them.
        return host.Tokenizer.Encode(text, addSpecialTokens && host.Tokenizer.AddBosByDefault);
    }

    /// <summary>The request's own <c>chat_template</c> compiled (cached by its hash), or null for the model's; a 400 naming the construct and line it cannot render.</summary>
    private static ChatTemplate? RequestTemplate(ModelHost host, string? source)
    {
        if (source is null) return null;
        try
        {
            return host.RequestTemplates.Get(source);
        }
        catch (TemplateSyntaxException e)
        {
            throw Refusals.Invalid("chat_template", $"chat_template cannot be rendered by this engine: {e.Message}");
        }
    }

    /// <summary>The text parts of a list <c>content</c> (null for a string or null content).</summary>
    private static List<string>? TextParts(JsonElement content, int index)
    {
        if (content.ValueKind != JsonValueKind.Array) return null;
        var parts = new List<string>();
        foreach (var part in content.EnumerateArray())
        {
            if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() == "text"
                && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
            {
                parts.Add(t.GetString()!);
            }
            else
            {
                throw Refusals.Invalid($"messages[{index}].content", "Only text content parts are supported.");
            }
        }
        return parts;
    }

    /// <summary>One user message through the chat template, with the generation prompt.</summary>
    private static int[] RenderUser(ModelHost host, string content) => Render(host, [new ChatMessage("user", content)], addGenerationPrompt: true);

    private static SamplingParameters Sampling(GenerationRequestBody body, int maxTokens, int? topLogprobs) => new()
    {
        Temperature = body.Temperature ?? 1f,
        TopP = body.TopP ?? 1f,
        TopK = body.TopK ?? 0,
        MinP = body.MinP ?? 0f,
        RepetitionPenalty = body.RepetitionPenalty ?? 1f,
        PresencePenalty = body.PresencePenalty ?? 0f,
        FrequencyPenalty = body.FrequencyPenalty ?? 0f,
        Seed = body.Seed is long s ? unchecked((ulong)s) : null,
        MaxTokens = maxTokens,
        StopStrings = StopStrings(body.Stop),
        IgnoreEos = body.IgnoreEos ?? false,
        TopLogprobs = topLogprobs,
        LogitBias = LogitBiasField.Read(body.LogitBias),
    };

    private static string[] StopStrings(JsonElement stop)
    {
        switch (stop.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                return [];
            case JsonValueKind.String:
                var s = stop.GetString()!;
                return s.Length == 0 ? [] : [s];
            case JsonValueKind.Array:
                var list = new List<string>();
                foreach (var item in stop.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String) throw Refusals.Invalid("stop", "stop must be a string or a list of strings.");
                    list.Add(item.GetString()!);
                }
                if (list.Count > MaxStopStrings) throw Refusals.Invalid("stop", $"stop takes at most {MaxStopStrings} strings, got {list.Count}.");
                return [.. list];
            default:
                throw Refusals.Invalid("stop", "stop must be a string or a list of strings.");
        }
    }

    /// <summary>
    /// The prompts of <c>/v1/completions</c>, in OpenAI's four shapes: a string, a list of strings, a list of token ids,
    /// or a list of token-id lists (one prompt per item). Empty prompts and ids outside the model's vocabulary are
    /// refused naming the prompt (<c>prompt[i]</c> when there are several), before anything is queued.
    /// </summary>
    internal static IReadOnlyList<PromptInput> CompletionPrompts(JsonElement prompt, ModelHost host)
    {
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return [TextPrompt(prompt, host, "prompt")];
            case JsonValueKind.Array:
                var count = prompt.GetArrayLength();
                if (count == 0) throw Refusals.Invalid("prompt", "prompt must not be empty.");
                var first = prompt[0].ValueKind;
                if (first == JsonValueKind.Number) return [IdsPrompt(prompt, host, "prompt")];
                if (first is not (JsonValueKind.String or JsonValueKind.Array))
                {
                    throw Refusals.Invalid("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists.");
                }
                var prompts = new PromptInput[count];
                var i = 0;
                foreach (var item in prompt.EnumerateArray())
                {
                    // A batch of one keeps the plain name: lm-evaluation-harness sends [[ids]] with batch size 1.
                    var param = count == 1 ? "prompt" : $"prompt[{i}]";
                    if (item.ValueKind != first)
                    {
                        throw Refusals.Invalid(param, "The prompts of one request must all be strings or all be lists of token ids.");
                    }
                    prompts[i++] = first == JsonValueKind.String ? TextPrompt(item, host, param) : IdsPrompt(item, host, param);
                }
                return prompts;
            case JsonValueKind.Undefined or JsonValueKind.Null:
                throw Refusals.Invalid("prompt", "prompt is required.");
            default:
                throw Refusals.Invalid("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists.");
        }
    }

    private static PromptInput TextPrompt(JsonElement prompt, ModelHost host, string param)
    {
        var text = prompt.GetString()!;
        if (text.Length == 0) throw Refusals.Invalid(param, "prompt must not be empty.");
        return new PromptInput(host.Tokenizer.Encode(text, host.Tokenizer.AddBosByDefault), text);
    }

    private static PromptInput IdsPrompt(JsonElement prompt, ModelHost host, string param)
    {
        var count = prompt.GetArrayLength();
        if (count == 0) throw Refusals.Invalid(param, "A token-id prompt must hold at least one id.");
        var vocab = host.Config.VocabSize;
        var ids = new int[count];
        var i = 0;
        foreach (var item in prompt.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out var id))
            {
                throw Refusals.Invalid(param, $"Token ids must be integers; item {i} is {(item.ValueKind == JsonValueKind.Number ? item.GetRawText() : item.ValueKind.ToString().ToLowerInvariant())}.");
            }
            if ((uint)id >= (uint)vocab) throw Refusals.Invalid(param, $"Token id {id} (item {i}) is outside the vocabulary [0, {vocab}).");
            ids[i++] = id;
        }
        return new PromptInput(ids, null);
    }

    private static string MessageText(JsonElement content, int index)
    {
        switch (content.ValueKind)
        {
            case JsonValueKind.String:
                return content.GetString()!;
            case JsonValueKind.Null or JsonValueKind.Undefined:
                return string.Empty;
            case JsonValueKind.Array:
                var sb = new System.Text.StringBuilder();
                foreach (var part in content.EnumerateArray())
                {
                    if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() == "text"
                        && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
                    {
                        sb.Append(t.GetString());
                    }
                    else
                    {
                        throw Refusals.Invalid($"messages[{index}].content", "Only text content parts are supported.");
                    }
                }
                return sb.ToString();
            default:
                throw Refusals.Invalid($"messages[{index}].content", "content must be a string or a list of text parts.");
        }
    }

    private static string? BosText(ModelHost host) => host.Tokenizer.BosTokenId is int id ? SpecialText(host, id) : null;

    private static string? EosText(ModelHost host) => host.Tokenizer.EosTokenId is int id ? SpecialText(host, id) : null;

    private static string? SpecialText(ModelHost host, int id)
    {
        foreach (var (text, tid) in host.Tokenizer.SpecialTokens)
        {
            if (tid == id) return text;
        }
        return null;
    }
}
