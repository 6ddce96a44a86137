using Xunit;

namespace Serving.Perplexity.Tests;

public sealed class TokenWindowsTests
{
    [Fact]
    public void Plan_DocumentThatFits_IsOneWindowScoredAfterThePrefix()
    {
        Assert.Equal([new TokenWindow(0, 1, 40)], TokenWindows.Plan(40, 1, 511, 255));
        Assert.Equal([new TokenWindow(0, 3, 10)], TokenWindows.Plan(10, 3, 10, 5));
    }

    [Fact]
    public void Plan_NoPrefix_StillLeavesTheFirstTokenUnscored() =>
        Assert.Equal([new TokenWindow(0, 1, 5)], TokenWindows.Plan(5, 0, 8, 4));

    [Fact]
    public void Plan_LongDocument_SlidesWithTheOverlapAsContext()
    {
        // 0..10 then 6..16 scoring 10..16, then 12..22 scoring 16..22, then 18..25 scoring 22..25.
        Assert.Equal(
            [new TokenWindow(0, 1, 10), new TokenWindow(6, 10, 16), new TokenWindow(12, 16, 22), new TokenWindow(18, 22, 25)],
            TokenWindows.Plan(25, 1, 10, 4));
        // Overlap 1: lm-evaluation-harness's disjoint windows, one token of context each.
        Assert.Equal([new TokenWindow(0, 1, 4), new TokenWindow(3, 4, 7), new TokenWindow(6, 7, 8)], TokenWindows.Plan(8, 1, 4, 1));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(0, 0)]
    public void Plan_NothingAfterThePrefix_GivesNoWindow(int length, int prefix) => Assert.Empty(TokenWindows.Plan(length, prefix, 8, 4));

    [Theory]
    [InlineData(1000, 1, 511, 255)]
    [InlineData(1000, 13, 100, 1)]
    [InlineData(512, 1, 511, 510)]
    [InlineData(77, 2, 3, 2)]
    public void Plan_AnyShape_ScoresEveryTokenAfterThePrefixOnceWithinTheLimit(int length, int prefix, int max, int overlap)
    {
        var windows = TokenWindows.Plan(length, prefix, max, overlap);
        var scored = new int[length];
        foreach (var w in windows)
        {
            Assert.InRange(w.Length, 2, max);
            Assert.True(w.ScoredFrom > w.Start, "a window's first token has no logprob: it must be context");
            for (var t = w.ScoredFrom; t < w.End; t++) scored[t]++;
        }
        for (var t = 0; t < length; t++) Assert.Equal(t < prefix ? 0 : 1, scored[t]);
        Assert.All(windows.Skip(1), w => Assert.Equal(overlap, w.ScoredFrom - w.Start));
    }

    [Fact]
    public void Plan_PrefixFillingTheWindow_IsRefused() =>
        Assert.Throws<ArgumentException>(() => TokenWindows.Plan(20, 8, 8, 4));

    [Theory]
    [InlineData(8, 8)]
    [InlineData(8, 0)]
    [InlineData(1, 0)]
    public void Plan_OverlapNotBelowTheWindow_IsRefused(int max, int overlap) =>
        Assert.ThrowsAny<ArgumentException>(() => TokenWindows.Plan(20, 1, max, overlap));
}
