using Microsoft.Extensions.Options;

namespace Serving.AdapterStore.Api;

/// <summary>Limits of the HTTP surface; section <c>AdapterStore:Api</c>.</summary>
public sealed class AdapterApiOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "AdapterStore:Api";

    /// <summary>Largest accepted upload body (413 past it); at least 1 KiB, default 256 MiB.</summary>
    public long MaxUploadBytes { get; set; } = 256L << 20;

    /// <summary>Largest accepted reward head upload (413 past it); at least 1 KiB, default 64 MiB.</summary>
    public long MaxRewardHeadUploadBytes { get; set; } = 64L << 20;

    /// <summary>Keep the original files unless the upload says otherwise; default true.</summary>
    public bool KeepOriginalByDefault { get; set; } = true;
}

/// <summary>Checks <see cref="AdapterApiOptions"/> at start.</summary>
public sealed class AdapterApiOptionsValidator : IValidateOptions<AdapterApiOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, AdapterApiOptions o)
    {
        var errors = new List<string>();
        if (o.MaxUploadBytes < 1024) errors.Add($"{AdapterApiOptions.SectionName}:MaxUploadBytes must be at least 1 KiB.");
        if (o.MaxRewardHeadUploadBytes < 1024) errors.Add($"{AdapterApiOptions.SectionName}:MaxRewardHeadUploadBytes must be at least 1 KiB.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
