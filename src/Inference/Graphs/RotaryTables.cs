using Serving.Checkpoints;

namespace Serving.Inference.Graphs;

/// <summary>
/// Rotary cos/sin tables [positions, rotary_dim/2] for ONNX Runtime's <c>RotaryEmbedding</c> (non-interleaved halves,
/// as transformers' <c>rotate_half</c>), with the inverse frequencies of every <see cref="RopeType"/> computed as
/// transformers' <c>ROPE_INIT_FUNCTIONS</c> compute them, in fp32 like it: angle = fp32(p · inv_freq[i]), and for yarn
/// cos and sin multiplied by the attention factor.
/// <para>
/// Dynamic NTK is the one variant whose frequencies depend on the sequence: transformers recomputes them for each
/// forward pass from <c>seq_len = max(position_ids) + 1</c> when that passes <c>max_position_embeddings</c>, and keys
/// already cached keep the rotation they were written with. The table implements that rule per position: the row of
/// position p holds the frequencies transformers uses when the sequence is p + 1 tokens long (the original ones up to
/// <c>max_position_embeddings</c>). This is exactly what transformers computes when tokens are fed one at a time
/// (every decode step, and any prompt up to the original length); a prompt that crosses the original length in one
/// forward pass is rotated by transformers with the frequencies of its full length instead, so there the engine
/// differs — on purpose: its result does not depend on how the scheduler chunks a prompt or which rows share a batch.
/// </para>
/// </summary>
internal sealed class RotaryTables
{
    public RotaryTables(ModelConfig c, int maxPositions)
    {
        MaxPositions = maxPositions;
        Dim = c.RotaryDim;
        var half = Dim / 2;
        Cos = new float[maxPositions * half];
        Sin = new float[maxPositions * half];
        var (baseFrequencies, attention) = InverseFrequencies(c, seqLen: null);
        var dynamic = c.Rope.Type == RopeType.Dynamic;
        for (var p = 0; p < maxPositions; p++)
        {
            var inv = dynamic && p + 1 > c.Rope.OriginalMaxPositions ? InverseFrequencies(c, p + 1).InvFreq : baseFrequencies;
            for (var i = 0; i < half; i++)
            {
                var angle = (float)p * inv[i];
                Cos[p * half + i] = MathF.Cos(angle) * attention;
                Sin[p * half + i] = MathF.Sin(angle) * attention;
            }
        }
    }

    public int MaxPositions { get; }

    /// <summary>Rotated dimensions of each head (<see cref="ModelConfig.RotaryDim"/>); the rest pass through.</summary>
    public int Dim { get; }

    public float[] Cos { get; }
    public float[] Sin { get; }

    /// <summary>
    /// The inverse frequencies [rotary_dim/2] and the cos/sin scale of <paramref name="c"/>'s rotary variant;
    /// <paramref name="seqLen"/> is the sequence length dynamic NTK scales for (null: the original frequencies).
    /// </summary>
    public static (float[] InvFreq, float AttentionFactor) InverseFrequencies(ModelConfig c, int? seqLen)
    {
        var rope = c.Rope;
        var dim = c.RotaryDim;
        var half = dim / 2;
        var theta = c.RopeTheta;
        var inv = new float[half];
        // transformers: base ** (arange(0, dim, 2).float() / dim), in fp32.
        float Power(float b, int i) => MathF.Pow(b, (float)(2 * i) / dim);
        switch (rope.Type)
        {
            case RopeType.Default:
            case RopeType.Linear:
                for (var i = 0; i < half; i++) inv[i] = 1f / Power(theta, i);
                if (rope.Type == RopeType.Linear)
                {
                    for (var i = 0; i < half; i++) inv[i] /= (float)rope.Factor;
                }
                return (inv, 1f);
            case RopeType.Dynamic:
            {
                float b = theta;
                var original = rope.OriginalMaxPositions;
                if (seqLen is { } s && s > original)
                {
                    var ratio = (float)rope.Factor * s / original - (float)(rope.Factor - 1);
                    b = theta * MathF.Pow(ratio, (float)((double)dim / (dim - 2)));
                }
                for (var i = 0; i < half; i++) inv[i] = 1f / Power(b, i);
                return (inv, 1f);
            }
            case RopeType.Llama3:
            {
                var factor = (float)rope.Factor;
                float low = (float)rope.LowFreqFactor, high = (float)rope.HighFreqFactor, old = rope.OriginalMaxPositions;
                var lowWavelen = (float)(rope.OriginalMaxPositions / rope.LowFreqFactor);
                var highWavelen = (float)(rope.OriginalMaxPositions / rope.HighFreqFactor);
                for (var i = 0; i < half; i++)
                {
                    var f = 1f / Power(theta, i);
                    var wavelen = (float)(2 * Math.PI) / f;
                    var scaled = wavelen > lowWavelen ? f / factor : f;
                    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen))
                    {
                        var smooth = (old / wavelen - low) / (high - low);
                        scaled = (1 - smooth) * scaled / factor + smooth * scaled;
                    }
                    inv[i] = scaled;
                }
                return (inv, 1f);
            }
            case RopeType.Yarn:
            {
                var factor = rope.Factor;
                static double MScale(double scale, double m = 1) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;
                var attention = rope.AttentionFactor
                    ?? (rope.Mscale is { } m && m != 0 && rope.MscaleAllDim is { } mAll && mAll != 0 ? MScale(factor, m) / MScale(factor, mAll) : MScale(factor));
                double CorrectionDim(double rotations) =>
                    dim * Math.Log(rope.OriginalMaxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
                double lo = CorrectionDim(rope.BetaFast), hi = CorrectionDim(rope.BetaSlow);
                if (rope.Truncate)
                {
                    lo = Math.Floor(lo);
                    hi = Math.Ceiling(hi);
                }
                lo = Math.Max(lo, 0);
                hi = Math.Min(hi, dim - 1);
                if (lo == hi) hi += 0.001; // transformers' guard against a zero-width ramp
                for (var i = 0; i < half; i++)
                {
                    var posFreq = Power(theta, i);
                    var extrapolation = 1f / posFreq;
                    var interpolation = 1f / ((float)factor * posFreq);
                    var ramp = Math.Clamp(((float)i - (float)lo) / ((float)hi - (float)lo), 0f, 1f);
                    var extrapolationFactor = 1f - ramp;
                    inv[i] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
                }
                return (inv, (float)attention);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(c), rope.Type, "unknown rotary type");
        }
    }
}
