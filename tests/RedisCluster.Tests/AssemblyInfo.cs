// Each class starts its own cluster of six redis-server processes; one class at a time keeps the load on a 2-core CI
// machine bounded (a starved replica would fail over for the wrong reason).
[assembly: CollectionBehavior(DisableTestParallelization = true)]
