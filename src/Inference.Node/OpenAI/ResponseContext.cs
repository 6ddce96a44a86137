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

    /// <summary>Text of one token for logprobs (allocates; only used when logprobs were asked for).</summary>
    public string TokenText(int tokenId) => Tokenizer.Decode([tokenId]);
}
