using System.Text;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.OpenAI;

/// <summary>Non-streamed responses are the streamed events collected.</summary>
internal static class NonStreaming
{
    /// <summary>One prompt's response.</summary>
    public static Task<IResult> CollectAsync(ResponseContext r, CancellationToken ct) => CollectAsync([r], ct);

    /// <summary>
    /// The response of one or several prompts (a completions request's list): each prompt's choices in order, indexed
    /// from its <see cref="ResponseContext.ChoiceOffset"/>, usage summed over the prompts.
    /// </summary>
    public static async Task<IResult> CollectAsync(IReadOnlyList<ResponseContext> parts, CancellationToken ct)
    {
        var first = parts[0];
        // The alignment report is complete once the events are: read it after them. Alignment takes one prompt (the mapper checks).
        if (first.IsChat)
        {
            var choices = new List<ChatChoiceBody>();
            foreach (var r in parts) choices.AddRange(ChatChoices(r, await CollectEventsAsync(r, ct).ConfigureAwait(false)));
            return TypedResults.Ok(new ChatCompletionResponse(first.Id, "chat.completion", first.Created, first.Model, choices, ResponseContext.SumUsage(parts))
            {
                Alignment = first.Handle.Alignment,
            });
        }
        else
        {
            var choices = new List<CompletionChoiceBody>();
            foreach (var r in parts) choices.AddRange(CompletionChoices(r, await CollectEventsAsync(r, ct).ConfigureAwait(false)));
            return TypedResults.Ok(new CompletionResponse(first.Id, "text_completion", first.Created, first.Model, choices, ResponseContext.SumUsage(parts))
            {
                Alignment = first.Handle.Alignment,
            });
        }
    }

    /// <summary>What one prompt's events say, per choice.</summary>
    private sealed class Collected(int n, bool tokenRewards)
    {
        public readonly StringBuilder[] Text = [.. Enumerable.Range(0, n).Select(_ => new StringBuilder())];
        public readonly FinishReason?[] Finish = new FinishReason?[n];
        public readonly List<(int Id, float Logprob, TopLogprob[]? Top, int Offset)>[] Tokens = [.. Enumerable.Range(0, n).Select(_ => new List<(int, float, TopLogprob[]?, int)>())];
        public readonly float?[] Rewards = new float?[n];
        public readonly List<float>?[] TokenRewards = [.. Enumerable.Range(0, n).Select(_ => tokenRewards ? new List<float>() : null)];
    }

    private static async Task<Collected> CollectEventsAsync(ResponseContext r, CancellationToken ct)
    {
        var c = new Collected(r.Choices, r.Prepared.Generation.ReturnTokenRewards);
        await foreach (var e in r.Handle.Events.ReadAllAsync(ct).ConfigureAwait(false))
        {
            switch (e.Kind)
            {
                case GenerationEventKind.Token:
                    if (e.TokenId >= 0 && r.Prepared.Logprobs != LogprobsStyle.None) c.Tokens[e.Choice].Add((e.TokenId, e.Logprob, e.TopLogprobs, c.Text[e.Choice].Length));
                    if (e.TokenId >= 0 && e.Reward is float tokenReward) c.TokenRewards[e.Choice]?.Add(tokenReward);
                    c.Text[e.Choice].Append(e.Text);
                    break;
                case GenerationEventKind.Finished:
                    c.Finish[e.Choice] = e.FinishReason;
                    c.Rewards[e.Choice] = e.Reward;
                    break;
            }
        }
        return c;
    }

    private static ChatChoiceBody[] ChatChoices(ResponseContext r, Collected c)
    {
        var choices = new ChatChoiceBody[r.Choices];
        for (var i = 0; i < choices.Length; i++)
        {
            ChatLogprobsBody? lp = null;
            if (r.Prepared.Logprobs == LogprobsStyle.Chat)
            {
                lp = new ChatLogprobsBody(c.Tokens[i].Select(t => ChatToken(r, t.Id, t.Logprob, t.Top)).ToList());
            }
            var text = c.Text[i].ToString();
            var message = new ChatMessageOut("assistant", text);
            var finish = c.Finish[i]?.ToOpenAIString();
            if (r.Prepared.Tools is { ParsesCalls: true } tools)
            {
                var parse = Tools.ToolOutput.Read(tools, text, out var error);
                if (parse.Calls.Count > 0)
                {
                    message = new ChatMessageOut("assistant", parse.Content) { ToolCalls = Tools.ToolOutput.Wire(parse.Calls) };
                    finish = Tools.ToolOutput.FinishReason(c.Finish[i], calls: true);
                }
                else if (error is not null && r.Logger is { } logger)
                {
                    Telemetry.NodeLog.ToolCallUnparsed(logger, r.Prepared.Generation.Id ?? r.Id, tools.Forced ? "forced" : tools.Parser.Name, error);
                }
            }
            choices[i] = new ChatChoiceBody(r.ChoiceOffset + i, message, lp, finish)
            {
                Reward = c.Rewards[i],
                TokenRewards = c.TokenRewards[i],
            };
        }
        return choices;
    }

    private static CompletionChoiceBody[] CompletionChoices(ResponseContext r, Collected c)
    {
        var choices = new CompletionChoiceBody[r.Choices];
        var echo = r.Prepared.Echo ?? string.Empty; // echo takes one choice (checked by the mapper)
        for (var i = 0; i < choices.Length; i++)
        {
            CompletionLogprobsBody? lp = null;
            if (r.Prepared.Logprobs == LogprobsStyle.Completion)
            {
                var tokens = c.Tokens[i];
                lp = r.Prepared.Echo is null ? new CompletionLogprobsBody([], [], [], []) : EchoedPrompt(r);
                lp = new CompletionLogprobsBody(
                    [.. lp.Tokens, .. tokens.Select(t => r.TokenText(t.Id))],
                    [.. lp.TokenLogprobs, .. tokens.Select(t => (float?)WireLogprob.Of(t.Logprob))],
                    [.. lp.TopLogprobs, .. tokens.Select(t => TopDictionary(r, t.Top))],
                    [.. lp.TextOffset, .. tokens.Select(t => echo.Length + t.Offset)]);
            }
            choices[i] = new CompletionChoiceBody(r.ChoiceOffset + i, echo + c.Text[i].ToString(), lp, c.Finish[i]?.ToOpenAIString())
            {
                Reward = c.Rewards[i],
                TokenRewards = c.TokenRewards[i],
            };
        }
        return choices;
    }

    /// <summary>
    /// The prompt's tokens as OpenAI's <c>echo</c> reports them: each token's logprob given the tokens before it (the
    /// first has none), its top alternatives, and where its text starts in the echoed prompt (the prompt's text as
    /// detokenised token by token; equal to the text sent unless the tokenizer normalises it). A request that ended
    /// before its prompt was scored (deadline) reports the tokens without logprobs.
    /// </summary>
    private static CompletionLogprobsBody EchoedPrompt(ResponseContext r)
    {
        var prompt = r.Prepared.Generation.PromptTokens;
        var scored = r.Handle.PromptLogprobs;
        var tokens = new string[prompt.Length];
        var logprobs = new float?[prompt.Length];
        var top = new Dictionary<string, float>?[prompt.Length];
        var offsets = new int[prompt.Length];
        var decoder = r.Tokenizer.CreateStreamingDecoder(skipSpecialTokens: false);
        var offset = 0;
        for (var j = 0; j < prompt.Length; j++)
        {
            tokens[j] = r.TokenText(prompt[j]);
            offsets[j] = offset;
            offset += decoder.Append(prompt[j]).Length;
            if (scored is null) continue;
            logprobs[j] = scored[j].Logprob;
            top[j] = scored[j].Logprob is null ? null : TopDictionary(r, scored[j].TopLogprobs) ?? [];
        }
        return new CompletionLogprobsBody(tokens, logprobs, top, offsets);
    }

    public static ChatTokenLogprob ChatToken(ResponseContext r, int id, float logprob, TopLogprob[]? top)
    {
        var text = r.TokenText(id);
        var alternatives = top is null ? [] : top.Select(a =>
        {
            var t = r.TokenText(a.TokenId);
            return new ChatTopLogprob(t, WireLogprob.Of(a.Logprob), Bytes(t));
        }).ToList();
        return new ChatTokenLogprob(text, WireLogprob.Of(logprob), Bytes(text), alternatives);
    }

    public static Dictionary<string, float>? TopDictionary(ResponseContext r, TopLogprob[]? top)
    {
        if (top is null) return null;
        var d = new Dictionary<string, float>();
        foreach (var a in top) d.TryAdd(r.TokenText(a.TokenId), WireLogprob.Of(a.Logprob));
        return d;
    }

    private static int[] Bytes(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();
}
