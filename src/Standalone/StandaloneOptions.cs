using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Checkpoints.Hub;

namespace Serving.Standalone;

/// <summary>The one-process system; section <c>Standalone</c> (command line <c>--Standalone:Port 9000</c>, env <c>Standalone__Port</c>).</summary>
public sealed class StandaloneOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Standalone";

    /// <summary>Gateway listen address; default 127.0.0.1.</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>Gateway port (0 picks a free one); default 8080.</summary>
    public int Port { get; set; } = 8080;

    /// <summary>
    /// Checkpoint folder, or a Hugging Face model id <c>org/name[@revision]</c> in the local hub cache (see
    /// <c>Node:ModelPath</c>, <c>Node:HubCache</c>); default <c>models/demo</c>, found by walking up from the executable and the working directory.
    /// </summary>
    public string? ModelPath { get; set; }

    /// <summary>Redis connection string; empty starts an embedded Garnet on loopback.</summary>
    public string? Redis { get; set; }

    /// <summary>Development tenant created at start; default <c>dev</c>.</summary>
    public string DevTenant { get; set; } = "dev";

    /// <summary>Its API key; empty = a random key per start (printed).</summary>
    public string? DevKey { get; set; }

    /// <summary>An admin key to configure (none by default).</summary>
    public string? AdminKey { get; set; }

    /// <summary>
    /// At start, upload the PEFT folders under <c>{ModelPath}/adapters</c> as tenant <c>public</c> (every tenant may use
    /// them) through the store's ingest path, each only when the store has no adapter of that name yet; default true.
    /// </summary>
    public bool SeedPublicAdapters { get; set; } = true;

    /// <summary>
    /// At start, upload <c>{ModelPath}/reward-head</c> as <c>public/positive</c> and <c>{ModelPath}/otter</c> (when present) as
    /// <c>public/positive-otter</c>, each only when the store has no head of that name yet, and make <c>public/positive</c>
    /// the node's default head (<c>Node:DefaultRewardHead</c>, unless set) so alignment works without naming one; default true.
    /// </summary>
    public bool SeedRewardHeads { get; set; } = true;
}

/// <summary>Checks <see cref="StandaloneOptions"/> at start (the host's <c>ValidateOnStart</c>, and <see cref="StandaloneSystem.StartAsync"/>).</summary>
public sealed class StandaloneOptionsValidator : IValidateOptions<StandaloneOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, StandaloneOptions o)
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(o.Host)) errors.Add("Standalone:Host must be non-empty.");
        if (o.Port is < 0 or > 65535) errors.Add("Standalone:Port must be in [0, 65535].");
        if (!AdapterKeys.IsValidTenant(o.DevTenant)) errors.Add($"Standalone:DevTenant '{o.DevTenant}' is not a valid tenant id (1–64 of a-z, 0-9, '-', '_').");
        // A Hugging Face id is resolved (and reported when missing, with where it looked) at start.
        if (o.ModelPath is { } path && !CheckpointLocator.IsHubId(path, out _) && !File.Exists(Path.Combine(path, "config.json")))
            errors.Add($"Standalone:ModelPath '{path}' holds no config.json (give a checkpoint folder, or a model id org/name[@revision] in the local Hugging Face cache).");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws <see cref="OptionsValidationException"/> when <paramref name="options"/> is invalid.</summary>
    public static StandaloneOptions Check(StandaloneOptions options)
    {
        var result = new StandaloneOptionsValidator().Validate(null, options);
        return result.Failed ? throw new OptionsValidationException(Options.DefaultName, typeof(StandaloneOptions), result.Failures) : options;
    }
}
