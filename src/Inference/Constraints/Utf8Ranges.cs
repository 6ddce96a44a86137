using System.Text;

namespace Serving.Inference.Constraints;

/// <summary>A set of Unicode scalar values as sorted, disjoint, non-adjacent inclusive ranges.</summary>
internal sealed class CodePointSet
{
    public const int MaxCodePoint = 0x10FFFF;

    public CodePointSet(IEnumerable<(int Lo, int Hi)> ranges)
    {
        var sorted = ranges.Where(r => r.Lo <= r.Hi).OrderBy(r => r.Lo).ToList();
        var merged = new List<(int, int)>();
        foreach (var (lo, hi) in sorted)
        {
            if (merged.Count > 0 && lo <= merged[^1].Item2 + 1)
            {
                merged[^1] = (merged[^1].Item1, Math.Max(merged[^1].Item2, hi));
            }
            else
            {
                merged.Add((lo, hi));
            }
        }
        Ranges = merged;
    }

    public IReadOnlyList<(int Lo, int Hi)> Ranges { get; }

    public bool IsEmpty => Ranges.Count == 0;

    public static CodePointSet Of(params (int, int)[] ranges) => new(ranges);

    public static CodePointSet Single(int c) => new([(c, c)]);

    public bool Contains(int c)
    {
        foreach (var (lo, hi) in Ranges) if (c >= lo && c <= hi) return true;
        return false;
    }

    public CodePointSet Union(CodePointSet other) => new(Ranges.Concat(other.Ranges));

    /// <summary>Scalar values in [0, U+10FFFF] (surrogates excluded) not in this set.</summary>
    public CodePointSet Complement()
    {
        var result = new List<(int, int)>();
        var next = 0;
        foreach (var (lo, hi) in Ranges)
        {
            if (lo > next) result.Add((next, lo - 1));
            next = hi + 1;
        }
        if (next <= MaxCodePoint) result.Add((next, MaxCodePoint));
        return new CodePointSet(result);
    }

    public CodePointSet Intersect(CodePointSet other) => Complement().Union(other.Complement()).Complement();

    public CodePointSet Minus(CodePointSet other) => Intersect(other.Complement());
}

/// <summary>Code point sets as byte-level regular languages of their UTF-8 encodings.</summary>
internal static class Utf8Ranges
{
    /// <summary>The UTF-8 encodings of every scalar value in <paramref name="set"/> (surrogates never match).</summary>
    public static Rx Encode(CodePointSet set)
    {
        var alts = new List<Rx>();
        foreach (var (lo, hi) in set.Ranges)
        {
            // Split at the encoding-length boundaries and around the surrogates.
            foreach (var (a, b) in Split(lo, hi)) alts.Add(SameLength(a, b));
        }
        return Rx.Alt(alts);
    }

    private static IEnumerable<(int, int)> Split(int lo, int hi)
    {
        int[] bounds = [0x7F, 0x7FF, 0xD7FF, 0xDFFF, 0xFFFF, 0x10FFFF];
        var start = lo;
        foreach (var bound in bounds)
        {
            if (start > hi) yield break;
            if (start > bound) continue;
            var end = Math.Min(hi, bound);
            if (!(start >= 0xD800 && end <= 0xDFFF)) yield return (start, end);
            start = end + 1;
        }
    }

    private static Rx SameLength(int lo, int hi)
    {
        var a = Utf8(lo);
        var b = Utf8(hi);
        return Between(a, b, 0);
    }

    private static byte[] Utf8(int c) => Encoding.UTF8.GetBytes(char.ConvertFromUtf32(c));

    /// <summary>Byte strings s of the same length with lo ≤ s ≤ hi lexicographically (continuation bytes 80..BF after position 0).</summary>
    private static Rx Between(byte[] lo, byte[] hi, int i)
    {
        var n = lo.Length;
        if (i == n - 1) return Rx.Range(lo[i], hi[i]);
        if (lo[i] == hi[i]) return Rx.Seq(Rx.Byte(lo[i]), Between(lo, hi, i + 1));
        var alts = new List<Rx>();
        var loTailMin = IsAll(lo, i + 1, 0x80);
        var hiTailMax = IsAll(hi, i + 1, 0xBF);
        var first = loTailMin ? lo[i] : lo[i] + 1;
        var last = hiTailMax ? hi[i] : hi[i] - 1;
        if (!loTailMin) alts.Add(Rx.Seq(Rx.Byte(lo[i]), Between(lo, Max(lo.Length, i + 1, lo), i + 1)));
        if (first <= last) alts.Add(Rx.Seq(Rx.Range((byte)first, (byte)last), Continuations(n - i - 1)));
        if (!hiTailMax) alts.Add(Rx.Seq(Rx.Byte(hi[i]), Between(Min(hi.Length, i + 1, hi), hi, i + 1)));
        return Rx.Alt(alts);
    }

    private static bool IsAll(byte[] s, int from, byte value)
    {
        for (var k = from; k < s.Length; k++) if (s[k] != value) return false;
        return true;
    }

    // The largest / smallest string sharing s's prefix before position `from`.
    private static byte[] Max(int n, int from, byte[] s)
    {
        var r = (byte[])s.Clone();
        for (var k = from; k < n; k++) r[k] = 0xBF;
        return r;
    }

    private static byte[] Min(int n, int from, byte[] s)
    {
        var r = (byte[])s.Clone();
        for (var k = from; k < n; k++) r[k] = 0x80;
        return r;
    }

    private static Rx Continuations(int count)
    {
        var parts = new Rx[count];
        for (var k = 0; k < count; k++) parts[k] = Rx.Range(0x80, 0xBF);
        return Rx.Seq(parts);
    }
}
