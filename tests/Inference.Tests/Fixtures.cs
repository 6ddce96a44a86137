using Serving.Fixtures;

namespace Serving.Inference.Tests;

/// <summary>Random-weight checkpoints written once per test run into a temp folder.</summary>
internal static class Fixtures
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, string> Written = [];

    public static string Checkpoint(string name, FixtureShape shape, int seed = 1)
    {
        lock (Gate)
        {
            var key = $"{name}-{seed}";
            if (Written.TryGetValue(key, out var dir)) return dir;
            dir = Path.Combine(Path.GetTempPath(), "serving-fixtures-" + Environment.ProcessId, key);
            FixtureCheckpoint.Write(dir, shape, seed);
            Written[key] = dir;
            return dir;
        }
    }

    public static string TinyGpt2 => Checkpoint("tiny-gpt2", FixtureShape.TinyGpt2);
    public static string TinyLlama => Checkpoint("tiny-llama", FixtureShape.TinyLlama);
}
