// The suite starts real servers on a 2-core machine shared with other work; running collections one at a time keeps
// heartbeat timing (TTL 1–3 s) far from CPU starvation.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
