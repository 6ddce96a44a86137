namespace Serving.Standalone;

/// <summary>The one-process system; section <c>Standalone</c> (command line <c>--Standalone:Port 9000</c>, env <c>Standalone__Port</c>).</summary>
public sealed class StandaloneOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Standalone";

    /// <summary>Gateway listen address.</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>Gateway port (0 picks a free one).</summary>
    public int Port { get; set; } = 8080;

    /// <summary>Checkpoint folder; default <c>models/demo</c>, found by walking up from the executable and the working directory.</summary>
    public string? ModelPath { get; set; }

    /// <summary>Redis connection string; empty starts an embedded Garnet on loopback.</summary>
    public string? Redis { get; set; }

    /// <summary>Development tenant created at start.</summary>
    public string DevTenant { get; set; } = "dev";

    /// <summary>Its API key; empty = a random key per start (printed).</summary>
    public string? DevKey { get; set; }

    /// <summary>An admin key to configure (none by default).</summary>
    public string? AdminKey { get; set; }

    /// <summary>
    /// At start, upload the PEFT folders under <c>{ModelPath}/adapters</c> as tenant <c>public</c> (every tenant may use
    /// them) through the store's ingest path, each only when the store has no adapter of that name yet.
    /// </summary>
    public bool SeedPublicAdapters { get; set; } = true;
}
