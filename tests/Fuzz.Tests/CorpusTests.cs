using Xunit;

namespace Serving.Fuzz.Tests;

/// <summary>
/// Every input under <c>tools/fuzz/corpus/&lt;target&gt;/</c> (the seeds, afl-cmin's minimised queues and the inputs
/// that once crashed or hung a parser) goes through its fuzz target as an ordinary test: a parser may refuse it only
/// with the exception it documents for bad input, which the target swallows; any other exception fails the test.
/// </summary>
public sealed class CorpusTests
{
    private static string CorpusRoot => Path.Combine(FuzzTargets.RepoRoot, "tools", "fuzz", "corpus");

    public static TheoryData<string> Targets()
    {
        var data = new TheoryData<string>();
        foreach (var name in FuzzTargets.All.Keys) data.Add(name);
        return data;
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Target_EveryCorpusInput_IsParsedOrRefusedWithItsFormatException(string target)
    {
        var folder = Path.Combine(CorpusRoot, target);
        Assert.True(Directory.Exists(folder), $"no corpus for {target} at {folder}");
        var files = Directory.GetFiles(folder).Order(StringComparer.Ordinal).ToArray();
        Assert.NotEmpty(files);
        var failures = new List<string>();
        foreach (var file in files)
        {
            try
            {
                FuzzTargets.All[target](File.ReadAllBytes(file));
            }
            catch (Exception e)
            {
                failures.Add($"{Path.GetFileName(file)}: {e.GetType().Name}: {e.Message}");
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {files.Length} inputs escaped {target}:\n{string.Join("\n", failures)}");
    }

    [Fact]
    public void Corpus_HasAFolderPerTargetAndNoOther()
    {
        var folders = Directory.GetDirectories(CorpusRoot).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(FuzzTargets.All.Keys.Order(StringComparer.Ordinal).ToArray(), folders);
    }
}
