namespace Serving.Gateway.Telemetry;

/// <summary>
/// Event ids of the gateway's <c>[LoggerMessage]</c> logs. Serving.Gateway owns 2000–2999; each assembly's range is
/// in the table of <c>docs/telemetry.md</c>, and a test fails when two logs of the one-process host share an id.
/// </summary>
internal static class EventIds
{
    /// <summary>A client went away before its answer.</summary>
    public const int ClientGone = 2001;

    /// <summary>A node joined the registry view.</summary>
    public const int NodeJoined = 2101;

    /// <summary>A node left the registry view.</summary>
    public const int NodeLeft = 2102;

    /// <summary>The registry cannot be read; routing goes on from the last view.</summary>
    public const int RegistryUnreachable = 2103;

    /// <summary>The registry can be read again.</summary>
    public const int RegistryBack = 2104;

    /// <summary>A node refused the connection; the next node is tried.</summary>
    public const int NodeConnectFailed = 2201;
}
