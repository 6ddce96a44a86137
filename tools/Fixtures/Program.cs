using Serving.Fixtures;

// Writes a randomly initialised Hugging Face checkpoint: Serving.Fixtures <shape> <output-dir> [--seed N] [--fp16]
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: fixtures <shape> <output-dir> [--seed N] [--fp16]  (shapes: tiny-gpt2, tiny-llama, gpt2-small, llama-small, llama3-1b-like, qwen3-small-like, " + string.Join(", ", FamilyFixtures.Names) + ")");
    return 2;
}
var shape = FixtureShape.Named(args[0]);
var seed = 1;
for (var i = 2; i < args.Length; i++)
{
    if (args[i] == "--seed" && i + 1 < args.Length) seed = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture);
    else if (args[i] == "--fp16") shape = shape with { Fp16 = true };
}
FixtureCheckpoint.Write(args[1], shape, seed);
Console.WriteLine($"wrote {args[0]} checkpoint to {args[1]}");
return 0;
