using Xunit;

namespace Serving.Perplexity.Tests;

public sealed class DocumentsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("perplexity-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Read_Jsonl_TakesEachLinesTextWithItsLineBreaks()
    {
        var path = Write("split.jsonl", """
            {"text":"Wußten Sie schon...\n... daß","chat":false,"n_tokens":51}

            {"text":"Zweites","chat":true,"prompt":"Say something.","response":"Zweites"}
            """);
        Assert.Equal(["Wußten Sie schon...\n... daß", "Zweites"], Documents.Read(path));
    }

    [Theory]
    [InlineData("""{"chat":true}""", ":1: a line must be a JSON object")]
    [InlineData("""{"text":3}""", ":1: a line must be a JSON object")]
    [InlineData("{\"text\":\"a\"}\nnot json", ":2: not JSON")]
    public void Read_BadJsonlLine_NamesTheLine(string content, string message)
    {
        var e = Assert.Throws<FormatException>(() => Documents.Read(Write("bad.jsonl", content)));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_TextFile_GivesItsParagraphs() =>
        Assert.Equal(["eins\nzwei", "drei"], Documents.Read(Write("text.txt", "eins\r\nzwei\r\n\r\n\r\ndrei\n")));

    [Fact]
    public void Chunks_ShortDocument_IsSentExactlyAsReadAndALongOneIsCut()
    {
        var chunks = Documents.Chunks(["Erster\n\nAbsatz", "aaaa\nbbbb\ncccc\ndddd"], 15);
        Assert.Equal(["Erster\n\nAbsatz", "aaaa\nbbbb\ncccc", "dddd"], chunks);
    }
}
