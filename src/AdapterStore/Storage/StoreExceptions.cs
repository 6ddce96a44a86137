using StackExchange.Redis;

namespace Serving.AdapterStore.Storage;

/// <summary>A stored payload failed verification (checksum, missing chunk, bad metadata); the message says which part.</summary>
public sealed class StoreCorruptException(string message) : Exception(message);

/// <summary>
/// The store's backend (Redis, Garnet) could not be reached or did not answer in time. Nothing a reader can see was
/// changed; the caller may retry. Every Redis-backed component (adapter store, node registry, API keys, heartbeats)
/// throws this instead of the client's own exceptions, so callers never name the backend.
/// </summary>
public sealed class StoreUnavailableException(string message, Exception? innerException = null) : Exception(message, innerException);

/// <summary>The one place where failures of the Redis client are recognised and turned into <see cref="StoreUnavailableException"/>.</summary>
public static class RedisFailures
{
    /// <summary>
    /// True for the client's failures: <see cref="RedisException"/> (connection, server error) and
    /// <see cref="RedisTimeoutException"/> (which derives from <see cref="TimeoutException"/>, not from RedisException).
    /// </summary>
    public static bool IsRedisFailure(Exception e) => e is RedisException or RedisTimeoutException;

    /// <summary>The project's exception for a failure of <paramref name="what"/>.</summary>
    public static StoreUnavailableException Unavailable(string what, Exception e) => new($"{what} is unreachable: {e.Message}", e);

    /// <summary>Runs a Redis call, turning the client's failures into <see cref="StoreUnavailableException"/>.</summary>
    public static async Task<T> GuardAsync<T>(string what, Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (Exception e) when (IsRedisFailure(e))
        {
            throw Unavailable(what, e);
        }
    }

    /// <summary>Runs a Redis call, turning the client's failures into <see cref="StoreUnavailableException"/>.</summary>
    public static async Task GuardAsync(string what, Func<Task> call)
    {
        try
        {
            await call().ConfigureAwait(false);
        }
        catch (Exception e) when (IsRedisFailure(e))
        {
            throw Unavailable(what, e);
        }
    }
}
