using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text.Json;

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>
/// An independent reader of adapter containers, written from the format description (docs/adapter-store.md and the
/// codecs' summaries) without calling the store's decoders: header JSON read as a document, bit streams read one bit
/// at a time, the range decoder and the symbol binarisation re-stated. Tests compare the store's
/// <c>AdapterContainer.Decode</c> with this, value for value.
/// </summary>
internal static class NaiveContainer
{
    /// <summary>Tensor name → (shape, values) of a container, and its header.</summary>
    public static (Dictionary<string, (long[] Shape, float[] Data)> Tensors, JsonElement Header) Decode(byte[] data)
    {
        Assert.Equal("CPFT", System.Text.Encoding.ASCII.GetString(data, 0, 4));
        int version = BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(4));
        Assert.InRange(version, 1, 2);
        Assert.Equal(XxHash64.HashToUInt64(data.AsSpan(0, data.Length - 8)), BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(data.Length - 8)));
        int headerLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(8));
        byte[] headerBytes = data.AsSpan(12, headerLength).ToArray();
        if ((data[7] & 1) != 0) headerBytes = Unzstd(headerBytes);
        var header = JsonDocument.Parse(headerBytes).RootElement.Clone();
        var body = data.AsSpan(12 + headerLength, data.Length - 8 - 12 - headerLength).ToArray();
        var tensors = header.GetProperty("codec").GetString() switch
        {
            "Lossless" => Lossless(header, body),
            "ComPeft" => ComPeft(header, body),
            "Quant" => Quant(header, body),
            var c => throw new InvalidDataException($"codec {c}"),
        };
        return (tensors, header);
    }

    private static byte[] Unzstd(byte[] compressed)
    {
        using var d = new ZstdSharp.Decompressor();
        return d.Unwrap(compressed).ToArray();
    }

    private static long[] Shape(JsonElement t) => t.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray();

    private static byte[] Slice(byte[] body, JsonElement e, string offset, string length) =>
        body.AsSpan((int)e.GetProperty(offset).GetInt64(), (int)e.GetProperty(length).GetInt64()).ToArray();

    private static Dictionary<string, (long[] Shape, float[] Data)> Lossless(JsonElement header, byte[] body)
    {
        var raw = Unzstd(Slice(body, header.GetProperty("lossless"), "offset", "length"));
        var result = new Dictionary<string, (long[], float[])>();
        foreach (var t in header.GetProperty("tensors").EnumerateArray())
        {
            int n = (int)t.GetProperty("count").GetInt64(), start = (int)t.GetProperty("offset").GetInt64();
            string type = t.GetProperty("sourceType").GetString()!;
            int width = type switch { "F32" or "I32" => 4, "F16" or "BF16" or "I16" => 2, "U8" => 1, _ => 8 };
            var values = new float[n];
            for (int i = 0; i < n; i++)
            {
                // Byte planes: byte b of element i lives at start + b·n + i.
                var bytes = new byte[width];
                for (int b = 0; b < width; b++) bytes[b] = raw[start + b * n + i];
                values[i] = type switch
                {
                    "F32" => BitConverter.ToSingle(bytes),
                    "F16" => (float)BitConverter.ToHalf(bytes),
                    "BF16" => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bytes) << 16),
                    "U8" => bytes[0],
                    "I16" => BitConverter.ToInt16(bytes),
                    "I32" => BitConverter.ToInt32(bytes),
                    _ => BitConverter.ToInt64(bytes),
                };
            }
            result[t.GetProperty("name").GetString()!] = (Shape(t), values);
        }
        return result;
    }

    /// <summary>Bit i of a stream is bit i%8 of byte i/8.</summary>
    private static bool Bit(byte[] bytes, long i) => ((bytes[i / 8] >> (int)(i % 8)) & 1) != 0;

    private static Dictionary<string, (long[] Shape, float[] Data)> ComPeft(JsonElement header, byte[] body)
    {
        var result = new Dictionary<string, (long[], float[])>();
        var tensors = header.GetProperty("tensors").EnumerateArray().ToList();
        foreach (var g in header.GetProperty("groups").EnumerateArray())
        {
            string name = g.GetProperty("name").GetString()!;
            int count = g.GetProperty("count").GetInt32(), kept = g.GetProperty("kept").GetInt32();
            var flat = new float[count];
            var posBytes = Slice(body, g, "positionsOffset", "positionsLength");
            var positions = new List<int>();
            if (g.GetProperty("positionCoding").GetString() == "Bitmap")
            {
                for (int i = 0; i < count; i++)
                {
                    if (Bit(posBytes, i)) positions.Add(i);
                }
            }
            else
            {
                // Rice: gap − 1 between kept positions as q one-bits, a zero-bit, then b bits least significant first.
                int b = g.GetProperty("riceParameter").GetInt32();
                long at = 0;
                int prev = -1;
                for (int j = 0; j < kept; j++)
                {
                    long q = 0;
                    while (Bit(posBytes, at++)) q++;
                    long rem = 0;
                    for (int k = 0; k < b; k++) rem |= (Bit(posBytes, at++) ? 1L : 0) << k;
                    prev = prev + 1 + (int)((q << b) | rem);
                    positions.Add(prev);
                }
            }
            Assert.Equal(kept, positions.Count);
            var signs = Slice(body, g, "signsOffset", "signsLength");
            int bits = g.TryGetProperty("magnitudeBits", out var mb) ? mb.GetInt32() : 0;
            float[]? levels = g.TryGetProperty("levels", out var lv) && lv.ValueKind == JsonValueKind.Array ? lv.EnumerateArray().Select(x => x.GetSingle()).ToArray() : null;
            byte[] codes = bits > 0 ? Slice(body, g, "magnitudesOffset", "magnitudesLength") : [];
            int components = g.TryGetProperty("components", out var cp) ? cp.GetInt32() : 0;
            byte[] scales = components > 0 ? Slice(body, g, "scalesOffset", "scalesLength") : [];
            var members = tensors.Where(t => t.GetProperty("group").GetString() == name).ToList();
            for (int j = 0; j < kept; j++)
            {
                int p = positions[j];
                float magnitude = g.GetProperty("alpha").GetSingle();
                if (bits > 0)
                {
                    int code = 0;
                    for (int k = 0; k < bits; k++) code |= (Bit(codes, (long)j * bits + k) ? 1 : 0) << k;
                    magnitude = levels![code];
                }
                if (components > 0)
                {
                    var t = members.Single();
                    var shape = Shape(t);
                    bool isA = t.GetProperty("name").GetString()!.EndsWith("lora_A.weight", StringComparison.Ordinal);
                    int c = isA ? p / (int)shape[1] : p % (int)shape[1];
                    magnitude *= BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(scales.AsSpan(2 * c)) << 16);
                }
                flat[p] = Bit(signs, j) ? -magnitude : magnitude;
            }
            foreach (var t in members)
            {
                int start = (int)t.GetProperty("offset").GetInt64(), n = (int)t.GetProperty("count").GetInt64();
                result[t.GetProperty("name").GetString()!] = (Shape(t), flat.AsSpan(start, n).ToArray());
            }
        }
        return result;
    }

    private static Dictionary<string, (long[] Shape, float[] Data)> Quant(JsonElement header, byte[] body)
    {
        var q = header.GetProperty("quant");
        var side = Unzstd(Slice(body, q, "sideOffset", "sideLength"));
        var decoder = new NaiveRangeDecoder(Slice(body, q, "symbolsOffset", "symbolsLength"));
        var probabilities = new Dictionary<(int Class, int Context), int>();
        var result = new Dictionary<string, (long[], float[])>();
        int at = 0;
        foreach (var t in header.GetProperty("tensors").EnumerateArray())
        {
            var shape = Shape(t);
            int rows = (int)shape[0], cols = (int)shape[1];
            bool isA = t.GetProperty("name").GetString()!.EndsWith("lora_A.weight", StringComparison.Ordinal);
            var values = new float[rows * cols];
            // A: one component per row; B: one per column; each component's symbols in order along it.
            for (int c = 0; c < (isA ? rows : cols); c++)
            {
                float step = BitConverter.Int32BitsToSingle((side[at] | side[at + 1] << 8) << 16);
                int cls = side[at + 2];
                at += 3;
                for (int i = 0; i < (isA ? cols : rows); i++)
                {
                    int symbol = Symbol(decoder, probabilities, cls);
                    values[isA ? c * cols + i : i * cols + c] = symbol * step;
                }
            }
            result[t.GetProperty("name").GetString()!] = (shape, values);
        }
        Assert.Equal(side.Length, at);
        return result;
    }

    /// <summary>is-zero (context 0), sign (direct), |q| − 1 in unary over contexts 1..14, then Exp-Golomb (direct) of the rest.</summary>
    private static int Symbol(NaiveRangeDecoder d, Dictionary<(int, int), int> p, int cls)
    {
        if (d.Bit(p, (cls, 0)) == 0) return 0;
        bool negative = d.Direct() == 1;
        int m = 0;
        while (m < 14 && d.Bit(p, (cls, 1 + m)) == 1) m++;
        if (m == 14)
        {
            int n = 0;
            while (d.Direct() == 1) n++;
            int rest = 1;
            for (int k = 0; k < n; k++) rest = (rest << 1) | d.Direct();
            m = 14 + rest - 1;
        }
        return negative ? -(m + 1) : m + 1;
    }

    /// <summary>
    /// The LZMA-style binary range decoder: range starts at 2³²−1, code at the first five bytes; a modelled bit with
    /// probability-of-zero p (11 bits, starts at 1024) splits at bound = (range ≫ 11)·p; zero keeps [0, bound) and p
    /// grows by (2048 − p) ≫ 5, one takes the rest and p shrinks by p ≫ 5; a direct bit halves the range; whenever the
    /// range drops below 2²⁴ both shift left by a byte.
    /// </summary>
    private sealed class NaiveRangeDecoder
    {
        private readonly byte[] _in;
        private int _pos;
        private ulong _range = 0xFFFFFFFF;
        private ulong _code;

        public NaiveRangeDecoder(byte[] input)
        {
            _in = input;
            for (int i = 0; i < 5; i++) _code = ((_code << 8) | NextByte()) & 0xFFFFFFFF;
        }

        private ulong NextByte() => _pos < _in.Length ? _in[_pos++] : 0UL;

        private void Normalize()
        {
            while (_range < 1UL << 24)
            {
                _range <<= 8;
                _code = ((_code << 8) | NextByte()) & 0xFFFFFFFF;
            }
        }

        public int Bit(Dictionary<(int, int), int> probabilities, (int, int) context)
        {
            int p = probabilities.TryGetValue(context, out var v) ? v : 1024;
            ulong bound = (_range >> 11) * (ulong)p;
            int bit;
            if (_code < bound)
            {
                _range = bound;
                p += (2048 - p) >> 5;
                bit = 0;
            }
            else
            {
                _code -= bound;
                _range -= bound;
                p -= p >> 5;
                bit = 1;
            }
            probabilities[context] = p;
            Normalize();
            return bit;
        }

        public int Direct()
        {
            _range >>= 1;
            int bit = _code >= _range ? 1 : 0;
            if (bit == 1) _code -= _range;
            Normalize();
            return bit;
        }
    }
}
