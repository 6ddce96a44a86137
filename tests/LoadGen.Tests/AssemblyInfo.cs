using Xunit;

// Several tests compare measured latencies with scripted delays on a 2-core machine; running them one at
// a time keeps other tests' CPU work (plot rendering, JIT) out of their measurements.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
