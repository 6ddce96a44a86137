using Serving.AdapterStore.Compression;

namespace Serving.AdapterStore.Tests.Compression;

public sealed class PositionCodeTests
{
    [Theory]
    [InlineData(1000, 0.001, 1)]
    [InlineData(1000, 0.1, 2)]
    [InlineData(4096, 0.5, 3)]
    [InlineData(100000, 0.05, 4)]
    public void Encode_Decode_RoundTripsPositions(int count, double p, int seed)
    {
        var rng = new Random(seed);
        var positions = Enumerable.Range(0, count).Where(_ => rng.NextDouble() < p).ToArray();
        var enc = PositionCode.Encode(positions, count);
        var decoded = new int[positions.Length];
        PositionCode.Decode(enc.Coding, enc.RiceParameter, enc.Bytes, enc.BitLength, count, decoded);
        Assert.Equal(positions, decoded);
        Assert.True(enc.BitLength <= count, "never larger than a bitmap");
    }

    [Fact]
    public void BestRice_MatchesBruteForceCost()
    {
        int[] positions = [0, 5, 6, 100, 1000, 1001, 5000];
        var (b, bits) = PositionCode.BestRice(positions);
        long Cost(int k) { long c = 0; int prev = -1; foreach (int p in positions) { c += ((p - prev - 1) >> k) + 1 + k; prev = p; } return c; }
        Assert.Equal(Enumerable.Range(0, 41).Min(Cost), bits);
        Assert.Equal(Cost(b), bits);
    }

    [Fact]
    public void Decode_PositionPastGroup_Throws()
    {
        var enc = PositionCode.Encode([3, 900], 1000);
        Assert.Throws<ContainerFormatException>(() => PositionCode.Decode(enc.Coding, enc.RiceParameter, enc.Bytes, enc.BitLength, 500, new int[2]));
    }
}
