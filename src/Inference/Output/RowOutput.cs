using System.Diagnostics;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;
using Serving.Inference.Tokenization;

namespace Serving.Inference.Output;

/// <summary>
/// The text side of one generated row: token-level stops (<see cref="StopCriteria"/>), detokenising, stop strings
/// (<see cref="StopStringMatcher"/>), logprobs and the events a client sees, written to a sink. Knows nothing of
/// scheduling: a decoding strategy appends the tokens it keeps. Per-row state is built once (on the submitting thread);
/// <see cref="Append"/> allocates only the event's text (interned) and, when logprobs were asked for, its arrays.
/// </summary>
public sealed class RowOutput
{
    private readonly StopCriteria _stop;
    private readonly StopStringMatcher _matcher;
    private readonly StreamingDecoder _detokenizer;
    private readonly char[] _chars;
    private readonly bool _logprobs;
    private readonly int[]? _topIds;
    private readonly float[]? _topValues;
    private long _lastTokenAt;

    /// <summary>Builds the output of choice <paramref name="choice"/> of <paramref name="request"/>.</summary>
    public RowOutput(int choice, GenerationRequest request, SamplingParameters sampling, ITokenizer tokenizer, ReadOnlySpan<int> eosIds)
    {
        Choice = choice;
        _stop = new StopCriteria(sampling, eosIds);
        _matcher = new StopStringMatcher(sampling.StopStrings);
        _detokenizer = tokenizer.CreateStreamingDecoder(request.SkipSpecialTokens);
        _chars = new char[_detokenizer.MaxCharsPerAppend];
        _logprobs = request.Logprobs;
        var top = request.Logprobs ? sampling.TopLogprobs ?? 0 : 0;
        if (top > 0)
        {
            _topIds = new int[top];
            _topValues = new float[top];
        }
    }

    /// <summary>The choice index events carry.</summary>
    public int Choice { get; }

    /// <summary>Tokens appended (stop tokens included, as OpenAI counts them).</summary>
    public int Tokens { get; private set; }

    /// <summary>True once finished.</summary>
    public bool Finished => Reason is not null;

    /// <summary>Why the row finished (null while it runs).</summary>
    public FinishReason? Reason { get; private set; }

    /// <summary>Where events go; the request's stream unless a strategy buffers them.</summary>
    public required IGenerationSink Sink { get; set; }

    /// <summary>Interns event texts (shared per scheduler).</summary>
    public required TextInterner Interner { get; init; }

    /// <summary>Told the inter-token latency of every token after the first.</summary>
    public ISchedulerObserver Observer { get; init; } = NullSchedulerObserver.Instance;

    /// <summary>
    /// Records a kept token: emits its text (held back while it may start a stop string) and, when asked for, its
    /// logprobs (top alternatives from <paramref name="sampler"/>'s last sample) and <paramref name="reward"/>. Returns
    /// why the row ends here, or null. A finish is only reported: the caller writes it with <see cref="Finish"/> (a
    /// strategy may first score the last token).
    /// </summary>
    public FinishReason? Append(int token, float logprob, TokenSampler sampler, bool contextFull, float? reward = null)
    {
        var now = Stopwatch.GetTimestamp();
        if (_lastTokenAt != 0) Observer.OnOutputToken(Stopwatch.GetElapsedTime(_lastTokenAt, now));
        _lastTokenAt = now;
        Tokens++;
        var finish = _stop.Check(token, Tokens);
        if (finish is null && contextFull) finish = FinishReason.Length;
        if (!_stop.IsStopToken(token))
        {
            string? text = null;
            if (_detokenizer.TryAppend(token, _chars, out var n) && n > 0)
            {
                if (_matcher.Push(_chars.AsSpan(0, n), out var emit)) finish = FinishReason.Stop;
                if (!emit.IsEmpty) text = Interner.Intern(emit);
            }
            if (_logprobs || reward is not null)
            {
                TopLogprob[]? top = null;
                if (_topIds is not null)
                {
                    var k = sampler.FillTopLogprobs(_topIds, _topValues);
                    top = new TopLogprob[k];
                    for (var i = 0; i < k; i++) top[i] = new TopLogprob(_topIds[i], _topValues![i]);
                }
                Sink.Write(new GenerationEvent(GenerationEventKind.Token, Choice, text ?? string.Empty, token, logprob, top, null, reward));
            }
            else if (text is not null)
            {
                Sink.Write(new GenerationEvent(GenerationEventKind.Token, Choice, text, token, logprob, null, null));
            }
        }
        return finish;
    }

    /// <summary>
    /// Ends the row: emits held-back text (unless aborted or cut by a stop string) and the finish event carrying
    /// <paramref name="reward"/> (the sequence reward, when a head scored the row).
    /// </summary>
    public void Finish(FinishReason reason, float? reward = null)
    {
        if (Finished) return;
        if (reason != FinishReason.Abort && !_matcher.IsStopped)
        {
            var n = _detokenizer.Flush(_chars);
            string? tail = null;
            if (_matcher.Push(_chars.AsSpan(0, n), out var emit)) reason = FinishReason.Stop;
            if (!emit.IsEmpty) tail = new string(emit);
            var rest = _matcher.Flush();
            if (!rest.IsEmpty) tail = (tail ?? string.Empty) + new string(rest);
            if (tail is not null) Sink.Write(new GenerationEvent(GenerationEventKind.Token, Choice, tail, -1, 0f, null, null));
        }
        Reason = reason;
        Sink.Write(new GenerationEvent(GenerationEventKind.Finished, Choice, null, -1, 0f, null, reason, reward));
    }
}
