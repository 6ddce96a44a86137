using System.Reflection;

namespace Serving.Standalone.Tests.Infrastructure;

/// <summary>The project's assemblies the one-process host loads, and files of the repository.</summary>
public static class HostAssemblies
{
    /// <summary>
    /// Every <c>Serving.*</c> assembly reachable from <c>Serving.Standalone</c> through its references (the host itself
    /// included): what one process holds when it runs gateway, node and store together.
    /// </summary>
    public static IReadOnlyList<Assembly> All { get; } = Walk(typeof(Program).Assembly);

    /// <summary>The folder holding Serving.sln, found above this assembly.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    private static List<Assembly> Walk(Assembly root)
    {
        var seen = new Dictionary<string, Assembly>(StringComparer.Ordinal) { [root.GetName().Name!] = root };
        var queue = new Queue<Assembly>([root]);
        while (queue.TryDequeue(out var a))
        {
            foreach (var name in a.GetReferencedAssemblies())
            {
                if (name.Name is not { } n || !n.StartsWith("Serving.", StringComparison.Ordinal) || seen.ContainsKey(n)) continue;
                var loaded = Assembly.Load(name);
                seen[n] = loaded;
                queue.Enqueue(loaded);
            }
        }
        return [.. seen.Values.OrderBy(a => a.GetName().Name, StringComparer.Ordinal)];
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Serving.sln"))) return d.FullName;
        throw new InvalidOperationException("Serving.sln not found above " + AppContext.BaseDirectory);
    }
}
