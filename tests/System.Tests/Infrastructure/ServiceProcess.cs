using System.Collections.Concurrent;
using System.Diagnostics;

namespace Serving.System.Tests.Infrastructure;

/// <summary>A built service run as <c>dotnet X.dll args</c>; output kept line by line; always killed on dispose.</summary>
public sealed class ServiceProcess : IDisposable
{
    private readonly Process _process;

    private ServiceProcess(Process process, string name)
    {
        _process = process;
        Name = name;
    }

    public string Name { get; }
    public ConcurrentQueue<string> Lines { get; } = new();
    public bool HasExited => _process.HasExited;
    public int Id => _process.Id;

    public static ServiceProcess Start(string name, string dll, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_ENVIRONMENT"] = "Production";
        psi.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        var p = Process.Start(psi) ?? throw new InvalidOperationException("dotnet did not start");
        var s = new ServiceProcess(p, name);
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) s.Lines.Enqueue(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) s.Lines.Enqueue(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return s;
    }

    /// <summary>Waits (bounded) for an output line matching <paramref name="match"/>; fails early when the process exits.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var line = Lines.FirstOrDefault(match);
            if (line is not null) return line;
            if (_process.HasExited) throw new InvalidOperationException($"{Name} exited ({_process.ExitCode}):\n{Tail()}");
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{Name}: expected output did not appear in {timeout}:\n{Tail()}");
            await Task.Delay(50);
        }
    }

    /// <summary>SIGKILL, as a crash would.</summary>
    public void Kill()
    {
        if (_process.HasExited) return;
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    /// <summary>SIGTERM (graceful stop); returns the exit code, or null when it did not exit in time.</summary>
    public async Task<int?> TerminateAsync(TimeSpan timeout)
    {
        using (var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(global::System.Globalization.CultureInfo.InvariantCulture)])) await kill.WaitForExitAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return _process.ExitCode;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>The last lines of output, for failure messages.</summary>
    public string Tail(int n = 40) => string.Join('\n', Lines.TakeLast(n));

    public void Dispose()
    {
        try
        {
            Kill();
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        _process.Dispose();
    }
}
