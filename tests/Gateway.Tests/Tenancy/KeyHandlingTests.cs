using System.Net;
using System.Net.Http.Json;
using System.Reflection;
using System.Security.Cryptography;
using System.Text.Json;
using Serving.Contracts.Security;
using Serving.Gateway.Tenancy;
using Serving.Gateway.Tests.Infrastructure;
using StackExchange.Redis;

namespace Serving.Gateway.Tests.Tenancy;

/// <summary>
/// How secrets are compared and kept: the gateway's credential to nodes is compared in constant time, tenant keys are
/// looked up by their SHA-256 (never compared as text), and only that hash reaches Redis. The comparisons are checked
/// in the methods' IL, so a rewrite to <c>==</c> fails here even though it would still answer correctly.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class KeyHandlingTests(RedisFixture redis)
{
    private static readonly MethodInfo FixedTimeEquals = typeof(CryptographicOperations).GetMethod(
        nameof(CryptographicOperations.FixedTimeEquals), [typeof(ReadOnlySpan<byte>), typeof(ReadOnlySpan<byte>)])!;

    [Fact]
    public void GatewayCredential_Matches_ComparesInConstantTimeAndExactly()
    {
        var method = typeof(GatewayCredential).GetMethod(nameof(GatewayCredential.Matches))!;
        var calls = CalledMethods(method);
        Assert.Contains(FixedTimeEquals, calls);
        Assert.DoesNotContain(calls, IsTextComparison);

        const string key = "0123456789abcdef-node-key";
        Assert.True(GatewayCredential.Matches(key, key));
        Assert.False(GatewayCredential.Matches(key[..^1], key));
        Assert.False(GatewayCredential.Matches(key + "x", key));
        Assert.False(GatewayCredential.Matches(key.ToUpperInvariant(), key));
        Assert.False(GatewayCredential.Matches(null, key));
    }

    [Fact]
    public void ApiKeyStore_Verify_LooksUpTheKeysHashAndComparesNoText()
    {
        // An async method's body is its state machine's MoveNext.
        var machine = typeof(ApiKeyStore).GetMethod(nameof(ApiKeyStore.VerifyAsync))!.GetCustomAttribute<System.Runtime.CompilerServices.AsyncStateMachineAttribute>()!.StateMachineType;
        var calls = CalledMethods(machine.GetMethod("MoveNext", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public)!);
        Assert.Contains(typeof(ApiKeyStore).GetMethod(nameof(ApiKeyStore.Hash))!, calls);
        Assert.DoesNotContain(calls, IsTextComparison);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("sk-abc"u8)), ApiKeyStore.Hash("sk-abc"));
    }

    [Fact]
    public async Task IssuedKey_AtRest_OnlyItsSha256IsInRedis()
    {
        await using var gw = await GatewayHost.StartAsync(redis.ConnectionString, new() { ["Gateway:Tenancy:CacheTtl"] = "00:00:00" });
        using var admin = gw.Client(GatewayHost.AdminKey);
        Assert.Equal(HttpStatusCode.Created, (await admin.PostAsJsonAsync("/admin/tenants", new { id = "vault", name = "Vault" })).StatusCode);
        var issued = await (await admin.PostAsync("/admin/tenants/vault/keys", null)).Content.ReadFromJsonAsync<JsonElement>();
        string key = issued.GetProperty("key").GetString()!;
        using (var client = gw.Client(key)) Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/models")).StatusCode);

        await using var mux = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var db = mux.GetDatabase();
        var server = mux.GetServers().Single();
        var everything = new List<string>();
        await foreach (var k in server.KeysAsync(pattern: "*" + gw.Prefix + "*"))
        {
            everything.Add(k.ToString());
            switch (await db.KeyTypeAsync(k))
            {
                case RedisType.String: everything.Add((await db.StringGetAsync(k)).ToString()); break;
                case RedisType.Hash: everything.AddRange((await db.HashGetAllAsync(k)).SelectMany(e => new[] { e.Name.ToString(), e.Value.ToString() })); break;
                case RedisType.Set: everything.AddRange((await db.SetMembersAsync(k)).Select(v => v.ToString())); break;
                case RedisType.List: everything.AddRange((await db.ListRangeAsync(k)).Select(v => v.ToString())); break;
                case RedisType.SortedSet: everything.AddRange((await db.SortedSetRangeByRankAsync(k)).Select(v => v.ToString())); break;
            }
        }
        string hash = ApiKeyStore.Hash(key);
        Assert.Contains(everything, s => s.Contains(hash, StringComparison.Ordinal));
        Assert.DoesNotContain(everything, s => s.Contains(key, StringComparison.Ordinal) || s.Contains(key["sk-".Length..], StringComparison.Ordinal));
    }

    private static bool IsTextComparison(MethodBase m) =>
        (m.DeclaringType == typeof(string) && m.Name is "Equals" or "op_Equality" or "op_Inequality" or "Compare" or "CompareOrdinal" or "StartsWith")
        || (m.DeclaringType == typeof(MemoryExtensions) && m.Name is "SequenceEqual" or "Equals");

    /// <summary>The methods a method body calls (call, callvirt, newobj), read from its IL.</summary>
    private static List<MethodBase> CalledMethods(MethodInfo method)
    {
        var il = method.GetMethodBody()!.GetILAsByteArray()!;
        var module = method.Module;
        var found = new List<MethodBase>();
        for (var i = 0; i + 4 < il.Length; i++)
        {
            if (il[i] is not (0x28 or 0x6F or 0x73)) continue;
            int token = BitConverter.ToInt32(il, i + 1);
            if ((token >>> 24) is not (0x06 or 0x0A or 0x2B)) continue;
            try
            {
                var m = module.ResolveMethod(token, method.DeclaringType!.GetGenericArguments(), null);
                if (m is not null) found.Add(m is MethodInfo { IsGenericMethod: true } g ? g.GetGenericMethodDefinition() : m);
            }
            catch (ArgumentException)
            {
                // Not a token: an operand byte that happened to look like a call opcode.
            }
        }
        return found;
    }
}
