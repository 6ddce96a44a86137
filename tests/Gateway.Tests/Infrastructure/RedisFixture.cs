using Serving.Tests.Shared;

namespace Serving.Gateway.Tests.Infrastructure;

/// <summary>One redis-server shared by the tests of a collection; each test uses its own key prefixes.</summary>
public sealed class RedisFixture : IDisposable
{
    public RedisServer Server { get; } = new();

    public string ConnectionString => Server.ConnectionString;

    public void Dispose() => Server.Dispose();
}

[CollectionDefinition(Name)]
public sealed class RedisCollection : ICollectionFixture<RedisFixture>
{
    public const string Name = "redis";
}
