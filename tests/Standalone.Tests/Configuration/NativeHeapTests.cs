using System.Runtime.InteropServices;
using Serving.ServiceDefaults.Memory;

namespace Serving.Standalone.Tests.Configuration;

/// <summary>The <c>NativeHeap</c> settings: checked, and applied to glibc's malloc.</summary>
/// <remarks>malloc's state is process-wide: these tests run alone (no host of another test allocating or freeing beside
/// them) and judge their own blocks, never process-wide counters another thread could move.</remarks>
[Collection(NativeHeapCollection.Name)]
public sealed class NativeHeapTests
{
    [Fact]
    public void Apply_FixedMmapThreshold_LargeBlockAfterALargerFreeIsMappedOnItsOwn()
    {
        Assert.True(NativeHeap.Apply(new NativeHeapOptions { ArenaMax = 0, MmapThresholdBytes = 128 << 10 }));
        // glibc maps a block on its own only when no free chunk and not the heap's top can hold it, and (with its
        // dynamic threshold) only when it is at least as large as the largest mapped block freed so far. So the block is
        // made larger than all the free space malloc holds (mallinfo2's fordblks, top included: earlier hosts in this
        // process leave some), and smaller than a 30 MiB mapped block freed first: glibc's dynamic threshold would rise
        // to 30 MiB and put the block in the heap; with the threshold fixed at 128 KiB it gets a mapping of its own.
        unsafe
        {
            void* big = NativeMemory.Alloc(30 << 20);
            NativeMemory.Free(big);
            var size = (nuint)Math.Max(1 << 20, (long)MallInfo2().fordblks + (1 << 20));
            void* block = NativeMemory.Alloc(size);
            void* small = NativeMemory.Alloc(64);
            try
            {
                Assert.False(IsMapped(small), "a 64-byte block comes from an arena (the header check reads the flag)");
                Assert.True(IsMapped(block), $"a {size >> 20} MiB block above the fixed 128 KiB threshold gets a mapping of its own");
            }
            finally
            {
                NativeMemory.Free(block);
                NativeMemory.Free(small);
            }
        }
    }

    [Fact]
    public void Trim_FreedBlocksInsideTheHeap_ReturnedToTheOs()
    {
        // ~50 MiB of small blocks, then all freed but one in 64: the live ones pin the heap's top, so glibc keeps the
        // free pages between them until malloc_trim hands them back.
        const int count = 100_000, size = 512;
        var blocks = new nint[count];
        unsafe
        {
            for (int i = 0; i < count; i++)
            {
                blocks[i] = (nint)NativeMemory.Alloc(size);
                new Span<byte>((void*)blocks[i], size).Fill(1);
            }
            for (int i = 0; i < count; i++)
            {
                if (i % 64 != 0) NativeMemory.Free((void*)blocks[i]);
            }
            try
            {
                long before = RssAnonBytes();
                Assert.True(NativeHeap.Trim());
                long released = before - RssAnonBytes();
                Assert.True(released > 20L << 20, $"malloc_trim released {released >> 20} MiB of ~48 MiB freed");
            }
            finally
            {
                for (int i = 0; i < count; i += 64) NativeMemory.Free((void*)blocks[i]);
            }
        }
    }

    private static long RssAnonBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
                return long.Parse(line[8..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        }
        throw new InvalidOperationException("no RssAnon in /proc/self/status");
    }

    [Theory]
    [InlineData(-1, 0, "NativeHeap:ArenaMax")]
    [InlineData(65, 0, "NativeHeap:ArenaMax")]
    [InlineData(2, 100, "NativeHeap:MmapThresholdBytes")]
    [InlineData(2, (32 << 20) + 1, "NativeHeap:MmapThresholdBytes")]
    [InlineData(2, 0, "NativeHeap:TrimInterval", 0.5)]
    [InlineData(2, 0, "NativeHeap:TrimInterval", 7200)]
    public void Validate_OutOfRange_NamesTheKey(int arenaMax, int threshold, string key, double trimSeconds = 60)
    {
        var result = new NativeHeapOptionsValidator().Validate(null, new NativeHeapOptions
        {
            ArenaMax = arenaMax, MmapThresholdBytes = threshold, TrimInterval = TimeSpan.FromSeconds(trimSeconds),
        });
        Assert.True(result.Failed);
        Assert.Contains(key, result.FailureMessage, StringComparison.Ordinal);
        Assert.True(new NativeHeapOptionsValidator().Validate(null, new NativeHeapOptions()).Succeeded, "the defaults are valid");
        Assert.True(new NativeHeapOptionsValidator().Validate(null, new NativeHeapOptions { ArenaMax = 0, MmapThresholdBytes = 0, TrimInterval = TimeSpan.Zero }).Succeeded, "0 leaves glibc's defaults");
    }

    /// <summary>glibc's chunk header: the size word just before the user pointer carries IS_MMAPPED (bit 1) when the
    /// chunk is a mapping of its own rather than a piece of an arena.</summary>
    private static unsafe bool IsMapped(void* block) => (((nuint*)block)[-1] & 2) != 0;

    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo
    {
        public nuint arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallInfo MallInfo2();
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NativeHeapCollection
{
    public const string Name = "glibc malloc state";
}
