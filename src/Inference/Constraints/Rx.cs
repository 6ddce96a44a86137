namespace Serving.Inference.Constraints;

/// <summary>
/// A regular language over bytes, the intermediate form every constraint (JSON schema, regex, choice) compiles to before
/// it becomes a <see cref="ByteNfa"/>. Built only through the smart constructors, which fold the empty language away
/// (<see cref="Nothing"/> never appears inside another node), so every node of a built tree matches at least one string
/// and every NFA state compiled from it can still reach acceptance.
/// </summary>
internal abstract class Rx
{
    /// <summary>The empty language (no string matches).</summary>
    public static readonly Rx Nothing = new NothingRx();

    /// <summary>The language holding only the empty string.</summary>
    public static readonly Rx Empty = new SeqRx([]);

    public bool IsNothing => ReferenceEquals(this, Nothing);

    /// <summary>Rough NFA size, to refuse grammars too large to compile before building them.</summary>
    public abstract long Size { get; }

    public static Rx Byte(byte b) => new ByteRangeRx(b, b);

    public static Rx Range(byte lo, byte hi) => lo > hi ? Nothing : new ByteRangeRx(lo, hi);

    public static Rx Literal(ReadOnlySpan<byte> bytes)
    {
        var parts = new Rx[bytes.Length];
        for (var i = 0; i < bytes.Length; i++) parts[i] = Byte(bytes[i]);
        return Seq(parts);
    }

    public static Rx Literal(string text) => Literal(System.Text.Encoding.UTF8.GetBytes(text));

    public static Rx Seq(params Rx[] parts)
    {
        var list = new List<Rx>(parts.Length);
        foreach (var p in parts)
        {
            if (p.IsNothing) return Nothing;
            if (p is SeqRx s) list.AddRange(s.Parts);
            else list.Add(p);
        }
        return list.Count == 1 ? list[0] : new SeqRx([.. list]);
    }

    public static Rx Alt(params Rx[] parts) => Alt((IEnumerable<Rx>)parts);

    public static Rx Alt(IEnumerable<Rx> parts)
    {
        var list = new List<Rx>();
        foreach (var p in parts)
        {
            if (p.IsNothing) continue;
            if (p is AltRx a) list.AddRange(a.Parts);
            else list.Add(p);
        }
        return list.Count switch { 0 => Nothing, 1 => list[0], _ => new AltRx([.. list]) };
    }

    public static Rx Optional(Rx x) => x.IsNothing ? Empty : Alt(x, Empty);

    /// <summary>x{min,max}; <paramref name="max"/> null = unbounded.</summary>
    public static Rx Repeat(Rx x, int min, int? max)
    {
        if (max is int m && m < min) return Nothing;
        if (x.IsNothing) return min == 0 ? Empty : Nothing;
        if (max == 0) return Empty;
        if (min == 1 && max == 1) return x;
        return new RepeatRx(x, min, max);
    }

    public static Rx Star(Rx x) => Repeat(x, 0, null);

    public static Rx Plus(Rx x) => Repeat(x, 1, null);
}

internal sealed class NothingRx : Rx
{
    public override long Size => 0;
}

internal sealed class ByteRangeRx(byte lo, byte hi) : Rx
{
    public byte Lo { get; } = lo;
    public byte Hi { get; } = hi;
    public override long Size => 1;
}

internal sealed class SeqRx(Rx[] parts) : Rx
{
    public Rx[] Parts { get; } = parts;
    public override long Size { get; } = Sum(parts);

    internal static long Sum(Rx[] parts)
    {
        long s = 0;
        foreach (var p in parts) s += p.Size;
        return s;
    }
}

internal sealed class AltRx(Rx[] parts) : Rx
{
    public Rx[] Parts { get; } = parts;
    public override long Size { get; } = SeqRx.Sum(parts) + 1;
}

internal sealed class RepeatRx(Rx item, int min, int? max) : Rx
{
    public Rx Item { get; } = item;
    public int Min { get; } = min;
    public int? Max { get; } = max;
    public override long Size { get; } = item.Size * Math.Max(1, (long)(max ?? min + 1)) + (max ?? min + 1);
}

/// <summary>
/// A JSON object's members in a fixed order, joined by commas: required members always appear, optional ones may be
/// skipped. Compiled with one copy of each member per "something before it / nothing before it" state, so optional
/// members cost linear, not quadratic or exponential, size.
/// </summary>
internal sealed class MembersRx(Rx[] members, bool[] required) : Rx
{
    public Rx[] Members { get; } = members;
    public bool[] Required { get; } = required;
    public override long Size { get; } = 2 * SeqRx.Sum(members) + 4 * members.Length;
}

/// <summary>
/// Items joined by <see cref="Separator"/>, between <see cref="Min"/> and <see cref="Max"/> of them (null: unbounded; the
/// item is then compiled once, as a loop).
/// </summary>
internal sealed class ListRx(Rx item, byte separator, int min, int? max) : Rx
{
    public Rx Item { get; } = item;
    public byte Separator { get; } = separator;
    public int Min { get; } = min;
    public int? Max { get; } = max;
    public override long Size { get; } = item.Size * Math.Max(1, (long)(max ?? Math.Max(min, 1))) + 2 * (max ?? min + 1);
}
