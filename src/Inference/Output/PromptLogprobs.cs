using System.Numerics.Tensors;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Output;

/// <summary>
/// A prompt token's logprob under the model given the tokens before it (log-softmax of the raw logits, as generated
/// tokens report them), with the top alternatives. The first prompt token has none (<see cref="Logprob"/> null).
/// </summary>
public readonly record struct PromptTokenLogprob(int TokenId, float? Logprob, TopLogprob[]? TopLogprobs);

/// <summary>
/// Collects a prompt's logprobs while it is prefilled (OpenAI's <c>echo</c> with <c>logprobs</c>, lm-evaluation-harness's
/// loglikelihood): the logits at position p score prompt token p + 1. Fed by the scheduler from prefill chunks and from
/// prompt tokens fed by decode steps; published on the handle when the prompt is in the cache.
/// </summary>
internal sealed class PromptLogprobs(int[] prompt, int topN)
{
    private readonly PromptTokenLogprob[] _tokens = CreateFirst(prompt);
    private readonly int[] _heap = new int[Math.Max(1, topN)];

    private static PromptTokenLogprob[] CreateFirst(int[] prompt)
    {
        var tokens = new PromptTokenLogprob[prompt.Length];
        tokens[0] = new PromptTokenLogprob(prompt[0], null, null);
        return tokens;
    }

    /// <summary>Scores prompt token <paramref name="position"/> + 1 from the logits at <paramref name="position"/>.</summary>
    public void Observe(int position, ReadOnlySpan<float> logits)
    {
        var next = position + 1;
        if (next >= prompt.Length) return;
        var max = TensorPrimitives.Max(logits);
        double z = 0;
        foreach (var x in logits) z += Math.Exp(x - max);
        var logZ = max + Math.Log(z);
        TopLogprob[]? top = null;
        if (topN > 0)
        {
            var n = Math.Min(topN, logits.Length);
            var heap = _heap.AsSpan(0, n);
            TopSelection.SelectTopK(logits, n, heap);
            TopSelection.SortBestFirst(logits, heap);
            top = new TopLogprob[n];
            for (var i = 0; i < n; i++) top[i] = new TopLogprob(heap[i], (float)(logits[heap[i]] - logZ));
        }
        _tokens[next] = new PromptTokenLogprob(prompt[next], (float)(logits[prompt[next]] - logZ), top);
    }

    /// <summary>Every prompt token's entry (in order).</summary>
    public IReadOnlyList<PromptTokenLogprob> Tokens => _tokens;
}
