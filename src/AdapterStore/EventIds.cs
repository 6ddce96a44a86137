namespace Serving.AdapterStore;

/// <summary>
/// Event ids of the adapter store's <c>[LoggerMessage]</c> logs. Serving.AdapterStore owns 4000–4999; each assembly's
/// range is in the table of <c>docs/telemetry.md</c>, and a test fails when two logs of the one-process host share an id.
/// </summary>
internal static class EventIds
{
    /// <summary>A heartbeat could not be published (registry unreachable).</summary>
    public const int HeartbeatFailing = 4001;

    /// <summary>Heartbeats are published again.</summary>
    public const int HeartbeatBack = 4002;

    /// <summary>An adapter version was published.</summary>
    public const int AdapterPublished = 4101;

    /// <summary>An adapter version was deleted.</summary>
    public const int AdapterDeleted = 4102;

    /// <summary>A store event (adapter or reward head) could not be handled.</summary>
    public const int AdapterEventFailed = 4103;

    /// <summary>A reward head version was published.</summary>
    public const int RewardHeadPublished = 4111;

    /// <summary>A reward head version was deleted.</summary>
    public const int RewardHeadDeleted = 4112;
}
