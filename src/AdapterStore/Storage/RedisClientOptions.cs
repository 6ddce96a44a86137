using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace Serving.AdapterStore.Storage;

/// <summary>
/// Credentials and TLS of every Redis connection a service opens (adapter store, reward heads, node registry, API
/// keys), bound from the <c>Redis</c> section next to the connection string each service already has. Kept apart from
/// the connection string so a Kubernetes Secret can set <c>Redis__Password</c> while the address sits in a ConfigMap.
/// </summary>
public sealed class RedisClientOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Redis";

    /// <summary>ACL user (Redis 6+, <c>AUTH user password</c>); empty: the default user (<c>requirepass</c>).</summary>
    public string? User { get; set; }

    /// <summary>Password of <see cref="User"/> (or of <c>requirepass</c>); never logged.</summary>
    public string? Password { get; set; }

    /// <summary>Connect over TLS (a managed Redis, or redis-server with <c>tls-port</c>); default false.</summary>
    public bool Tls { get; set; }

    /// <summary>PEM file of the CA that signed the servers' certificates, trusted in addition to the system store (a private CA).</summary>
    public string? TlsCaFile { get; set; }

    /// <summary>PEM client certificate presented to servers that check clients (<c>tls-auth-clients yes</c>); with <see cref="TlsClientKeyFile"/>.</summary>
    public string? TlsClientCertificateFile { get; set; }

    /// <summary>PEM private key of <see cref="TlsClientCertificateFile"/>.</summary>
    public string? TlsClientKeyFile { get; set; }

    /// <summary>Name the server certificate must carry, when it differs from the host in the connection string.</summary>
    public string? TlsServerName { get; set; }

    /// <summary>
    /// The client configuration for <paramref name="connectionString"/> (StackExchange.Redis syntax, e.g.
    /// <c>redis-0:6379,redis-1:6379</c>) with these credentials and TLS settings applied; settings already in the
    /// string stay unless set here.
    /// </summary>
    public ConfigurationOptions ToConfiguration(string connectionString)
    {
        var config = ConfigurationOptions.Parse(connectionString);
        if (!string.IsNullOrEmpty(User)) config.User = User;
        if (!string.IsNullOrEmpty(Password)) config.Password = Password;
        if (Tls) config.Ssl = true;
        if (!string.IsNullOrEmpty(TlsServerName)) config.SslHost = TlsServerName;
        if (!string.IsNullOrEmpty(TlsCaFile)) config.TrustIssuer(TlsCaFile);
        if (!string.IsNullOrEmpty(TlsClientCertificateFile)) config.SetUserPemCertificate(TlsClientCertificateFile, TlsClientKeyFile);
        return config;
    }
}

/// <summary>Checks <see cref="RedisClientOptions"/> at start: TLS files exist and come in pairs, TLS settings only with TLS on.</summary>
public sealed class RedisClientOptionsValidator : IValidateOptions<RedisClientOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, RedisClientOptions o)
    {
        var errors = new List<string>();
        const string S = RedisClientOptions.SectionName;
        bool anyTlsFile = !string.IsNullOrEmpty(o.TlsCaFile) || !string.IsNullOrEmpty(o.TlsClientCertificateFile) || !string.IsNullOrEmpty(o.TlsClientKeyFile);
        if (anyTlsFile && !o.Tls) errors.Add($"{S}:TlsCaFile and {S}:TlsClientCertificateFile/TlsClientKeyFile need {S}:Tls=true.");
        if (string.IsNullOrEmpty(o.TlsClientCertificateFile) != string.IsNullOrEmpty(o.TlsClientKeyFile))
            errors.Add($"{S}:TlsClientCertificateFile and {S}:TlsClientKeyFile are set together.");
        foreach (var (key, path) in new[] { ("TlsCaFile", o.TlsCaFile), ("TlsClientCertificateFile", o.TlsClientCertificateFile), ("TlsClientKeyFile", o.TlsClientKeyFile) })
        {
            if (!string.IsNullOrEmpty(path) && !File.Exists(path)) errors.Add($"{S}:{key} '{path}' does not exist.");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
