using System.Text;
using Serving.LoadGen.Workload;
using Xunit;

namespace Serving.LoadGen.Tests.Workload;

public sealed class TraceGeneratorTests
{
    private static readonly WorkloadSpec Spec = new()
    {
        Seed = 42,
        Count = 500,
        Adapters = new AdapterPopularitySpec { Kind = AdapterPopularityKind.PowerLaw, Count = 16, Alpha = 0.8 },
        PromptLength = new LengthRange(8, 64),
        OutputLength = new LengthRange(4, 32),
        Rate = 5,
        Cv = 2,
    };

    private static byte[] Bytes(IEnumerable<TraceRequest> trace)
    {
        using var ms = new MemoryStream();
        TraceFile.Write(ms, trace);
        return ms.ToArray();
    }

    [Fact]
    public void Generate_SameSeedAndParameters_ByteIdenticalTrace()
    {
        byte[] first = Bytes(TraceGenerator.Generate(Spec));
        byte[] second = Bytes(TraceGenerator.Generate(Spec with { }));

        Assert.Equal(first, second);
        Assert.NotEqual(first, Bytes(TraceGenerator.Generate(Spec with { Seed = 43 })));
    }

    [Fact]
    public void TraceFile_WriteReadWrite_SameBytesAndSameRequests()
    {
        IReadOnlyList<TraceRequest> trace = TraceGenerator.Generate(Spec);
        byte[] written = Bytes(trace);

        IReadOnlyList<TraceRequest> replayed = TraceFile.Read(new StreamReader(new MemoryStream(written), Encoding.UTF8));

        Assert.Equal(trace, replayed);
        Assert.Equal(written, Bytes(replayed));
    }

    [Fact]
    public void TraceFile_ToDiskAndBack_ByteIdentical()
    {
        string dir = Directory.CreateTempSubdirectory("loadgen-trace").FullName;
        try
        {
            string a = Path.Combine(dir, "a.jsonl"), b = Path.Combine(dir, "b.jsonl");
            TraceFile.Write(a, TraceGenerator.Generate(Spec));
            TraceFile.Write(b, TraceFile.Read(a));

            Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
            Assert.DoesNotContain((byte)'\r', File.ReadAllBytes(a));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Generate_ChangingRate_LeavesAdaptersLengthsAndPromptsUnchanged()
    {
        IReadOnlyList<TraceRequest> slow = TraceGenerator.Generate(Spec);
        IReadOnlyList<TraceRequest> fast = TraceGenerator.Generate(Spec with { Rate = 50 });

        Assert.Equal(slow.Select(r => r with { ArrivalSeconds = 0 }), fast.Select(r => r with { ArrivalSeconds = 0 }));
        Assert.NotEqual(slow.Select(r => r.ArrivalSeconds), fast.Select(r => r.ArrivalSeconds));
        Assert.Equal(fast, TraceGenerator.WithArrivals(slow, 50, Spec.Cv, Spec.Seed));
    }

    [Fact]
    public void Generate_Lengths_UniformWithinHalfOpenRangeAndCoverBothEnds()
    {
        IReadOnlyList<TraceRequest> trace = TraceGenerator.Generate(Spec with { Count = 5000, PromptLength = new LengthRange(8, 16), OutputLength = new LengthRange(1, 4) });

        Assert.All(trace, r => Assert.InRange(r.PromptTokens, 8, 15));
        Assert.All(trace, r => Assert.InRange(r.OutputTokens, 1, 3));
        Assert.Equal(Enumerable.Range(8, 8), trace.Select(r => r.PromptTokens).Distinct().Order());
        Assert.Equal(Enumerable.Range(1, 3), trace.Select(r => r.OutputTokens).Distinct().Order());
        Assert.All(trace, r => Assert.Equal(r.PromptTokens, PromptSynthesizer.EstimateTokens(r.Prompt)));
    }

    [Fact]
    public void Generate_RateInfinity_AllArriveAtZero()
    {
        Assert.All(TraceGenerator.Generate(Spec with { Rate = double.PositiveInfinity }), r => Assert.Equal(0.0, r.ArrivalSeconds));
    }

    [Theory]
    [InlineData(AdapterPopularityKind.None, null)]
    [InlineData(AdapterPopularityKind.Single, "adapter-0")]
    public void Generate_NoneAndSingle_EveryRequestSameAdapter(AdapterPopularityKind kind, string? expected)
    {
        IReadOnlyList<TraceRequest> trace = TraceGenerator.Generate(Spec with { Adapters = new AdapterPopularitySpec { Kind = kind } });

        Assert.All(trace, r => Assert.Equal(expected, r.Adapter));
    }

    [Fact]
    public void Generate_Distinct_EveryRequestItsOwnAdapter()
    {
        IReadOnlyList<TraceRequest> trace = TraceGenerator.Generate(Spec with { Adapters = new AdapterPopularitySpec { Kind = AdapterPopularityKind.Distinct, Prefix = "d" } });

        Assert.Equal(trace.Count, trace.Select(r => r.Adapter).Distinct().Count());
        Assert.Equal("d7", trace[7].Adapter);
    }

    [Fact]
    public void TraceFile_Read_MinimalLinesFillDefaultsAndSynthesisePrompts()
    {
        const string jsonl = """
            {"output_tokens": 5, "prompt_tokens": 12, "adapter": "a", "extra": [1,2]}

            {"output_tokens": 3, "prompt": "hello there world", "arrival_s": 1.5}
            """;

        IReadOnlyList<TraceRequest> trace = TraceFile.Read(new StringReader(jsonl), seed: 9);

        Assert.Equal(2, trace.Count);
        Assert.Equal(new TraceRequest(0, 0, "a", 12, 5, trace[0].Prompt), trace[0]);
        Assert.Equal(12, PromptSynthesizer.EstimateTokens(trace[0].Prompt));
        Assert.Equal(new TraceRequest(1, 1.5, null, 3, 3, "hello there world"), trace[1]);
        Assert.Equal(trace[0].Prompt, TraceFile.Read(new StringReader(jsonl), seed: 9)[0].Prompt);
    }

    [Theory]
    [InlineData("{\"prompt\": \"x\"}", "line 1")]
    [InlineData("{\"output_tokens\": 3}", "prompt")]
    [InlineData("[1]", "object")]
    [InlineData("{\"output_tokens\": 0, \"prompt\": \"x\"}", "output_tokens")]
    public void TraceFile_Read_BadLine_FormatExceptionNamingTheProblem(string line, string expected)
    {
        var ex = Assert.Throws<FormatException>(() => TraceFile.Read(new StringReader(line)));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }
}
