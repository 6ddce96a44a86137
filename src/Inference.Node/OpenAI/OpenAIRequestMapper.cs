using System.Text.Json;
using Serving.Inference.Chat;
using Serving.Inference.Decoding;
using Serving.Inference.Rewards;
using Serving.Inference.Node.Hosting;
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
}

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

    public static PreparedRequest Completion(CompletionRequestBody body, ModelHost host, string id, DateTimeOffset deadline, RewardHead? head = null)
    {
        var echo = body.Echo == true;
        if (echo) CheckEcho(body);
        if (body.Suffix is { Length: > 0 }) throw Refusals.Invalid("suffix", "suffix is not supported by this node.");
        if (body.BestOf is int bo && bo != (body.N ?? 1)) throw Refusals.Invalid("best_of", "best_of other than n is not supported by this node.");
        var prompt = CompletionPrompt(body.Prompt, host);
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
        var instruction = body.Prompt.ValueKind == JsonValueKind.String ? body.Prompt.GetString() : null;
        var decoding = scoreOnly ? ScoreOnlySpec.Instance : Decoding(body.Alignment, instruction,
            text => host.Tokenizer.Encode(text, host.Tokenizer.AddBosByDefault),
            text => RenderUser(host, MutationInstruction + text));
        var generation = Generation(body, prompt, sampling, body.Logprobs is not null, id, deadline, head, decoding);
        if (echo && body.Logprobs is int top) generation = generation with { PromptLogprobs = top };
        return new PreparedRequest(generation, body.Stream == true, body.StreamOptions?.IncludeUsage == true,
            body.Logprobs is null ? LogprobsStyle.None : LogprobsStyle.Completion, "max_tokens")
        {
            Echo = echo ? PromptText(body.Prompt) ?? host.Tokenizer.Decode(prompt) : null,
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

    public static PreparedRequest Chat(ChatCompletionRequestBody body, ModelHost host, string id, DateTimeOffset deadline, RewardHead? head = null)
    {
        if (body.Messages is null || body.Messages.Count == 0) throw Refusals.Invalid("messages", "messages must be a non-empty list.");
        var messages = new List<ChatMessage>(body.Messages.Count);
        for (var i = 0; i < body.Messages.Count; i++)
        {
            var m = body.Messages[i];
            if (string.IsNullOrEmpty(m.Role)) throw Refusals.Invalid($"messages[{i}].role", "Each message needs a role.");
            messages.Add(new ChatMessage(m.Role, MessageText(m.Content, i)));
        }
        var addGenerationPrompt = body.AddGenerationPrompt ?? true;
        var prompt = Render(host, messages, addGenerationPrompt);
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
                rewritten[lastUser] = rewritten[lastUser] with { Content = variant };
                return Render(host, rewritten, addGenerationPrompt);
            },
            text => RenderUser(host, MutationInstruction + text));
        return new PreparedRequest(Generation(body, prompt, sampling, logprobs, id, deadline, head, decoding),
            body.Stream == true, body.StreamOptions?.IncludeUsage == true, logprobs ? LogprobsStyle.Chat : LogprobsStyle.None, param);
    }

    private static GenerationRequest Generation(GenerationRequestBody body, int[] prompt, SamplingParameters sampling, bool logprobs, string id, DateTimeOffset deadline,
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
            Id = id,
            RewardHead = head,
            ReturnTokenRewards = body.ReturnTokenRewards == true,
            Decoding = decoding,
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

    /// <summary>Messages through the chat template, tokenised.</summary>
    private static int[] Render(ModelHost host, List<ChatMessage> messages, bool addGenerationPrompt)
    {
        string text;
        try
        {
            text = host.Template.Render(messages, addGenerationPrompt, BosText(host), EosText(host));
        }
        catch (ChatTemplateException e)
        {
            throw Refusals.Invalid("messages", e.Message);
        }
        // As transformers' apply_chat_template: the rendered text is tokenised without special tokens, the template
        // places BOS itself (Llama 3's tokenizer would otherwise add a second <|begin_of_text|>).
        return host.Tokenizer.Encode(text, addBos: false);
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

    /// <summary>The prompt's text as the client sent it (a string or a one-string list); null for token ids.</summary>
    private static string? PromptText(JsonElement prompt) => prompt.ValueKind switch
    {
        JsonValueKind.String => prompt.GetString(),
        JsonValueKind.Array when prompt.GetArrayLength() == 1 => PromptText(prompt[0]),
        _ => null,
    };

    private static int[] CompletionPrompt(JsonElement prompt, ModelHost host)
    {
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                var text = prompt.GetString()!;
                if (text.Length == 0) throw Refusals.Invalid("prompt", "prompt must not be empty.");
                return host.Tokenizer.Encode(text, host.Tokenizer.AddBosByDefault);
            case JsonValueKind.Array:
                var items = prompt.EnumerateArray().ToList();
                if (items.Count == 0) throw Refusals.Invalid("prompt", "prompt must not be empty.");
                if (items.All(i => i.ValueKind == JsonValueKind.Number))
                {
                    return items.Select(i => i.TryGetInt32(out var t) ? t : throw Refusals.Invalid("prompt", "Token ids must be integers.")).ToArray();
                }
                // A batch of one ([["text"]] is not a batch): lm-evaluation-harness sends [[ids]] with batch size 1.
                if (items.Count == 1 && (items[0].ValueKind == JsonValueKind.String
                    || (items[0].ValueKind == JsonValueKind.Array && items[0].EnumerateArray().All(i => i.ValueKind == JsonValueKind.Number))))
                {
                    return CompletionPrompt(items[0], host);
                }
                throw Refusals.Invalid("prompt", "This node takes one prompt per request: a string, a list with one string, a list of token ids, or a list with one list of token ids.");
            case JsonValueKind.Undefined or JsonValueKind.Null:
                throw Refusals.Invalid("prompt", "prompt is required.");
            default:
                throw Refusals.Invalid("prompt", "prompt must be a string or a list of token ids.");
        }
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
                    if (part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var type) && type.GetString() == "text"
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
