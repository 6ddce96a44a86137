using System.Text;
using Serving.Inference.Sampling;
using Xunit;

namespace Serving.Inference.Tests.Sampling;

public sealed class StopStringMatcherTests
{
    /// <summary>Feeds chunks, returns everything emitted (plus the flush if no stop) and whether a stop matched.</summary>
    private static (string Text, bool Stopped, StopStringMatcher Matcher) Run(string[] stops, params string[] chunks)
    {
        var matcher = new StopStringMatcher(stops);
        var output = new StringBuilder();
        foreach (string chunk in chunks)
        {
            bool stopped = matcher.Push(chunk, out ReadOnlySpan<char> emit);
            output.Append(emit);
            if (stopped)
            {
                return (output.ToString(), true, matcher);
            }
        }
        output.Append(matcher.Flush());
        return (output.ToString(), false, matcher);
    }

    [Fact]
    public void Push_StopInOneChunk_EmitsTextBeforeIt()
    {
        var (text, stopped, m) = Run(["END"], "Hello ", "world END and more");
        Assert.True(stopped);
        Assert.Equal("Hello world ", text);
        Assert.Equal("END", m.MatchedStopString);
    }

    [Fact]
    public void Push_StopSplitAcrossChunks_IsFoundAndNotEmitted()
    {
        var (text, stopped, _) = Run(["</s>"], "abc<", "/", "s", ">tail");
        Assert.True(stopped);
        Assert.Equal("abc", text);
    }

    [Fact]
    public void Push_PossiblePrefix_IsHeldBackThenReleased()
    {
        var matcher = new StopStringMatcher(["STOP"]);
        Assert.False(matcher.Push("go ST", out ReadOnlySpan<char> emit));
        Assert.Equal("go ", emit.ToString());
        Assert.Equal(2, matcher.HeldBackLength);
        Assert.False(matcher.Push("ART", out emit));
        Assert.Equal("START", emit.ToString());
        Assert.Equal(0, matcher.HeldBackLength);
    }

    [Fact]
    public void Push_OverlappingPartialMatches_FindsLaterStart()
    {
        // "abcabd" after "abcab" + "c": the held "abcabc" only keeps "abc" as a live prefix; the match starts at 3.
        var (text, stopped, _) = Run(["abcabd"], "xxabcab", "c", "abd!");
        Assert.True(stopped);
        Assert.Equal("xxabc", text);
    }

    [Fact]
    public void Push_SelfOverlappingStop_FindsMatch()
    {
        var (text, stopped, _) = Run(["aab"], "a", "a", "a", "a", "b");
        Assert.True(stopped);
        Assert.Equal("aa", text);
    }

    [Fact]
    public void Push_SeveralStops_EarliestWins()
    {
        var (text, stopped, m) = Run(["world", "lo w"], "hello world");
        Assert.True(stopped);
        Assert.Equal("hel", text);
        Assert.Equal("lo w", m.MatchedStopString);
    }

    [Fact]
    public void Flush_NoMatch_ReturnsHeldTextSoNothingIsLost()
    {
        var (text, stopped, _) = Run(["\n\nUser:"], "answer\n", "\nUse");
        Assert.False(stopped);
        Assert.Equal("answer\n\nUse", text);
    }

    [Fact]
    public void Push_NoStops_EmitsEverythingAtOnce()
    {
        var matcher = new StopStringMatcher([]);
        Assert.False(matcher.Push("anything", out ReadOnlySpan<char> emit));
        Assert.Equal("anything", emit.ToString());
    }

    [Fact]
    public void Push_AfterStop_EmitsNothing()
    {
        var matcher = new StopStringMatcher(["x"]);
        Assert.True(matcher.Push("ax", out _));
        Assert.True(matcher.Push("more", out ReadOnlySpan<char> emit));
        Assert.True(emit.IsEmpty);
        Assert.True(matcher.Flush().IsEmpty);
    }

    [Fact]
    public void Push_ChunkLargerThanBuffer_Grows()
    {
        string big = new string('a', 10_000) + "STOP";
        var (text, stopped, _) = Run(["STOP"], "b", big);
        Assert.True(stopped);
        Assert.Equal("b" + new string('a', 10_000), text);
    }

    [Fact]
    public void Push_NonAsciiStop_SplitAcrossChunks()
    {
        var (text, stopped, _) = Run(["日本"], "こんにちは日", "本語");
        Assert.True(stopped);
        Assert.Equal("こんにちは", text);
    }

    [Fact]
    public void Push_SteadyState_DoesNotAllocate()
    {
        var matcher = new StopStringMatcher(["<|end|>", "\n\n"]);
        string[] chunks = ["Hello", " world", "<|", "en", "x", " and", "\n", "so", " on"];
        for (int i = 0; i < 100; i++)
        {
            matcher.Push(chunks[i % chunks.Length], out _);
        }
        // Best of three runs: a per-call allocation shows in every run (≥ 10,000 × its size); a one-off runtime
        // allocation on this thread while tiered compilation swaps code in (seen on a loaded machine) does not.
        long least = long.MaxValue;
        for (int run = 0; run < 3; run++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10_000; i++)
            {
                matcher.Push(chunks[i % chunks.Length], out _);
            }
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, least);
    }
}
