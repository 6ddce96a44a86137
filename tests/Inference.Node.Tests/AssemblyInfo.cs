using Xunit;

// Tests start servers and measure interleaving; running classes one at a time keeps them from starving each other on small machines.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
