using Serving.LoadGen.Cli;
using Serving.LoadGen.Client;
using Serving.LoadGen.Workload;
using Xunit;

namespace Serving.LoadGen.Tests.Cli;

public sealed class CommandLineTests
{
    [Fact]
    public void Parse_FullCommandLine_AllOptionsBound()
    {
        string[] args =
        [
            "run", "--base-url", "http://127.0.0.1:9000", "--endpoint", "completions", "--model", "gpt2", "--http", "2",
            "--no-stream", "--timeout", "2.5", "--seed", "9", "--requests", "33", "--adapters", "list", "--adapter-list", "a=3,b",
            "--prompt-len", "16:32", "--output-len", "64", "--rate=1,2.5,inf", "--cv", "2", "--max-concurrency", "8",
            "--duration", "60", "--slo-ttft", "500", "--slo-e2e", "9000", "--top-adapters", "3", "--out", "x", "--adapter-as-model",
        ];

        (LoadGenOptions? o, IReadOnlyList<string> errors) = CommandLine.Parse(args, _ => null);

        Assert.Empty(errors);
        Assert.NotNull(o);
        Assert.Equal(new Uri("http://127.0.0.1:9000"), o.Client.BaseUrl);
        Assert.Equal(ApiEndpoint.Completions, o.Client.Endpoint);
        Assert.Equal(System.Net.HttpVersion.Version20, o.Client.HttpVersion);
        Assert.False(o.Client.Stream);
        Assert.True(o.Client.AdapterAsModel);
        Assert.Equal(TimeSpan.FromSeconds(2.5), o.Client.Timeout);
        Assert.Equal(9UL, o.Workload.Seed);
        Assert.Equal(33, o.Workload.Count);
        Assert.Equal(["a", "b"], o.Workload.Adapters.Names);
        Assert.Equal([3.0, 1.0], o.Workload.Adapters.Weights);
        Assert.Equal(new LengthRange(64, 65), o.Workload.OutputLength);
        Assert.Equal([1, 2.5, double.PositiveInfinity], o.Rates);
        Assert.Equal(1, o.Workload.Rate);
        Assert.Equal(2, o.Workload.Cv);
        Assert.Equal(8, o.MaxConcurrency);
        Assert.Equal(500, o.Slo.TtftMs);
        Assert.Null(o.Slo.TpotMs);
        Assert.Equal(3, o.TopAdapters);
    }

    [Fact]
    public void Parse_ApiKeyFromEnvironment_UnlessGiven()
    {
        Assert.Equal("env", CommandLine.Parse(["run"], n => n == "OPENAI_API_KEY" ? "env" : null).Options!.Client.ApiKey);
        Assert.Equal("cli", CommandLine.Parse(["run", "--api-key", "cli"], _ => "env").Options!.Client.ApiKey);
    }

    [Fact]
    public void Describe_MasksApiKey()
    {
        string text = CommandLine.Describe(["run", "--api-key", "s1", "--api-key=s2", "--model", "a b"]);

        Assert.DoesNotContain("s1", text, StringComparison.Ordinal);
        Assert.DoesNotContain("s2", text, StringComparison.Ordinal);
        Assert.Contains("'a b'", text, StringComparison.Ordinal);
    }
}
