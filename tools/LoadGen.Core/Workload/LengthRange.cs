using System.Globalization;

namespace Serving.LoadGen.Workload;

/// <summary>A half-open token-length range [Min, MaxExclusive), as S-LoRA's [8, 512).</summary>
public readonly record struct LengthRange(int Min, int MaxExclusive)
{
    /// <summary>Parses "MIN:MAX" (half-open) or a single "N" (exactly N).</summary>
    public static LengthRange Parse(string text)
    {
        string[] parts = text.Split(':');
        LengthRange range = parts.Length switch
        {
            1 => new LengthRange(ParseInt(parts[0]), ParseInt(parts[0]) + 1),
            2 => new LengthRange(ParseInt(parts[0]), ParseInt(parts[1])),
            _ => throw new FormatException($"Length range '{text}' is not MIN:MAX or N."),
        };
        if (range.Min < 1 || range.MaxExclusive <= range.Min)
        {
            throw new FormatException($"Length range '{text}' must satisfy 1 <= MIN < MAX (MAX exclusive).");
        }

        return range;
    }

    /// <summary>Exactly <paramref name="tokens"/> tokens (the range [N, N + 1)), as a benchmark with fixed lengths wants.</summary>
    public static LengthRange Exactly(int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        return new LengthRange(tokens, tokens + 1);
    }

    /// <summary>Draws a length uniformly from the range.</summary>
    public int Sample(DeterministicRandom rng) => rng.NextInt(Min, MaxExclusive);

    /// <inheritdoc />
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Min}:{MaxExclusive}");

    private static int ParseInt(string s) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : throw new FormatException($"'{s}' is not an integer.");
}
