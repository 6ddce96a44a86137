using System.Diagnostics;
using System.Globalization;
using Serving.AdapterStore.Storage;

namespace Serving.Tests.Shared;

/// <summary>
/// A real Redis Cluster on loopback: <c>primaries × (1 + replicas)</c> redis-server processes started with
/// <c>--cluster-enabled yes</c> (each with its own folder, port and cluster bus port), joined by
/// <c>redis-cli --cluster create</c>, each stopped by its pid. Waits are polls of the servers' own view of the cluster
/// with generous deadlines, never guesses of how long convergence takes. Linked into the projects that need one.
/// </summary>
public sealed class RedisCluster : IDisposable
{
    /// <summary>How long a node may be unreachable before the cluster fails it over (<c>cluster-node-timeout</c>).</summary>
    public static readonly TimeSpan DefaultNodeTimeout = TimeSpan.FromSeconds(1);

    /// <summary>Bound on every wait for the cluster to settle: far above what it needs, so only a real failure trips it.</summary>
    public static readonly TimeSpan SettleDeadline = TimeSpan.FromSeconds(60);

    private readonly List<Instance> _instances = [];
    private readonly string _root = Directory.CreateTempSubdirectory("redis-cluster-").FullName;
    private readonly string? _password;

    /// <summary>Starts the servers, creates the cluster and waits until every node agrees and every replica is in sync.</summary>
    /// <param name="primaries">Primaries (each gets a third of the slots for 3).</param>
    /// <param name="replicasPerPrimary">Replicas of each primary.</param>
    /// <param name="password">When set: <c>requirepass</c>/<c>masterauth</c> on every node (clients and redis-cli authenticate).</param>
    public RedisCluster(int primaries = 3, int replicasPerPrimary = 1, string? password = null)
    {
        _password = password;
        Primaries = primaries;
        ReplicasPerPrimary = replicasPerPrimary;
        try
        {
            for (int i = 0; i < primaries * (1 + replicasPerPrimary); i++) _instances.Add(Start(i));
            var create = new List<string> { "--cluster", "create" };
            create.AddRange(_instances.Select(x => $"127.0.0.1:{x.Port}"));
            create.AddRange(["--cluster-replicas", replicasPerPrimary.ToString(CultureInfo.InvariantCulture), "--cluster-yes"]);
            var (code, output) = Cli(null, [.. create]);
            if (code != 0) throw new InvalidOperationException($"redis-cli --cluster create failed ({code}): {output}");
            WaitUntil(() => IsSettled(expectReplicas: true), "the new cluster to agree on its slots and sync its replicas");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Number of primaries it was created with.</summary>
    public int Primaries { get; }

    /// <summary>Replicas per primary it was created with.</summary>
    public int ReplicasPerPrimary { get; }

    /// <summary>Ports of every server, dead or alive.</summary>
    public IReadOnlyList<int> Ports => _instances.Select(i => i.Port).ToList();

    /// <summary>Seed list of every server plus client settings that ride out a failover (no abort on connect failure, short timeouts).</summary>
    public string ConnectionString =>
        string.Join(",", _instances.Select(i => $"127.0.0.1:{i.Port}"))
        + ",abortConnect=false,connectTimeout=2000,syncTimeout=5000,asyncTimeout=5000"
        + (_password is null ? "" : $",password={_password}");

    /// <summary>SIGKILL of the server on <paramref name="port"/>, as a crash would.</summary>
    public void Kill(int port)
    {
        var instance = _instances.Single(i => i.Port == port);
        instance.Kill();
    }

    /// <summary>
    /// Replaces the killed server on <paramref name="port"/> by a new, empty one joined as a replica of the primary that
    /// lacks one (<c>redis-cli --cluster add-node --cluster-slave</c>), as an operator replaces a crashed pod that lost its
    /// data. Returns the new port once every primary serving slots has <see cref="ReplicasPerPrimary"/> replicas in sync.
    /// (Restarting the crashed server with its old <c>nodes.conf</c> but without its data is not the same: until the
    /// cluster demotes it, it answers for its old slots from an empty data set.)
    /// </summary>
    public int ReplaceWithNewReplica(int port)
    {
        if (_instances.Single(i => i.Port == port).Alive) throw new InvalidOperationException($"redis-server on :{port} is running.");
        int seed = _instances.First(i => i.Alive).Port;
        var view = View(seed);
        var orphan = view.First(n => n.IsPrimary && !n.Failed && n.Slots.Count > 0 && !view.Any(r => !r.IsPrimary && !r.Failed && r.PrimaryId == n.Id));
        var fresh = Start(_instances.Count);
        _instances.Add(fresh);
        var (code, output) = Cli(null, "--cluster", "add-node", $"127.0.0.1:{fresh.Port}", $"127.0.0.1:{seed}", "--cluster-slave", "--cluster-master-id", orphan.Id);
        if (code != 0) throw new InvalidOperationException($"redis-cli --cluster add-node failed ({code}): {output}");
        WaitUntil(() => IsSettled(expectReplicas: true), $"the new replica :{fresh.Port} to sync");
        return fresh.Port;
    }

    /// <summary>The port of the primary serving <paramref name="slot"/>, as a live node sees it.</summary>
    public int PrimaryPortOfSlot(int slot)
    {
        var view = View(_instances.First(i => i.Alive).Port);
        return view.Single(n => n.IsPrimary && !n.Failed && n.Slots.Any(r => slot >= r.From && slot <= r.To)).Port;
    }

    /// <summary>Ports of the live primaries that serve slots, each with the slot ranges it serves.</summary>
    public IReadOnlyList<(int Port, IReadOnlyList<(int From, int To)> Slots)> PrimariesWithSlots()
    {
        var view = View(_instances.First(i => i.Alive).Port);
        return view.Where(n => n.IsPrimary && !n.Failed && n.Slots.Count > 0).Select(n => (n.Port, (IReadOnlyList<(int, int)>)n.Slots)).ToList();
    }

    /// <summary>
    /// Waits until every live node reports <c>cluster_state:ok</c>, every slot is served by a live primary, all live
    /// nodes agree on who serves what, and no live node is still counted as a primary of a dead one (after a kill:
    /// the dead primary's replica has taken over).
    /// </summary>
    public void WaitSettled() => WaitUntil(() => IsSettled(expectReplicas: false), "the cluster to settle");

    /// <summary><c>INFO</c> field of one server (e.g. <c>used_memory</c>), as text.</summary>
    public string Info(int port, string section, string field)
    {
        var (_, output) = Cli(port, "INFO", section);
        foreach (var line in output.Split('\n'))
        {
            var l = line.TrimEnd('\r');
            if (l.StartsWith(field + ":", StringComparison.Ordinal)) return l[(field.Length + 1)..];
        }
        throw new InvalidOperationException($"INFO {section} of :{port} has no {field}.");
    }

    /// <summary>Keys held by one server (<c>DBSIZE</c>).</summary>
    public long KeyCount(int port) => long.Parse(Cli(port, "DBSIZE").Output.Trim(), CultureInfo.InvariantCulture);

    private bool IsSettled(bool expectReplicas)
    {
        var live = _instances.Where(i => i.Alive).ToList();
        Dictionary<int, (int Port, int To)>? agreed = null;
        foreach (var instance in live)
        {
            var (code, info) = Cli(instance.Port, "CLUSTER", "INFO");
            if (code != 0 || !info.Contains("cluster_state:ok", StringComparison.Ordinal)) return false;
            var view = View(instance.Port);
            var owners = new Dictionary<int, (int Port, int To)>(); // first slot of a range → its primary and last slot
            foreach (var n in view.Where(n => n.IsPrimary && n.Slots.Count > 0))
            {
                if (n.Failed || !live.Any(i => i.Port == n.Port)) return false;
                foreach (var (from, to) in n.Slots) owners[from] = (n.Port, to);
            }
            if (owners.Sum(o => o.Value.To - o.Key + 1) != 16384) return false;
            if (agreed is null) agreed = owners;
            else if (!agreed.OrderBy(o => o.Key).SequenceEqual(owners.OrderBy(o => o.Key))) return false;
            if (expectReplicas && view.Count(n => !n.IsPrimary && !n.Failed) != Primaries * ReplicasPerPrimary) return false;
        }
        if (!expectReplicas) return true;
        // Replicas must hold the data before a test relies on them (WAIT counts only replicas in sync).
        foreach (var (port, _) in PrimariesWithSlots())
        {
            var (_, replication) = Cli(port, "INFO", "replication");
            int online = replication.Split('\n').Count(l => l.StartsWith("slave", StringComparison.Ordinal) && l.Contains("state=online", StringComparison.Ordinal));
            if (online < ReplicasPerPrimary) return false;
        }
        return true;
    }

    private sealed record NodeView(string Id, int Port, bool IsPrimary, bool Failed, string PrimaryId, IReadOnlyList<(int From, int To)> Slots);

    /// <summary><c>CLUSTER NODES</c> as one node sees it.</summary>
    private List<NodeView> View(int port)
    {
        var (code, output) = Cli(port, "CLUSTER", "NODES");
        if (code != 0) throw new InvalidOperationException($"CLUSTER NODES on :{port} failed: {output}");
        var nodes = new List<NodeView>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var f = line.Split(' ');
            if (f.Length < 8) continue;
            var address = f[1].Split('@')[0];
            int p = int.Parse(address[(address.LastIndexOf(':') + 1)..], CultureInfo.InvariantCulture);
            var flags = f[2].Split(',');
            var slots = new List<(int, int)>();
            foreach (var s in f.Skip(8))
            {
                if (s.StartsWith('[')) continue; // a slot being migrated or imported
                var parts = s.Split('-');
                int from = int.Parse(parts[0], CultureInfo.InvariantCulture);
                slots.Add((from, parts.Length > 1 ? int.Parse(parts[1], CultureInfo.InvariantCulture) : from));
            }
            nodes.Add(new NodeView(f[0], p, flags.Contains("master"), flags.Contains("fail") || flags.Contains("fail?") || flags.Contains("noaddr"), f[3], slots));
        }
        return nodes;
    }

    private static void WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > SettleDeadline) throw new TimeoutException($"Timed out after {SettleDeadline.TotalSeconds:F0} s waiting for {what}.");
            Thread.Sleep(50); // a poll interval, not a guess of how long the cluster needs
        }
    }

    private (int Code, string Output) Cli(int? port, params string[] args)
    {
        var psi = new ProcessStartInfo("redis-cli") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (port is { } p)
        {
            psi.ArgumentList.Add("-p");
            psi.ArgumentList.Add(p.ToString(CultureInfo.InvariantCulture));
        }
        if (_password is not null)
        {
            psi.ArgumentList.Add("-a");
            psi.ArgumentList.Add(_password);
            psi.ArgumentList.Add("--no-auth-warning");
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("redis-cli did not start (apt-get install -y redis-tools).");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill();
            throw new TimeoutException($"redis-cli {string.Join(' ', args)} did not finish.");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    /// <summary>
    /// Starts a server on two free ports (client and cluster bus). A port found free can be taken by another process
    /// before redis-server binds it (test assemblies run side by side and start servers of their own): a server that
    /// exits before answering is started again on new ports, a few times.
    /// </summary>
    private Instance Start(int index)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return Start(index, EmbeddedGarnet.FreePort(), EmbeddedGarnet.FreePort());
            }
            catch (ServerExitedException) when (attempt < 5)
            {
                File.Delete(Path.Combine(_root, index.ToString(CultureInfo.InvariantCulture), "nodes.conf"));
            }
        }
    }

    private sealed class ServerExitedException(string message) : InvalidOperationException(message);

    private Instance Start(int index, int port, int bus)
    {
        string dir = Directory.CreateDirectory(Path.Combine(_root, index.ToString(CultureInfo.InvariantCulture))).FullName;
        var psi = new ProcessStartInfo("redis-server") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = dir };
        var args = new List<string>
        {
            "--port", port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--dir", dir,
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", bus.ToString(CultureInfo.InvariantCulture),
            "--cluster-node-timeout", ((int)DefaultNodeTimeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture),
            // A replica may take over however long its link was down (a loaded CI machine can starve it).
            "--cluster-replica-validity-factor", "0",
            "--save", "", "--appendonly", "no",
        };
        if (_password is not null) args.AddRange(["--requirepass", _password, "--masterauth", _password]);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("redis-server did not start (apt-get install -y redis-server).");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var instance = new Instance(port, bus, process);
        try
        {
            WaitUntil(() => process.HasExited ? throw new ServerExitedException($"redis-server on :{port} (bus :{bus}) exited ({process.ExitCode}).") : Cli(port, "PING").Output.Contains("PONG", StringComparison.Ordinal),
                $"redis-server on :{port} to answer");
        }
        catch (ServerExitedException)
        {
            process.Dispose();
            throw;
        }
        return instance;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var i in _instances) i.Kill();
        foreach (var i in _instances) i.Process.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }

    private sealed class Instance(int port, int busPort, Process process)
    {
        public int Port { get; } = port;
        public int BusPort { get; } = busPort;
        public Process Process { get; } = process;
        public bool Alive => !Process.HasExited;

        public void Kill()
        {
            if (Process.HasExited) return;
            Process.Kill();
            Process.WaitForExit();
        }
    }
}
