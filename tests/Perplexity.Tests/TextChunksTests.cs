using Xunit;

namespace Serving.Perplexity.Tests;

public sealed class TextChunksTests
{
    [Fact]
    public void Split_BlankLines_SeparateParagraphsAndLineBreaksInsideStay()
    {
        var chunks = TextChunks.Split("Das Weltall zerfällt.\n   -- Papini\n\n\r\nWußten Sie schon?\r\nNein.\n  \n", 1000);
        Assert.Equal(["Das Weltall zerfällt.\n   -- Papini", "Wußten Sie schon?\nNein."], chunks);
    }

    [Fact]
    public void Split_LongParagraph_IsCutAtLineBreaksWithinTheLimit()
    {
        var chunks = TextChunks.Split("aaaa\nbbbb\ncccc\ndddd", 9);
        Assert.Equal(["aaaa\nbbbb", "cccc\ndddd"], chunks);
        Assert.All(chunks, c => Assert.True(c.Length <= 9));
    }

    [Fact]
    public void Split_LongLine_IsCutAtSpacesAndWordsLongerThanTheLimitAnywhere()
    {
        var chunks = TextChunks.Split("x\none tw th fo abcdefghijkl\ny", 10);
        Assert.Equal(["x", "one tw th", " fo", " abcdefghi", "jkl\ny"], chunks);
    }

    [Fact]
    public void Split_NothingButWhitespace_GivesNoChunk() => Assert.Empty(TextChunks.Split(" \n\n\t\n", 10));

    [Theory]
    [InlineData("ab\ncdefgh", "ab", "\ncdefgh")]        // the line break nearest the middle
    [InlineData("abc def gh\nijklmnopqrstuv", "abc def gh", "\nijklmnopqrstuv")] // a line break wins over a nearer space
    [InlineData("abcd efgh", "abcd", " efgh")]
    [InlineData("abcdefgh", "abcd", "efgh")]
    public void TryHalve_CutsAtALineBreakElseASpaceElseTheMiddle(string chunk, string first, string second)
    {
        Assert.True(TextChunks.TryHalve(chunk, out var a, out var b));
        Assert.Equal((first, second), (a, b));
    }

    [Fact]
    public void TryHalve_OneCharacter_CannotBeHalved() => Assert.False(TextChunks.TryHalve("a", out _, out _));
}
