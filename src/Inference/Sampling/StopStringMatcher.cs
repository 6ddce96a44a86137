namespace Serving.Inference.Sampling;

/// <summary>
/// Finds stop strings in streamed text. Each <see cref="Push"/> returns the text that is safe to send now: a tail
/// that could still grow into a stop string is held back until the next chunk decides it. On a match the output is
/// cut just before the stop string, which is never emitted (OpenAI's behaviour). Allocation-free once its buffer has
/// grown to the longest chunk seen. One instance per sequence; not thread-safe.
/// </summary>
public sealed class StopStringMatcher
{
    private readonly string[] _stops;
    private char[] _buffer;
    private int _heldStart;
    private int _heldEnd;

    /// <summary>Creates a matcher for <paramref name="stopStrings"/> (copied; empty strings are not allowed).</summary>
    public StopStringMatcher(IReadOnlyList<string> stopStrings)
    {
        ArgumentNullException.ThrowIfNull(stopStrings);
        _stops = new string[stopStrings.Count];
        int longest = 0;
        for (int i = 0; i < _stops.Length; i++)
        {
            string s = stopStrings[i];
            if (string.IsNullOrEmpty(s))
            {
                throw new SamplingParameterException("stop", $"stop[{i}] must be a non-empty string.");
            }
            _stops[i] = s;
            longest = Math.Max(longest, s.Length);
        }
        _buffer = new char[Math.Max(64, 2 * longest)];
    }

    /// <summary>True once a stop string has matched; later pushes are ignored.</summary>
    public bool IsStopped { get; private set; }

    /// <summary>The stop string that matched (vLLM's <c>stop_reason</c>), or null.</summary>
    public string? MatchedStopString { get; private set; }

    /// <summary>Characters currently held back as a possible stop-string prefix.</summary>
    public int HeldBackLength => _heldEnd - _heldStart;

    /// <summary>
    /// Feeds the next detokenised chunk. <paramref name="emit"/> is the text to send now; it points into this
    /// matcher's buffer and is valid only until the next call. Returns true when a stop string matched:
    /// <paramref name="emit"/> then ends just before it and generation should finish with <see cref="FinishReason.Stop"/>.
    /// </summary>
    public bool Push(ReadOnlySpan<char> chunk, out ReadOnlySpan<char> emit)
    {
        if (IsStopped)
        {
            emit = default;
            return true;
        }

        int held = _heldEnd - _heldStart;
        int length = held + chunk.Length;
        if (length > _buffer.Length)
        {
            var bigger = new char[Math.Max(length, 2 * _buffer.Length)];
            _buffer.AsSpan(_heldStart, held).CopyTo(bigger);
            _buffer = bigger;
        }
        else if (_heldStart > 0)
        {
            // The previous emit span is no longer promised, so the held tail can move to the front.
            _buffer.AsSpan(_heldStart, held).CopyTo(_buffer);
        }
        chunk.CopyTo(_buffer.AsSpan(held));
        ReadOnlySpan<char> text = _buffer.AsSpan(0, length);

        // A match cannot lie wholly inside the held tail (it would have matched last time), so search everything.
        int matchAt = -1;
        for (int i = 0; i < _stops.Length; i++)
        {
            int at = text.IndexOf(_stops[i].AsSpan(), StringComparison.Ordinal);
            if (at >= 0 && (matchAt < 0 || at < matchAt))
            {
                matchAt = at;
                MatchedStopString = _stops[i];
            }
        }
        if (matchAt >= 0)
        {
            IsStopped = true;
            emit = text[..matchAt];
            _heldStart = _heldEnd = 0;
            return true;
        }

        int hold = LongestPartialSuffix(text);
        emit = text[..(length - hold)];
        _heldStart = length - hold;
        _heldEnd = length;
        return false;
    }

    /// <summary>Generation ended without a match (length or EOS): returns the held-back text, which belongs to the output after all.</summary>
    public ReadOnlySpan<char> Flush()
    {
        if (IsStopped)
        {
            return default;
        }
        ReadOnlySpan<char> rest = _buffer.AsSpan(_heldStart, _heldEnd - _heldStart);
        _heldStart = _heldEnd = 0;
        return rest;
    }

    /// <summary>Longest suffix of <paramref name="text"/> that is a proper prefix of some stop string.</summary>
    private int LongestPartialSuffix(ReadOnlySpan<char> text)
    {
        int best = 0;
        foreach (string stop in _stops)
        {
            for (int len = Math.Min(stop.Length - 1, text.Length); len > best; len--)
            {
                if (text.EndsWith(stop.AsSpan(0, len), StringComparison.Ordinal))
                {
                    best = len;
                    break;
                }
            }
        }
        return best;
    }
}
