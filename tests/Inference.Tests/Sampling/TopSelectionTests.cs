using Xunit;
using Serving.Inference.Sampling;

namespace Serving.Inference.Tests.Sampling;

public sealed class TopSelectionTests
{
    private static float[] WithTies(int n, int seed)
    {
        var random = new Random(seed);
        // Few distinct values, so ties are everywhere.
        return Enumerable.Range(0, n).Select(_ => (float)random.Next(-20, 20)).ToArray();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    [InlineData(1000)]
    public void SelectTopK_MatchesFullSortWithIdTieBreak(int k)
    {
        float[] values = WithTies(5003, k);
        var heap = new int[k];
        TopSelection.SelectTopK(values, k, heap);
        TopSelection.SortBestFirst(values, heap);
        int[] expected = Enumerable.Range(0, values.Length).OrderByDescending(i => values[i]).ThenBy(i => i).Take(k).ToArray();
        Assert.Equal(expected, heap);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(500)]
    [InlineData(1025)]
    [InlineData(4999)]
    [InlineData(5003)]
    public void KthLargest_MatchesFullSort(int k)
    {
        foreach (float[] values in new[] { WithTies(5003, k), SamplingReference.RandomLogits(5003, k) })
        {
            float expected = values.OrderByDescending(x => x).ElementAt(k - 1);
            float actual = TopSelection.KthLargest(values, k, new int[Math.Min(k, TopSelection.HeapLimit)], new float[values.Length]);
            Assert.Equal(expected, actual);
        }
    }

    [Fact]
    public void Xoshiro_MatchesPublishedReferenceVector()
    {
        // Blackman & Vigna reference outputs for state {1, 2, 3, 4} (also rand_xoshiro's test vector).
        var rng = Xoshiro256StarStar.FromState(1, 2, 3, 4);
        ulong[] expected = [11520, 0, 1509978240, 1215971899390074240, 1216172134540287360, 607988272756665600,
            16172922978634559625, 8476171486693032832, 10595114339597558777, 2904607092377533576];
        foreach (ulong e in expected)
        {
            Assert.Equal(e, rng.NextUInt64());
        }
    }

    [Fact]
    public void Xoshiro_SeedIsExpandedWithSplitMix64()
    {
        // SplitMix64's published first outputs from state 0 become the xoshiro state for seed 0.
        var seeded = new Xoshiro256StarStar(0);
        var explicitState = Xoshiro256StarStar.FromState(0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC);
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal(explicitState.NextUInt64(), seeded.NextUInt64());
        }
    }
}
