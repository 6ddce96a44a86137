using Serving.Fuzz;

// serving-fuzz <target>              run under afl-fuzz (SharpFuzz's fork server; one input from stdin otherwise)
// serving-fuzz <target> --replay DIR  run every file of DIR once (exit 1 on the first finding, with its name)
// serving-fuzz --list                 the target names
// serving-fuzz --seeds DIR            write every target's seed inputs under DIR/<target>/
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: serving-fuzz <target> [--replay DIR] | --list");
    return 2;
}
if (args.Length == 2 && args[0] == "--seeds")
{
    Seeds.Write(args[1]);
    return 0;
}
if (args[0] == "--list")
{
    foreach (var name in FuzzTargets.All.Keys) Console.WriteLine(name);
    return 0;
}
if (!FuzzTargets.All.TryGetValue(args[0], out var target))
{
    Console.Error.WriteLine($"unknown target '{args[0]}'; one of: {string.Join(", ", FuzzTargets.All.Keys)}");
    return 2;
}
if (args.Length == 3 && args[1] == "--replay")
{
    var files = Directory.GetFiles(args[2]);
    Array.Sort(files, StringComparer.Ordinal);
    foreach (var file in files)
    {
        try
        {
            target(File.ReadAllBytes(file));
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"{file}: {e}");
            return 1;
        }
    }
    Console.WriteLine($"{args[0]}: {files.Length} inputs, no finding");
    return 0;
}

SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
{
    using var buffer = new MemoryStream();
    stream.CopyTo(buffer);
    target(buffer.ToArray());
});
return 0;
