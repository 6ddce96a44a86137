using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Decoding;

/// <summary>
/// Generates nothing: the prompt is prefilled (and scored, with <see cref="GenerationRequest.PromptLogprobs"/>) and the
/// request ends with <c>length</c>, as OpenAI's and vLLM's <c>max_tokens: 0</c> with <c>echo</c> do.
/// </summary>
public sealed record ScoreOnlySpec : DecodingSpec
{
    public override string Method => "score";

    public static readonly ScoreOnlySpec Instance = new();

    public override int MaxRows(GenerationRequest request) => 1;

    public override void Validate(GenerationRequest request, int capacity)
    {
        if (request.Choices != 1) throw new SamplingParameterException("n", "n must be 1 when nothing is generated (max_tokens 0).");
    }

    public override IDecodingStrategy Create(DecodingSetup setup) => new ScoreOnlyStrategy(setup);
}

internal sealed class ScoreOnlyStrategy(DecodingSetup setup) : IDecodingStrategy
{
    private readonly Output.RowOutput _output = setup.CreateOutput(0, setup.Request.Sampling);

    public bool IsDone => _output.Finished;

    public ulong[] Seeds => [];

    public void OnLogits(IDecodingContext context, DecodingRow row, ReadOnlySpan<float> logits)
    {
        _output.Finish(FinishReason.Length, row.RewardHead());
        context.Release(row);
    }

    public void Abort()
    {
        if (!_output.Finished) _output.Finish(FinishReason.Abort);
    }
}

internal static class DecodingRowRewards
{
    /// <summary>The row's reward when a head scores it (the prompt's, here), else null.</summary>
    public static float? RewardHead(this DecodingRow row) => float.IsNaN(row.Reward) ? null : row.Reward;
}
