// The tests start whole process topologies; run them one at a time (the machine may have two cores).
[assembly: CollectionBehavior(DisableTestParallelization = true)]
