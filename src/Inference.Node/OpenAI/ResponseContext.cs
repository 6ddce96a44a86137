using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Node.OpenAI;

/// <summary>What a response (streamed or not) is built from.</summary>
internal sealed record ResponseContext(string Id, string Model, long Created, ITokenizer Tokenizer, PreparedRequest Prepared, GenerationHandle Handle, bool IsChat)
{
    /// <summary>Choices the client gets (n, or every best-of-n sample with <c>return_all</c>).</summary>
    public int Choices => Prepared.Generation.Decoding is Decoding.BestOfNSpec { ReturnAll: true } bon ? bon.N : Prepared.Generation.Choices;

    public UsageBody Usage => new(Handle.PromptTokens, Handle.CompletionTokens, Handle.PromptTokens + Handle.CompletionTokens, Handle.GeneratedTokens)
    {
        LayersPerToken = Prepared.Generation.EarlyExit is not null || Prepared.Generation.Decoding is Decoding.SpeculativeSpec ? Handle.LayersPerToken : null,
        DraftAcceptance = Handle.DraftAcceptance,
    };

    /// <summary>Where a tool call that did not parse is logged (null: not logged).</summary>
    public ILogger? Logger { get; init; }

    /// <summary>Index of this context's first choice in the response (several prompts: each prompt's choices follow the previous one's).</summary>
    public int ChoiceOffset { get; init; }

    /// <summary>
    /// Text of one token for logprobs, or <c>token_id:&lt;id&gt;</c> with <c>return_tokens_as_token_ids</c> (allocates;
    /// only used when logprobs were asked for).
    /// </summary>
    public string TokenText(int tokenId) => Prepared.TokenIdsAsText ? TokenIdText(tokenId) : Tokenizer.Decode([tokenId]);

    /// <summary>vLLM's name of a token in logprobs under <c>return_tokens_as_token_ids</c>.</summary>
    public static string TokenIdText(int tokenId) => "token_id:" + tokenId.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The usage of a response made of several prompts' contexts: counts summed (per-pass ratios only for one prompt).</summary>
    public static UsageBody SumUsage(IReadOnlyList<ResponseContext> parts)
    {
        if (parts.Count == 1) return parts[0].Usage;
        int prompt = 0, completion = 0, generated = 0;
        foreach (var p in parts)
        {
            prompt += p.Handle.PromptTokens;
            completion += p.Handle.CompletionTokens;
            generated += p.Handle.GeneratedTokens;
        }
        return new UsageBody(prompt, completion, prompt + completion, generated);
    }
}
