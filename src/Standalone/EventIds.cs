namespace Serving.Standalone;

/// <summary>
/// Event ids of the one-process host's own <c>[LoggerMessage]</c> logs. Serving.Standalone owns 9000–9999; each
/// assembly's range is in the table of <c>docs/telemetry.md</c>, and a test fails when two logs of this host share an id.
/// </summary>
internal static class EventIds
{
    /// <summary>The public adapters were uploaded at start.</summary>
    public const int PublicAdaptersSeeded = 9001;

    /// <summary>A public adapter folder failed validation and was not uploaded.</summary>
    public const int PublicAdapterNotSeeded = 9002;

    /// <summary>The public reward heads were uploaded at start.</summary>
    public const int PublicRewardHeadsSeeded = 9003;

    /// <summary>A public reward head folder failed validation and was not uploaded.</summary>
    public const int PublicRewardHeadNotSeeded = 9004;
}
