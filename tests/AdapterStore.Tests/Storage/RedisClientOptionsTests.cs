using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Serving.AdapterStore.Storage;
using StackExchange.Redis;

namespace Serving.AdapterStore.Tests.Storage;

/// <summary>
/// <see cref="RedisClientOptions"/> against real redis-server processes: an ACL user with a password, and TLS with a
/// private CA and client certificates (<c>tls-auth-clients yes</c>). Certificates are made here, per test class.
/// </summary>
public sealed class RedisClientOptionsTests : IDisposable
{
    private static readonly CancellationToken Ct = CancellationToken.None;
    private readonly string _dir = Directory.CreateTempSubdirectory("redis-tls-").FullName;
    private readonly List<Process> _servers = [];

    public void Dispose()
    {
        foreach (var p in _servers)
        {
            if (!p.HasExited)
            {
                p.Kill();
                p.WaitForExit();
            }
            p.Dispose();
        }
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task Acl_UserAndPassword_StoreWorksWithThemAndIsRefusedWithout()
    {
        int port = StartServer("--port", "{port}", "--user", "default", "off", "--user", "serving", "on", ">s3cret", "~adp:*", "&*", "+@all");
        var good = new RedisClientOptions { User = "serving", Password = "s3cret" };
        await using (var redis = await ConnectionMultiplexer.ConnectAsync(good.ToConfiguration($"127.0.0.1:{port}")))
        {
            await PublishAndReadAsync(redis);
        }
        // No credentials (the default user is off) and a wrong password: the connection is refused at the handshake.
        await Assert.ThrowsAsync<RedisConnectionException>(() => ConnectionMultiplexer.ConnectAsync(new RedisClientOptions().ToConfiguration($"127.0.0.1:{port},connectTimeout=2000,connectRetry=1")));
        var wrong = new RedisClientOptions { User = "serving", Password = "nope" };
        var e = await Assert.ThrowsAsync<RedisConnectionException>(() => ConnectionMultiplexer.ConnectAsync(wrong.ToConfiguration($"127.0.0.1:{port},connectTimeout=2000,connectRetry=1")));
        Assert.Equal(ConnectionFailureType.AuthenticationFailure, e.FailureType);
    }

    [Fact]
    public async Task Tls_PrivateCaAndClientCertificate_StoreWorks_WithoutEitherRefused()
    {
        var pki = MakePki();
        int port = StartServer("--port", "0", "--tls-port", "{port}", "--tls-cert-file", pki.ServerCert, "--tls-key-file", pki.ServerKey,
            "--tls-ca-cert-file", pki.CaCert, "--tls-auth-clients", "yes");
        var tls = new RedisClientOptions { Tls = true, TlsCaFile = pki.CaCert, TlsClientCertificateFile = pki.ClientCert, TlsClientKeyFile = pki.ClientKey, TlsServerName = "localhost" };
        Assert.False(new RedisClientOptionsValidator().Validate(null, tls).Failed);
        await using (var redis = await ConnectionMultiplexer.ConnectAsync(tls.ToConfiguration($"127.0.0.1:{port}")))
        {
            await PublishAndReadAsync(redis);
        }
        // The server's certificate is signed by a CA the machine does not trust: refused without TlsCaFile.
        var untrusted = new RedisClientOptions { Tls = true, TlsClientCertificateFile = pki.ClientCert, TlsClientKeyFile = pki.ClientKey, TlsServerName = "localhost" };
        await Assert.ThrowsAsync<RedisConnectionException>(() => ConnectionMultiplexer.ConnectAsync(untrusted.ToConfiguration($"127.0.0.1:{port},connectTimeout=2000,connectRetry=1")));
        // The server checks clients: refused without a client certificate.
        var anonymous = new RedisClientOptions { Tls = true, TlsCaFile = pki.CaCert, TlsServerName = "localhost" };
        await Assert.ThrowsAsync<RedisConnectionException>(() => ConnectionMultiplexer.ConnectAsync(anonymous.ToConfiguration($"127.0.0.1:{port},connectTimeout=2000,connectRetry=1")));
        // Plain TCP to the TLS port gets nowhere either.
        await Assert.ThrowsAsync<RedisConnectionException>(() => ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{port},connectTimeout=2000,connectRetry=1"));
    }

    [Fact]
    public void Validate_TlsFilesWithoutTlsOrUnpairedOrMissing_NamesEachProblem()
    {
        var v = new RedisClientOptionsValidator();
        string existing = Path.Combine(_dir, "ca.pem");
        File.WriteAllText(existing, "x");
        var noTls = v.Validate(null, new RedisClientOptions { TlsCaFile = existing });
        Assert.Contains(noTls.Failures!, f => f.Contains("Redis:Tls=true", StringComparison.Ordinal));
        var unpaired = v.Validate(null, new RedisClientOptions { Tls = true, TlsClientCertificateFile = existing });
        Assert.Contains(unpaired.Failures!, f => f.Contains("set together", StringComparison.Ordinal));
        var missing = v.Validate(null, new RedisClientOptions { Tls = true, TlsCaFile = Path.Combine(_dir, "absent.pem") });
        Assert.Contains(missing.Failures!, f => f.Contains("does not exist", StringComparison.Ordinal));
        Assert.False(v.Validate(null, new RedisClientOptions { User = "u", Password = "p" }).Failed);
    }

    [Fact]
    public void ToConfiguration_AppliesCredentialsAndKeepsTheRestOfTheString()
    {
        var config = new RedisClientOptions { User = "u", Password = "p", Tls = true, TlsServerName = "redis.internal" }
            .ToConfiguration("10.0.0.1:6379,10.0.0.2:6379,abortConnect=false,connectTimeout=1234");
        Assert.Equal("u", config.User);
        Assert.Equal("p", config.Password);
        Assert.True(config.Ssl);
        Assert.Equal("redis.internal", config.SslHost);
        Assert.Equal(2, config.EndPoints.Count);
        Assert.False(config.AbortOnConnectFail);
        Assert.Equal(1234, config.ConnectTimeout);
    }

    private static async Task PublishAndReadAsync(IConnectionMultiplexer redis)
    {
        var store = new RedisAdapterStore(redis, new AdapterStoreOptions { ChunkBytes = 4096 });
        var bytes = AdapterStoreContractTests.Container(5);
        var draft = new AdapterMetadata { Tenant = "secure", Name = "a", BaseModel = "b", Checksum = "" };
        var meta = await store.PublishAsync(draft, bytes, null, Ct);
        Assert.Equal(bytes, (await store.ReadAsync("secure", "a", meta.Version, Ct))!.Container);
    }

    /// <summary>Starts redis-server with <paramref name="args"/> ("{port}" replaced by a free port); returns once the port accepts TCP.</summary>
    private int StartServer(params string[] args)
    {
        int port = EmbeddedGarnet.FreePort();
        var psi = new ProcessStartInfo("redis-server") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args.Concat(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", _dir])) psi.ArgumentList.Add(a.Replace("{port}", port.ToString(), StringComparison.Ordinal));
        var p = Process.Start(psi) ?? throw new InvalidOperationException("redis-server did not start.");
        _servers.Add(p);
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (p.HasExited) Assert.Fail($"redis-server exited ({p.ExitCode}) with: {string.Join(' ', psi.ArgumentList)}");
            try
            {
                using var tcp = new TcpClient();
                tcp.Connect(IPAddress.Loopback, port);
                return port;
            }
            catch (SocketException) when (clock.Elapsed < TimeSpan.FromSeconds(20))
            {
                Thread.Sleep(20);
            }
        }
    }

    private sealed record Pki(string CaCert, string ServerCert, string ServerKey, string ClientCert, string ClientKey);

    /// <summary>A private CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.</summary>
    private Pki MakePki()
    {
        var now = DateTimeOffset.UtcNow;
        using var caKey = RSA.Create(2048);
        var caRequest = new CertificateRequest("CN=serving-test-ca", caKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        using var ca = caRequest.CreateSelfSigned(now.AddDays(-1), now.AddDays(1));
        string Write(string name, string pem)
        {
            string path = Path.Combine(_dir, name);
            File.WriteAllText(path, pem);
            return path;
        }
        (string Cert, string Key) Issue(string name, string eku, byte serial)
        {
            using var key = RSA.Create(2048);
            var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            var san = new SubjectAlternativeNameBuilder();
            san.AddDnsName("localhost");
            san.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(san.Build());
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(eku)], false));
            using var cert = request.Create(ca, now.AddDays(-1), now.AddDays(1), [serial]);
            return (Write($"{name}.crt", cert.ExportCertificatePem()), Write($"{name}.key", key.ExportPkcs8PrivateKeyPem()));
        }
        string caPath = Write("ca.crt", ca.ExportCertificatePem());
        var server = Issue("server", "1.3.6.1.5.5.7.3.1", 1);
        var client = Issue("client", "1.3.6.1.5.5.7.3.2", 2);
        return new Pki(caPath, server.Cert, server.Key, client.Cert, client.Key);
    }
}
