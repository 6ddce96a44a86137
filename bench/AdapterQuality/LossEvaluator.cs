using Serving.AdapterStore;
using Serving.Inference.Adapters;
using Serving.Inference.Engine;

namespace Serving.AdapterQuality;

/// <summary>
/// Mean next-token loss (nats/token) of a split through the engine, with or without an adapter in slot 0. Each
/// document is scored in windows of <see cref="Window"/> + 1 tokens (the forge trains and evaluates on 128 + 1): a
/// window predicts its tokens 1..n from the ones before it, and the next window starts at the last token of this one.
/// </summary>
internal sealed class LossEvaluator(BatchDecoder decoder)
{
    public const int Window = 128;
    private readonly float[] _logits = new float[(Window + 1) * decoder.Model.Config.VocabSize];

    /// <summary>Writes <paramref name="adapter"/> into slot 0 (null: the base model is used by <see cref="Loss"/>).</summary>
    public void Load(LoraAdapter adapter) =>
        decoder.Adapters!.Write(0, AdapterFactors.FromLora(decoder.Model.Config, adapter.Modules.Select(m => new LoraModule(m.Module, m.Layer, m.Rank, m.Scale, m.A, m.B))));

    /// <summary>Token-weighted mean loss over the split; <paramref name="adapted"/> uses slot 0.</summary>
    public double Loss(EvalSplit split, bool adapted)
    {
        int vocab = decoder.Model.Config.VocabSize;
        double total = 0;
        long count = 0;
        foreach (var doc in split.Documents)
        {
            for (int start = 0; start < doc.Length - 1; start += Window)
            {
                int n = Math.Min(Window + 1, doc.Length - start);
                var seq = decoder.TryAllocate() ?? throw new InvalidOperationException("no free row");
                try
                {
                    if (adapted) decoder.SetAdapter(seq, 0);
                    decoder.Prefill(seq, doc.AsSpan(start, n), allLogits: _logits);
                }
                finally
                {
                    decoder.Release(seq);
                }
                for (int i = 0; i < n - 1; i++)
                {
                    total -= LogSoftmaxAt(_logits.AsSpan(i * vocab, vocab), doc[start + i + 1]);
                    count++;
                }
            }
        }
        return total / count;
    }

    private static double LogSoftmaxAt(ReadOnlySpan<float> logits, int target)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        return logits[target] - max - Math.Log(sum);
    }
}
