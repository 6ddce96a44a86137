using System.Text;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.OpenAI;

/// <summary>Non-streamed responses are the streamed events collected.</summary>
internal static class NonStreaming
{
    public static async Task<IResult> CollectAsync(ResponseContext r, CancellationToken ct)
    {
        var n = r.Choices;
        var text = new StringBuilder[n];
        var finish = new FinishReason?[n];
        var tokens = new List<(int Id, float Logprob, TopLogprob[]? Top, int Offset)>[n];
        var rewards = new float?[n];
        var tokenRewards = new List<float>?[n];
        for (var i = 0; i < n; i++)
        {
            text[i] = new StringBuilder();
            tokens[i] = [];
            if (r.Prepared.Generation.ReturnTokenRewards) tokenRewards[i] = [];
        }
        await foreach (var e in r.Handle.Events.ReadAllAsync(ct).ConfigureAwait(false))
        {
            switch (e.Kind)
            {
                case GenerationEventKind.Token:
                    if (e.TokenId >= 0 && r.Prepared.Logprobs != LogprobsStyle.None) tokens[e.Choice].Add((e.TokenId, e.Logprob, e.TopLogprobs, text[e.Choice].Length));
                    if (e.TokenId >= 0 && e.Reward is float tokenReward) tokenRewards[e.Choice]?.Add(tokenReward);
                    text[e.Choice].Append(e.Text);
                    break;
                case GenerationEventKind.Finished:
                    finish[e.Choice] = e.FinishReason;
                    rewards[e.Choice] = e.Reward;
                    break;
            }
        }

        if (r.IsChat)
        {
            var choices = new ChatChoiceBody[n];
            for (var i = 0; i < n; i++)
            {
                ChatLogprobsBody? lp = null;
                if (r.Prepared.Logprobs == LogprobsStyle.Chat)
                {
                    lp = new ChatLogprobsBody(tokens[i].Select(t => ChatToken(r, t.Id, t.Logprob, t.Top)).ToList());
                }
                choices[i] = new ChatChoiceBody(i, new ChatMessageOut("assistant", text[i].ToString()), lp, finish[i]?.ToOpenAIString())
                {
                    Reward = rewards[i],
                    TokenRewards = tokenRewards[i],
                };
            }
            return TypedResults.Ok(new ChatCompletionResponse(r.Id, "chat.completion", r.Created, r.Model, choices, r.Usage) { Alignment = r.Handle.Alignment });
        }
        else
        {
            var choices = new CompletionChoiceBody[n];
            var echo = r.Prepared.Echo ?? string.Empty; // echo takes one choice (checked by the mapper)
            for (var i = 0; i < n; i++)
            {
                CompletionLogprobsBody? lp = null;
                if (r.Prepared.Logprobs == LogprobsStyle.Completion)
                {
                    lp = r.Prepared.Echo is null ? new CompletionLogprobsBody([], [], [], []) : EchoedPrompt(r);
                    lp = new CompletionLogprobsBody(
                        [.. lp.Tokens, .. tokens[i].Select(t => r.TokenText(t.Id))],
                        [.. lp.TokenLogprobs, .. tokens[i].Select(t => (float?)t.Logprob)],
                        [.. lp.TopLogprobs, .. tokens[i].Select(t => TopDictionary(r, t.Top))],
                        [.. lp.TextOffset, .. tokens[i].Select(t => echo.Length + t.Offset)]);
                }
                choices[i] = new CompletionChoiceBody(i, echo + text[i].ToString(), lp, finish[i]?.ToOpenAIString())
                {
                    Reward = rewards[i],
                    TokenRewards = tokenRewards[i],
                };
            }
            return TypedResults.Ok(new CompletionResponse(r.Id, "text_completion", r.Created, r.Model, choices, r.Usage) { Alignment = r.Handle.Alignment });
        }
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
            return new ChatTopLogprob(t, a.Logprob, Bytes(t));
        }).ToList();
        return new ChatTokenLogprob(text, logprob, Bytes(text), alternatives);
    }

    public static Dictionary<string, float>? TopDictionary(ResponseContext r, TopLogprob[]? top)
    {
        if (top is null) return null;
        var d = new Dictionary<string, float>();
        foreach (var a in top) d.TryAdd(r.TokenText(a.TokenId), a.Logprob);
        return d;
    }

    private static int[] Bytes(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();
}
