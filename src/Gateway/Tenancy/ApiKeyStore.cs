using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.Gateway.Tenancy;

/// <summary>A verified key: who it belongs to and what it may do.</summary>
/// <param name="KeyId">Public id of the key (first 16 hex digits of its hash).</param>
/// <param name="Tenant">Tenant id (empty for admin keys).</param>
/// <param name="Role"><see cref="ApiKeyRoles"/>.</param>
/// <param name="Created">Creation time.</param>
public sealed record ApiKeyRecord(string KeyId, string Tenant, string Role, DateTimeOffset Created);

/// <summary>A tenant.</summary>
/// <param name="Id">Tenant id (<see cref="AdapterKeys.IsValidTenant"/>).</param>
/// <param name="DisplayName">Free text.</param>
/// <param name="Created">Creation time.</param>
public sealed record TenantRecord(string Id, string DisplayName, DateTimeOffset Created);

/// <summary>
/// Tenants and API keys in Redis. Keys are random 256-bit secrets, so an unsalted SHA-256 is enough to store them:
/// <c>{gw}:key:SHA256</c> HASH (key_id, tenant, role, created), <c>{gw}:keyid:ID</c> → sha256, <c>{gw}:tenant:ID</c> HASH,
/// <c>{gw}:tenants</c> SET, <c>{gw}:tenant:ID:keys</c> SET of key ids. The hash tag <c>{gw}</c> (the prefix) keeps them in
/// one Redis Cluster slot, so issuing a key stays one transaction there; they are few and cached.
/// </summary>
public sealed class ApiKeyStore
{
    private readonly IConnectionMultiplexer _redis;
    private readonly TenancyOptions _options;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, ApiKeyRecord> _static = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (ApiKeyRecord? Record, DateTimeOffset At)> _cache = new(StringComparer.Ordinal);

    /// <summary>Hashes the configured static keys into memory.</summary>
    public ApiKeyStore(IConnectionMultiplexer redis, IOptions<TenancyOptions> options, TimeProvider time)
    {
        _redis = redis;
        _options = options.Value;
        _time = time;
        foreach (var k in _options.StaticKeys)
        {
            string hash = Hash(k.Key);
            _static[hash] = new ApiKeyRecord(hash[..16], k.Role == ApiKeyRoles.Admin ? "" : k.Tenant, k.Role, DateTimeOffset.UnixEpoch);
        }
    }

    private const string What = "The key store (Redis)";

    private string P => "{" + _options.KeyPrefix + "}";

    /// <summary>Hex SHA-256 of a key.</summary>
    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    /// <summary>A new secret: <c>sk-</c> + 43 characters of base64url (256 bits).</summary>
    public static string NewSecret() => "sk-" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>
    /// The record of a key, null when unknown. Cached for <see cref="TenancyOptions.CacheTtl"/>; while Redis is unreachable
    /// a cached record is served however old, so running tenants keep working.
    /// </summary>
    public async Task<ApiKeyRecord?> VerifyAsync(string key, CancellationToken cancellationToken)
    {
        string hash = Hash(key);
        if (_static.TryGetValue(hash, out var s)) return s;
        var now = _time.GetUtcNow();
        if (_cache.TryGetValue(hash, out var c) && now - c.At < (c.Record is null ? TimeSpan.FromSeconds(1) : _options.CacheTtl)) return c.Record;
        try
        {
            var entries = await _redis.GetDatabase().HashGetAllAsync($"{P}:key:{hash}").WaitAsync(cancellationToken);
            ApiKeyRecord? record = entries.Length == 0 ? null : FromHash(entries);
            if (_cache.Count > 100_000) _cache.Clear();
            _cache[hash] = (record, now);
            return record;
        }
        catch (Exception e) when (RedisFailures.IsRedisFailure(e))
        {
            if (c.Record is not null) return c.Record;
            throw RedisFailures.Unavailable(What, e);
        }
    }

    /// <summary>Creates (or updates the name of) a tenant.</summary>
    public Task<TenantRecord> CreateTenantAsync(string id, string displayName, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => CreateTenantCoreAsync(id, displayName, cancellationToken));

    private async Task<TenantRecord> CreateTenantCoreAsync(string id, string displayName, CancellationToken cancellationToken)
    {
        var db = _redis.GetDatabase();
        var created = _time.GetUtcNow();
        await db.HashSetAsync($"{P}:tenant:{id}", [new("id", id), new("name", displayName), new("created", created.ToUnixTimeMilliseconds())]).WaitAsync(cancellationToken);
        await db.SetAddAsync($"{P}:tenants", id).WaitAsync(cancellationToken);
        return new TenantRecord(id, displayName, created);
    }

    /// <summary>A tenant, null when unknown.</summary>
    public Task<TenantRecord?> GetTenantAsync(string id, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => GetTenantCoreAsync(id, cancellationToken));

    private async Task<TenantRecord?> GetTenantCoreAsync(string id, CancellationToken cancellationToken)
    {
        var e = await _redis.GetDatabase().HashGetAllAsync($"{P}:tenant:{id}").WaitAsync(cancellationToken);
        if (e.Length == 0) return null;
        var d = e.ToDictionary(x => x.Name.ToString(), x => x.Value.ToString());
        return new TenantRecord(id, d.GetValueOrDefault("name", ""), DateTimeOffset.FromUnixTimeMilliseconds(long.Parse(d.GetValueOrDefault("created", "0"), CultureInfo.InvariantCulture)));
    }

    /// <summary>All tenants, by id.</summary>
    public Task<IReadOnlyList<TenantRecord>> ListTenantsAsync(CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => ListTenantsCoreAsync(cancellationToken));

    private async Task<IReadOnlyList<TenantRecord>> ListTenantsCoreAsync(CancellationToken cancellationToken)
    {
        var ids = await _redis.GetDatabase().SetMembersAsync($"{P}:tenants").WaitAsync(cancellationToken);
        var result = new List<TenantRecord>();
        foreach (var id in ids.Select(i => i.ToString()).Order(StringComparer.Ordinal))
        {
            if (await GetTenantCoreAsync(id, cancellationToken) is { } t) result.Add(t);
        }
        return result;
    }

    /// <summary>Issues a key; the secret is returned once and stored only as its hash.</summary>
    public Task<(string Secret, ApiKeyRecord Record)> CreateKeyAsync(string tenant, string role, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => CreateKeyCoreAsync(tenant, role, cancellationToken));

    private async Task<(string Secret, ApiKeyRecord Record)> CreateKeyCoreAsync(string tenant, string role, CancellationToken cancellationToken)
    {
        string secret = NewSecret(), hash = Hash(secret);
        var record = new ApiKeyRecord(hash[..16], tenant, role, _time.GetUtcNow());
        var db = _redis.GetDatabase();
        var tx = db.CreateTransaction();
        _ = tx.HashSetAsync($"{P}:key:{hash}", [new("key_id", record.KeyId), new("tenant", tenant), new("role", role), new("created", record.Created.ToUnixTimeMilliseconds())]);
        _ = tx.StringSetAsync($"{P}:keyid:{record.KeyId}", hash);
        _ = tx.SetAddAsync($"{P}:tenant:{tenant}:keys", record.KeyId);
        await tx.ExecuteAsync().WaitAsync(cancellationToken);
        return (secret, record);
    }

    /// <summary>Keys of a tenant (ids and metadata, never secrets).</summary>
    public Task<IReadOnlyList<ApiKeyRecord>> ListKeysAsync(string tenant, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => ListKeysCoreAsync(tenant, cancellationToken));

    private async Task<IReadOnlyList<ApiKeyRecord>> ListKeysCoreAsync(string tenant, CancellationToken cancellationToken)
    {
        var db = _redis.GetDatabase();
        var ids = await db.SetMembersAsync($"{P}:tenant:{tenant}:keys").WaitAsync(cancellationToken);
        var result = new List<ApiKeyRecord>();
        foreach (var id in ids)
        {
            var hash = await db.StringGetAsync($"{P}:keyid:{id}").WaitAsync(cancellationToken);
            if (hash.IsNullOrEmpty) continue;
            var e = await db.HashGetAllAsync($"{P}:key:{hash}").WaitAsync(cancellationToken);
            if (e.Length > 0) result.Add(FromHash(e));
        }
        return result.OrderBy(r => r.Created).ToList();
    }

    /// <summary>Revokes a key of a tenant; false when it does not exist there. Cached copies expire within the cache TTL.</summary>
    public Task<bool> RevokeKeyAsync(string tenant, string keyId, CancellationToken cancellationToken) =>
        RedisFailures.GuardAsync(What, () => RevokeKeyCoreAsync(tenant, keyId, cancellationToken));

    private async Task<bool> RevokeKeyCoreAsync(string tenant, string keyId, CancellationToken cancellationToken)
    {
        var db = _redis.GetDatabase();
        var hash = await db.StringGetAsync($"{P}:keyid:{keyId}").WaitAsync(cancellationToken);
        if (hash.IsNullOrEmpty || !await db.SetRemoveAsync($"{P}:tenant:{tenant}:keys", keyId).WaitAsync(cancellationToken)) return false;
        await db.KeyDeleteAsync([(RedisKey)$"{P}:key:{hash}", (RedisKey)$"{P}:keyid:{keyId}"]).WaitAsync(cancellationToken);
        _cache.TryRemove(hash.ToString(), out _);
        return true;
    }

    private static ApiKeyRecord FromHash(HashEntry[] entries)
    {
        var d = entries.ToDictionary(x => x.Name.ToString(), x => x.Value.ToString());
        return new ApiKeyRecord(d.GetValueOrDefault("key_id", ""), d.GetValueOrDefault("tenant", ""), d.GetValueOrDefault("role", ApiKeyRoles.Tenant),
            DateTimeOffset.FromUnixTimeMilliseconds(long.Parse(d.GetValueOrDefault("created", "0"), CultureInfo.InvariantCulture)));
    }
}
