using System.Diagnostics;
using System.Globalization;

namespace Serving.Stress.Host;

/// <summary>
/// The one-process host (<c>src/Standalone</c>) started as a child process, so that its memory, threads and GC are
/// measured apart from this tool's own. Ready once its gateway answers <c>/health/ready</c>.
/// </summary>
internal sealed class StandaloneProcess : IAsyncDisposable
{
    private readonly Process _process;

    private StandaloneProcess(Process process, string url, string key)
    {
        _process = process;
        Url = url;
        Key = key;
    }

    /// <summary>Gateway URL without a trailing slash.</summary>
    public string Url { get; }

    /// <summary>The development tenant's key.</summary>
    public string Key { get; }

    /// <summary>Process id (for /proc).</summary>
    public int Pid => _process.Id;

    /// <summary>The built host next to this repository: <c>src/Standalone/bin/Release/net10.0/linux-x64/Serving.Standalone</c>.</summary>
    public static string DefaultExecutable()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "src", "Standalone", "bin", "Release", "net10.0", "linux-x64", "Serving.Standalone");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("Build the host first: dotnet build src/Standalone -c Release (or pass --host-exe).");
    }

    /// <summary>Starts <paramref name="executable"/> on <paramref name="port"/> with a fixed dev key and <paramref name="extraArgs"/>; waits until ready.</summary>
    public static async Task<StandaloneProcess> StartAsync(string executable, int port, IReadOnlyList<string> extraArgs, string logPath, CancellationToken ct)
    {
        const string key = "sk-stress-tool-dev-key-0000000000";
        var info = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--Standalone:Port", port.ToString(CultureInfo.InvariantCulture), "--Standalone:DevKey", key }) info.ArgumentList.Add(a);
        foreach (var a in extraArgs) info.ArgumentList.Add(a);
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {executable}");
        var log = new StreamWriter(logPath) { AutoFlush = true };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var host = new StandaloneProcess(process, $"http://127.0.0.1:{port}", key);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (true)
        {
            if (process.HasExited) throw new InvalidOperationException($"the host exited with {process.ExitCode}; see {logPath}");
            try
            {
                using var r = await http.GetAsync(host.Url + "/health/ready", ct);
                if (r.IsSuccessStatusCode) return host;
            }
            catch (HttpRequestException)
            {
                // not listening yet
            }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested)
            {
                // slow start on a loaded machine
            }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the host was not ready within 3 minutes; see {logPath}");
            await Task.Delay(250, ct);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
