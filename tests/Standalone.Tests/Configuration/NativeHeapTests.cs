using System.Runtime.InteropServices;
using Serving.ServiceDefaults.Memory;

namespace Serving.Standalone.Tests.Configuration;

/// <summary>The <c>NativeHeap</c> settings: checked, and applied to glibc's malloc.</summary>
public sealed class NativeHeapTests
{
    [Fact]
    public void Apply_FixedMmapThreshold_LargeBlockAfterALargerFreeIsMappedOnItsOwn()
    {
        Assert.True(NativeHeap.Apply(new NativeHeapOptions { ArenaMax = 0, MmapThresholdBytes = 128 << 10 }));
        // glibc's dynamic threshold would rise past 8 MiB when an 8 MiB mapped block is freed, and the 1 MiB block after
        // it would come from the arena; with the threshold fixed at 128 KiB it gets a mapping of its own.
        unsafe
        {
            void* big = NativeMemory.Alloc(8 << 20);
            NativeMemory.Free(big);
            nuint before = MallInfo2().hblks;
            void* block = NativeMemory.Alloc(1 << 20);
            try
            {
                Assert.Equal(before + 1, MallInfo2().hblks);
            }
            finally
            {
                NativeMemory.Free(block);
            }
        }
    }

    [Theory]
    [InlineData(-1, 0, "NativeHeap:ArenaMax")]
    [InlineData(65, 0, "NativeHeap:ArenaMax")]
    [InlineData(2, 100, "NativeHeap:MmapThresholdBytes")]
    [InlineData(2, (32 << 20) + 1, "NativeHeap:MmapThresholdBytes")]
    public void Validate_OutOfRange_NamesTheKey(int arenaMax, int threshold, string key)
    {
        var result = new NativeHeapOptionsValidator().Validate(null, new NativeHeapOptions { ArenaMax = arenaMax, MmapThresholdBytes = threshold });
        Assert.True(result.Failed);
        Assert.Contains(key, result.FailureMessage, StringComparison.Ordinal);
        Assert.True(new NativeHeapOptionsValidator().Validate(null, new NativeHeapOptions()).Succeeded, "the defaults are valid");
        Assert.True(new NativeHeapOptionsValidator().Validate(null, new NativeHeapOptions { ArenaMax = 0, MmapThresholdBytes = 0 }).Succeeded, "0 leaves glibc's defaults");
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo
    {
        public nuint arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallInfo MallInfo2();
}
