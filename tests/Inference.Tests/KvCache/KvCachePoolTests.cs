using Serving.Inference.KvCache;
using Xunit;

namespace Serving.Inference.Tests.KvCache;

public sealed class KvCachePoolTests
{
    [Fact]
    public void CopySlot_CopiesThePrefixOfEveryHeadAndLayer_LeavesTheRest_AllocatesNothing()
    {
        const int layers = 3, slots = 4, heads = 2, context = 8, dim = 4, length = 5;
        var pool = new KvCachePool(layers, slots, heads, context, dim);
        // Every element gets a value unique to its (buffer, layer, slot, head, position, dim).
        for (var l = 0; l < layers; l++)
        {
            Fill(pool.Keys[l].Span, 1_000_000 + l * 100_000);
            Fill(pool.Values[l].Span, 2_000_000 + l * 100_000);
        }
        var keysBefore = Snapshot(pool, keys: true);
        var valuesBefore = Snapshot(pool, keys: false);

        pool.CopySlot(from: 1, to: 3, length);

        for (var l = 0; l < layers; l++)
        {
            foreach (var (now, before) in new[] { (pool.Keys[l].Span.ToArray(), keysBefore[l]), (pool.Values[l].Span.ToArray(), valuesBefore[l]) })
            {
                for (var s = 0; s < slots; s++)
                for (var h = 0; h < heads; h++)
                for (var p = 0; p < context; p++)
                for (var d = 0; d < dim; d++)
                {
                    var at = (((s * heads) + h) * context + p) * dim + d;
                    var copied = s == 3 && p < length;
                    var expected = copied ? before[(((1 * heads) + h) * context + p) * dim + d] : before[at];
                    Assert.Equal(expected, now[at]);
                }
            }
        }

        AllocationProbe.AssertNoAllocation(() => pool.CopySlot(0, 2, length), "KvCachePool.CopySlot");
    }

    private static void Fill(Span<float> span, int offset)
    {
        for (var i = 0; i < span.Length; i++) span[i] = offset + i;
    }

    private static float[][] Snapshot(KvCachePool pool, bool keys) =>
        [.. Enumerable.Range(0, pool.Layers).Select(l => (keys ? pool.Keys[l] : pool.Values[l]).Span.ToArray())];
}
