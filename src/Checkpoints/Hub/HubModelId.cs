namespace Serving.Checkpoints.Hub;

/// <summary>
/// A Hugging Face model id as <c>transformers</c> takes it, with an optional revision: <c>org/name</c> or
/// <c>org/name@revision</c> (a branch, a tag or a commit hash; <c>main</c> when absent). The repo part follows the Hub's
/// rules (<c>huggingface_hub.validate_repo_id</c>): letters, digits, <c>_</c>, <c>-</c>, <c>.</c>, starting and ending
/// with a letter, digit or <c>_</c>, no <c>--</c> or <c>..</c>, at most 96 characters.
/// </summary>
/// <param name="Repo"><c>org/name</c>.</param>
/// <param name="Revision">The revision asked for, null for the default branch.</param>
public readonly record struct HubModelId(string Repo, string? Revision)
{
    /// <summary>The branch a model id without a revision means.</summary>
    public const string DefaultRevision = "main";

    /// <summary>Longest repo id the Hub accepts.</summary>
    public const int MaxRepoLength = 96;

    /// <summary>The revision to resolve: <see cref="Revision"/> or <see cref="DefaultRevision"/>.</summary>
    public string EffectiveRevision => Revision ?? DefaultRevision;

    /// <summary>The repo's folder in the cache: <c>models--org--name</c>.</summary>
    public string CacheFolderName => "models--" + Repo.Replace("/", "--", StringComparison.Ordinal);

    /// <summary>
    /// Parses <c>org/name</c> or <c>org/name@revision</c>; false for anything else (a path such as <c>./a/b</c>,
    /// <c>/abs/path</c> or <c>a/b/c</c>, a bare name, an empty revision).
    /// </summary>
    public static bool TryParse(string? text, out HubModelId id)
    {
        id = default;
        if (string.IsNullOrEmpty(text)) return false;
        var at = text.IndexOf('@', StringComparison.Ordinal);
        var repo = at < 0 ? text : text[..at];
        string? revision = at < 0 ? null : text[(at + 1)..];
        if (repo.Length > MaxRepoLength) return false;
        var slash = repo.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0 || !IsRepoPart(repo.AsSpan(0, slash)) || !IsRepoPart(repo.AsSpan(slash + 1))) return false;
        if (revision is not null && !IsRevision(revision)) return false;
        id = new HubModelId(repo, revision);
        return true;
    }

    /// <inheritdoc />
    public override string ToString() => Revision is null ? Repo : $"{Repo}@{Revision}";

    private static bool IsRepoPart(ReadOnlySpan<char> part)
    {
        if (part.IsEmpty || !IsWord(part[0]) || !IsWord(part[^1])) return false;
        if (part.Contains("--", StringComparison.Ordinal) || part.Contains("..", StringComparison.Ordinal)) return false;
        foreach (var c in part)
        {
            if (!IsWord(c) && c is not ('-' or '.')) return false;
        }
        return true;
    }

    /// <summary>A branch, tag or commit: a relative name under <c>refs/</c> that cannot climb out of it.</summary>
    private static bool IsRevision(string revision)
    {
        if (revision.Length is 0 or > 255 || revision[0] == '/' || revision[^1] == '/') return false;
        if (revision.Contains("..", StringComparison.Ordinal) || revision.Contains("//", StringComparison.Ordinal)) return false;
        foreach (var c in revision)
        {
            if (!IsWord(c) && c is not ('-' or '.' or '/')) return false;
        }
        return true;
    }

    private static bool IsWord(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';
}
