using Xunit;

namespace Serving.Inference.Tests;

/// <summary>
/// Asserts that a step allocates nothing on the managed heap of the calling thread. The step runs in several windows
/// and the least any window allocated must be zero: a real per-step allocation shows in every window, while a one-off
/// runtime allocation (tiered compilation, a timer on a loaded machine) lands in one window only.
/// </summary>
internal static class AllocationProbe
{
    public static void AssertNoAllocation(Action step, string what, int warmup = 5, int windows = 3, int steps = 30)
    {
        for (var i = 0; i < warmup; i++) step();
        var least = long.MaxValue;
        for (var w = 0; w < windows && least > 0; w++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < steps; i++) step();
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(least == 0, $"{what} allocated {least / (double)steps:F1} bytes per step in every window");
    }
}
