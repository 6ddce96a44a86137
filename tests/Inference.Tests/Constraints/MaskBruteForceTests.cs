using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Serving.Inference.Constraints;
using Xunit;

namespace Serving.Inference.Tests.Constraints;

/// <summary>
/// Token masks against an independent oracle on a small vocabulary (single bytes, multi-byte pieces, pieces that end
/// inside a UTF-8 character, a special token, EOS): for finite languages enumerated without the automaton (serialised
/// values, or every short string a .NET <see cref="Regex"/> accepts), a token is allowed iff some accepted string
/// extends the output with its bytes, and EOS iff the output is itself accepted.
/// </summary>
public sealed class MaskBruteForceTests
{
    private const int Eos = 0;
    private const int Special = 1;

    private static readonly string[] Pieces =
    [
        "{", "}", "[", "]", ",", ":", "\"", "a", "b", "c", "x", "y", "z", "0", "1", "2", "3", "7", "9", "-", ".", "t", "r", "u", "e", "f", "l", "s", "n",
        "{\"", "\":", "\",\"", "\"}", "ab", "abc", "bc", "12", "120", "-1", "true", "false", "null", "re", "d", "green", "gr", "ee", "é", "ü", "[1", "],",
        "\"a\":", "\"b\":", "1,", "0}", "é\"",
    ];

    private static TokenVocabulary Vocabulary(out List<byte[]> bytes)
    {
        bytes = [[], Encoding.UTF8.GetBytes("<|special|>")];
        foreach (var p in Pieces) bytes.Add(Encoding.UTF8.GetBytes(p));
        var e = Encoding.UTF8.GetBytes("é");
        bytes.Add([e[0]]);  // ends inside a character
        bytes.Add([e[1]]);
        bytes.Add([e[1], (byte)'"']);
        var special = new bool[bytes.Count];
        special[Eos] = special[Special] = true;
        return TokenVocabulary.FromTokenBytes([.. bytes], special, bytes.Count + 3, [Eos]);
    }

    private static IEnumerable<string> Serialized(IEnumerable<object?> values) =>
        values.Select(v => JsonSerializer.Serialize(v, new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));

    public static TheoryData<string, string> Languages()
    {
        var data = new TheoryData<string, string>();
        data.Add("json_schema:{\"type\":\"integer\",\"minimum\":-12,\"maximum\":130}", string.Join('\n', Enumerable.Range(-12, 143).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))));
        data.Add("json_schema:{\"enum\":[\"red\",\"green\",\"é\",1,true,null]}", string.Join('\n', Serialized(["red", "green", "é", 1, true, null])));
        var objects = new List<string>();
        foreach (var a in Enumerable.Range(0, 21))
        {
            objects.Add($"{{\"a\":{a}}}");
            foreach (var b in new[] { "x", "yz" }) objects.Add($"{{\"a\":{a},\"b\":\"{b}\"}}");
        }
        data.Add("json_schema:{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":20},\"b\":{\"enum\":[\"x\",\"yz\"]}},\"required\":[\"a\"],\"additionalProperties\":false}",
            string.Join('\n', objects));
        var arrays = new List<string>();
        foreach (var n in Enumerable.Range(1, 3))
        {
            foreach (var combo in Combos(n, [true, false])) arrays.Add("[" + string.Join(',', combo.Select(x => x ? "true" : "false")) + "]");
        }
        data.Add("json_schema:{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"minItems\":1,\"maxItems\":3}", string.Join('\n', arrays));
        data.Add("regex:(ab|c)[0-2]{1,2}", string.Join('\n', RegexLanguage("^(ab|c)[0-2]{1,2}$", "abc012x", 4)));
        data.Add("regex:[a-c]{1,3}é?", string.Join('\n', RegexLanguage("^[a-c]{1,3}é?$", "abcé", 4)));
        data.Add("choice:true|tr|abc|é", "true\ntr\nabc\né");
        return data;
    }

    private static IEnumerable<T[]> Combos<T>(int n, T[] alphabet)
    {
        if (n == 0) { yield return []; yield break; }
        foreach (var rest in Combos(n - 1, alphabet)) foreach (var a in alphabet) yield return [.. rest, a];
    }

    private static IEnumerable<string> RegexLanguage(string anchored, string alphabet, int maxLength)
    {
        var regex = new Regex(anchored);
        for (var n = 1; n <= maxLength; n++)
        {
            foreach (var combo in Combos(n, alphabet.ToCharArray()))
            {
                var s = new string(combo);
                if (regex.IsMatch(s)) yield return s;
            }
        }
    }

    private static Grammar Compile(string spec)
    {
        var kind = spec[..spec.IndexOf(':')];
        var body = spec[(spec.IndexOf(':') + 1)..];
        return kind switch
        {
            "json_schema" => Grammar.FromJsonSchema(body),
            "regex" => Grammar.FromRegex(body),
            _ => Grammar.FromChoices(body.Split('|')),
        };
    }

    [Theory]
    [MemberData(nameof(Languages))]
    public void Mask_OnEveryReachablePrefix_AllowsExactlyTheTokensSomeAcceptedStringContinues(string spec, string language)
    {
        var accepted = language.Split('\n').Select(Encoding.UTF8.GetBytes).ToList();
        var vocab = Vocabulary(out var bytes);
        var masks = Compile(spec).MasksFor(vocab);
        var logits = new float[vocab.VocabSize];
        var masked = new float[vocab.VocabSize];
        // Breadth-first over outputs the mask allows, up to a depth that covers every accepted string.
        var frontier = new List<(byte[] Output, int State)> { ([], masks.Start) };
        var checkedStates = 0;
        for (var depth = 0; depth < 8 && frontier.Count > 0; depth++)
        {
            var next = new List<(byte[], int)>();
            foreach (var (output, state) in frontier.Take(400))
            {
                masks.Apply(state, int.MaxValue, logits, masked);
                for (var id = 0; id < vocab.VocabSize; id++)
                {
                    var allowed = !float.IsNegativeInfinity(masked[id]);
                    bool expected;
                    if (id == Eos) expected = accepted.Any(a => a.AsSpan().SequenceEqual(output));
                    else if (id == Special || id >= bytes.Count || bytes[id].Length == 0) expected = false;
                    else
                    {
                        byte[] extended = [.. output, .. bytes[id]];
                        expected = accepted.Any(a => a.AsSpan().StartsWith(extended));
                    }
                    Assert.True(expected == allowed, $"{spec}: after '{Encoding.UTF8.GetString(output)}' token {id} ('{(id < bytes.Count ? Encoding.UTF8.GetString(bytes[id]) : "")}') allowed={allowed}, expected {expected}");
                    if (allowed && id != Eos) next.Add(([.. output, .. bytes[id]], masks.Advance(state, id)));
                }
                checkedStates++;
            }
            frontier = next;
        }
        Assert.True(checkedStates > 10, "the walk should visit many prefixes");
    }

    [Fact]
    public void Mask_NearTheBudget_OnlyAllowsTokensThatStillFinishInTime()
    {
        var vocab = Vocabulary(out var bytes);
        var masks = Grammar.FromJsonSchema("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]}").MasksFor(vocab);
        var logits = new float[vocab.VocabSize];
        var masked = new float[vocab.VocabSize];
        var state = masks.Start;
        foreach (var piece in new[] { "{\"", "a", "\":", "\"", "x" }) state = masks.Advance(state, bytes.FindIndex(b => b.AsSpan().SequenceEqual(Encoding.UTF8.GetBytes(piece))));
        Assert.NotEqual(0, state);
        var output = Encoding.UTF8.GetBytes("{\"a\":\"x");
        // 3 tokens left: this one, one more, then EOS. Allowed ⇒ some single further token (or none) completes a valid
        // object. (The rule counts bytes, so it is conservative: 'abc' then '"}' would also fit, but is refused.)
        masks.Apply(state, 3, logits, masked);
        var allowedCount = 0;
        for (var id = 2; id < bytes.Count; id++)
        {
            byte[] text = [.. output, .. bytes[id]];
            var finishes = Valid(text) || bytes.Skip(2).Any(u => u.Length > 0 && Valid([.. text, .. u]));
            var allowed = !float.IsNegativeInfinity(masked[id]);
            if (allowed) allowedCount++;
            if (allowed) Assert.True(finishes, $"token '{Encoding.UTF8.GetString(bytes[id])}' is allowed but cannot finish in time");
        }
        Assert.True(allowedCount > 0);
        Assert.False(float.IsNegativeInfinity(masked[bytes.FindIndex(b => b.AsSpan().SequenceEqual("\""u8))]), "closing the string must stay allowed");
        Assert.False(float.IsNegativeInfinity(masked[bytes.FindIndex(b => b.AsSpan().SequenceEqual("\"}"u8))]), "closing the object must stay allowed");
        Assert.True(float.IsNegativeInfinity(masked[bytes.FindIndex(b => b.AsSpan().SequenceEqual("ab"u8))]), "more string content cannot finish in time");
        masks.Apply(state, int.MaxValue, logits, masked);
        Assert.False(float.IsNegativeInfinity(masked[bytes.FindIndex(b => b.AsSpan().SequenceEqual("abc"u8))]), "with room left, string content is allowed");
    }

    /// <summary>
    /// A row that cannot finish within its budget whatever it does (a string far shorter than its minLength): the mask
    /// is the unbounded one (the row stays in the grammar and ends by length), EOS stays banned, and this is decided
    /// without a vocabulary walk per budget — nothing is allocated however many budgets the row passes through.
    /// </summary>
    [Fact]
    public void Apply_NoTokenCanFinishInTime_UnboundedMaskAtEveryBudget_WithoutAllocating()
    {
        var vocab = Vocabulary(out var bytes);
        var masks = Grammar.FromJsonSchema("{\"type\":\"string\",\"minLength\":200}").MasksFor(vocab);
        var logits = new float[vocab.VocabSize];
        for (var i = 0; i < logits.Length; i++) logits[i] = i * 0.01f;
        var unbounded = new float[vocab.VocabSize];
        var masked = new float[vocab.VocabSize];
        var state = masks.Advance(masks.Start, bytes.FindIndex(b => b.AsSpan().SequenceEqual("\""u8)));
        masks.Apply(state, int.MaxValue, logits, unbounded);
        Assert.True(float.IsNegativeInfinity(unbounded[Eos]));
        Assert.False(float.IsNegativeInfinity(unbounded[bytes.FindIndex(b => b.AsSpan().SequenceEqual("abc"u8))]));
        for (var budget = 1; budget <= 60; budget++)
        {
            masks.Apply(state, budget, logits, masked);
            Assert.Equal(unbounded, masked);
        }
        var next = 61; // a budget never seen before on every call (a closing mask walked per budget would allocate)
        AllocationProbe.AssertNoAllocation(() => masks.Apply(state, next++, logits, masked), "GrammarMasks.Apply at new budgets none of which can finish");
        Assert.True(next < 190, "every budget stayed below the string's distance to acceptance");
    }

    private static bool Valid(byte[] text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("a", out var a) && a.ValueKind == JsonValueKind.String
                && doc.RootElement.EnumerateObject().Count() == 1;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    [Fact]
    public void Apply_OnACachedState_AllocatesNothing()
    {
        var vocab = Vocabulary(out _);
        var masks = Grammar.FromJsonSchema("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}").MasksFor(vocab);
        var logits = new float[vocab.VocabSize];
        var masked = new float[vocab.VocabSize];
        var state = masks.Advance(masks.Start, 2 + Array.IndexOf(Pieces, "{\""));
        AllocationProbe.AssertNoAllocation(() =>
        {
            masks.Apply(state, int.MaxValue, logits, masked);
            masks.Advance(state, 2 + Array.IndexOf(Pieces, "a"));
        }, "GrammarMasks.Apply + Advance");
    }
}
