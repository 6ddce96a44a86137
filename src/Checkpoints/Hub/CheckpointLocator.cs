namespace Serving.Checkpoints.Hub;

/// <summary>Where a model setting led: the checkpoint folder, and the Hugging Face id it was resolved from (null for a path).</summary>
/// <param name="Directory">The checkpoint folder (a snapshot folder of the cache for an id).</param>
/// <param name="HubId">The model id, when the setting was one.</param>
public sealed record CheckpointLocation(string Directory, HubModelId? HubId);

/// <summary>
/// Turns a model setting (<c>--Node:ModelPath</c>, <c>tools/Generate</c>'s first argument) into a checkpoint folder. A path
/// that exists is always that path; only a value shaped <c>org/name</c> or <c>org/name@revision</c> that is not an existing
/// path is a Hugging Face model id, resolved in the local cache (<see cref="HubCache"/>). Anything else comes back
/// unchanged, for the caller's own "does not exist".
/// </summary>
public static class CheckpointLocator
{
    /// <summary>True when <paramref name="value"/> will be read as a model id: no file or folder by that name, and <c>org/name[@revision]</c> shaped.</summary>
    public static bool IsHubId(string value, out HubModelId id)
    {
        id = default;
        return !Path.Exists(value) && HubModelId.TryParse(value, out id);
    }

    /// <summary>
    /// The folder <paramref name="pathOrId"/> names. <paramref name="cache"/> defaults to <see cref="HubCache.FromEnvironment"/>;
    /// a model id missing there is a <see cref="HubModelNotFoundException"/>.
    /// </summary>
    public static CheckpointLocation Locate(string pathOrId, HubCache? cache = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrId);
        if (!IsHubId(pathOrId, out var id)) return new CheckpointLocation(pathOrId, null);
        return new CheckpointLocation((cache ?? HubCache.FromEnvironment()).Resolve(id), id);
    }
}
