// One test class starts the whole system (node, gateway, embedded Garnet) on a small machine: run classes one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
