namespace Serving.AdapterStore.Storage;

/// <summary>
/// The Lua scripts that make a publish and a delete atomic (<see cref="RedisAdapterStore"/>; key layout in
/// <see cref="ArtifactKeys"/>). Every key a script touches belongs to one artifact and so to one cluster slot; the
/// tenant's index, in another slot, is written around them (<see cref="RedisArtifactStorage{TMeta}"/>).
/// </summary>
internal static class AdapterScripts
{
    // KEYS: 1 meta, 2 versions, 3 cur, 4.. chunk keys. ARGV: 1 chunk-key count, 2 version, 3.. meta field/value pairs.
    // Every staged chunk must still exist (a crash or an expired TTL aborts the commit), then chunks become permanent,
    // the metadata appears, and the pointer moves forward only (a slower concurrent upload never moves it back).
    public const string Commit = """
        local n = tonumber(ARGV[1])
        for i = 4, 3 + n do
          if redis.call('EXISTS', KEYS[i]) == 0 then
            return redis.error_reply('MISSING_CHUNK ' .. KEYS[i])
          end
        end
        for i = 4, 3 + n do
          redis.call('PERSIST', KEYS[i])
        end
        for i = 3, #ARGV, 2 do
          redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
        end
        local ver = tonumber(ARGV[2])
        redis.call('ZADD', KEYS[2], ver, ARGV[2])
        local cur = tonumber(redis.call('GET', KEYS[3]) or '0')
        if ver > cur then
          redis.call('SET', KEYS[3], ARGV[2])
          cur = ver
        end
        return cur
        """;

    // KEYS: 1 meta, 2 versions, 3 cur, 4.. chunk keys. ARGV: 1 version.
    // Returns the current version after the delete (0 when none is left), or -1 when the version did not exist.
    public const string Delete = """
        local existed = redis.call('ZREM', KEYS[2], ARGV[1])
        for i = 4, #KEYS do
          redis.call('DEL', KEYS[i])
        end
        redis.call('DEL', KEYS[1])
        local cur = redis.call('GET', KEYS[3])
        if cur == ARGV[1] then
          local top = redis.call('ZRANGE', KEYS[2], -1, -1)
          if #top > 0 then
            redis.call('SET', KEYS[3], top[1])
            cur = top[1]
          else
            redis.call('DEL', KEYS[3])
            cur = '0'
          end
        end
        if existed == 0 then
          return -1
        end
        return tonumber(cur or '0')
        """;
}
