using System.Buffers;
using System.Text;
using System.Text.Json;

namespace Serving.Contracts.Json;

/// <summary>
/// Finds the first JSON string (a value or a property name) whose text cannot become a .NET string: bytes that are not
/// UTF-8, or an escape that leaves a lone UTF-16 surrogate (<c>"\ud800"</c>). <see cref="Utf8JsonReader"/> checks the
/// structure of a document but not the text inside its strings, so without this check such a body passes the parser and
/// fails later, wherever a string is first read, as an <see cref="InvalidOperationException"/> (a 500). Node and gateway
/// run it before anything else reads the body, so the answer is a 400 naming the field.
/// </summary>
public static class JsonTextCheck
{
    /// <summary>
    /// The path (<c>messages[0].content</c>, as the request's fields are named in errors) of the first string in
    /// <paramref name="json"/> that is not valid text, or null when every string is valid. Malformed JSON is not this
    /// check's business: it stops at the first syntax error and returns what it found before it (the parser that runs
    /// next names the syntax error).
    /// </summary>
    public static string? FindInvalidString(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 256 });
        // One frame per open container: a property name's bytes in an object, the next index in an array.
        var frames = new List<Frame>();
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        if (frames.Count > 0) frames[^1] = frames[^1].Entered();
                        frames.Add(new Frame(reader.TokenType == JsonTokenType.StartArray, -1, 0, -1));
                        break;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        frames.RemoveAt(frames.Count - 1);
                        break;
                    case JsonTokenType.PropertyName:
                        if (!IsValidText(ref reader)) return PathOf(json, frames, propertyName: true);
                        frames[^1] = frames[^1] with { NameStart = (int)reader.TokenStartIndex + 1, NameLength = reader.ValueSpan.Length, Escaped = reader.ValueIsEscaped };
                        break;
                    case JsonTokenType.String:
                        if (frames.Count > 0) frames[^1] = frames[^1].Entered();
                        if (!IsValidText(ref reader)) return PathOf(json, frames, propertyName: false);
                        break;
                    default:
                        if (frames.Count > 0) frames[^1] = frames[^1].Entered();
                        break;
                }
            }
        }
        catch (JsonException)
        {
            // A syntax error: the parser that runs next reports it.
        }
        return null;
    }

    private static bool IsValidText(ref Utf8JsonReader reader)
    {
        if (!reader.ValueIsEscaped && !reader.HasValueSequence) return System.Text.Unicode.Utf8.IsValid(reader.ValueSpan);
        // Escapes (\uXXXX) can encode lone surrogates: unescaping is the only complete check, and the reader does it.
        int length = reader.HasValueSequence ? checked((int)reader.ValueSequence.Length) : reader.ValueSpan.Length;
        char[] buffer = ArrayPool<char>.Shared.Rent(Math.Max(1, length));
        try
        {
            reader.CopyString(buffer);
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
        finally
        {
            ArrayPool<char>.Shared.Return(buffer);
        }
    }

    private static string PathOf(ReadOnlySpan<byte> json, List<Frame> frames, bool propertyName)
    {
        var path = new StringBuilder();
        for (int i = 0; i < frames.Count; i++)
        {
            var f = frames[i];
            bool last = i == frames.Count - 1;
            if (f.IsArray)
            {
                if (f.Index >= 0) path.Append('[').Append(f.Index).Append(']');
                continue;
            }
            // The last object's current name is the invalid one itself when a property name failed.
            if (last && propertyName) break;
            if (f.NameStart < 0) continue;
            if (path.Length > 0) path.Append('.');
            path.Append(NameText(json.Slice(f.NameStart, f.NameLength), f.Escaped));
        }
        return path.ToString();
    }

    /// <summary>A property name as text (valid by construction: it passed the check when it was read).</summary>
    private static string NameText(ReadOnlySpan<byte> raw, bool escaped)
    {
        if (!escaped) return Encoding.UTF8.GetString(raw);
        // Re-read the quoted name as a JSON string to unescape it.
        var quoted = new byte[raw.Length + 2];
        quoted[0] = quoted[^1] = (byte)'"';
        raw.CopyTo(quoted.AsSpan(1));
        var reader = new Utf8JsonReader(quoted);
        reader.Read();
        return reader.GetString() ?? "";
    }

    /// <param name="IsArray">An array (else an object).</param>
    /// <param name="NameStart">Byte offset of the current property name (objects; -1 before the first).</param>
    /// <param name="NameLength">Its length in bytes.</param>
    /// <param name="Index">The index of the current element (arrays; -1 before the first).</param>
    private readonly record struct Frame(bool IsArray, int NameStart, int NameLength, int Index)
    {
        public bool Escaped { get; init; }

        /// <summary>A value starts in this container: an array moves to its next index.</summary>
        public Frame Entered() => IsArray ? this with { Index = Index + 1 } : this;
    }
}
