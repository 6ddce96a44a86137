namespace Serving.System.Tests.Infrastructure;

/// <summary>The repository, the demo model and the built services (same configuration as this test assembly).</summary>
public static class Paths
{
    /// <summary>The folder holding Serving.sln, found above this assembly.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>models/demo (a real Llama checkpoint with LoRA adapters).</summary>
    public static string DemoModel => Path.Combine(RepoRoot, "models", "demo");

    /// <summary>Release or Debug, from this assembly's own output path (…/bin/{Configuration}/net10.0/…).</summary>
    public static string Configuration { get; } = FindConfiguration();

    public static string Gateway => Dll("Gateway", "Serving.Gateway.dll");
    public static string Node => Dll("Inference.Node", "Serving.Inference.Node.dll");
    public static string Standalone => Dll("Standalone", "Serving.Standalone.dll");

    private static string Dll(string project, string file)
    {
        var tfmDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        // …/bin/{Configuration}/{tfm}/{rid}/ → the same relative layout under src/{project}.
        string rid = tfmDir.Name, tfm = tfmDir.Parent!.Name;
        string path = Path.Combine(RepoRoot, "src", project, "bin", Configuration, tfm, rid, file);
        if (!File.Exists(path)) throw new FileNotFoundException($"{file} not built (expected {path}); build the solution first.", path);
        return path;
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Serving.sln"))) return d.FullName;
        throw new InvalidOperationException("Serving.sln not found above " + AppContext.BaseDirectory);
    }

    private static string FindConfiguration()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d?.Parent is not null; d = d.Parent)
            if (d.Parent.Name == "bin") return d.Name;
        return "Release";
    }
}
