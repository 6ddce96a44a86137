using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using Serving.Inference.Sampling;

namespace Serving.Inference.Benchmarks;

/// <summary>
/// One decode step of the sampling pipeline (Sample + FillTopLogprobs + Accept) at GPT-2's vocabulary size, so each
/// operation is one token: Mean = ns/token, Allocated = bytes/token. The baseline is a bare argmax over the logits.
/// </summary>
[MemoryDiagnoser]
public class SamplingBenchmarks
{
    private const int Vocab = 50_257;
    private readonly float[][] _logits = new float[16][];
    private readonly int[] _topIds = new int[20];
    private readonly float[] _topLogprobs = new float[20];
    private TokenSampler _sampler = null!;
    private int _step;

    /// <summary>Which options are on.</summary>
    [Params("greedy", "temperature", "top-k+top-p+min-p+penalties+logprobs", "top-p (whole vocab)+penalties+logprobs")]
    public string Config { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        for (int s = 0; s < _logits.Length; s++)
        {
            // Roughly LLM-shaped: a normal body (σ ≈ 2.5) and a handful of clearly preferred tokens.
            var l = _logits[s] = new float[Vocab];
            for (int i = 0; i < Vocab; i++)
            {
                double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
                l[i] = (float)(2.5 * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
            }
            for (int j = 0; j < 8; j++)
            {
                l[random.Next(Vocab)] += 8 + j;
            }
        }

        SamplingParameters p = Config switch
        {
            "greedy" => new() { Temperature = 0 },
            "temperature" => new() { Temperature = 0.8f, Seed = 1 },
            "top-k+top-p+min-p+penalties+logprobs" => new()
            {
                Temperature = 0.8f, TopK = 50, TopP = 0.9f, MinP = 0.05f, RepetitionPenalty = 1.1f,
                PresencePenalty = 0.3f, FrequencyPenalty = 0.2f, Seed = 1, TopLogprobs = 5,
            },
            _ => new() { Temperature = 1f, TopP = 0.95f, RepetitionPenalty = 1.1f, PresencePenalty = 0.3f, FrequencyPenalty = 0.2f, Seed = 1, TopLogprobs = 5 },
        };
        _sampler = new TokenSampler(p, Vocab, Enumerable.Range(0, 500).ToArray());
    }

    [Benchmark(Baseline = true, Description = "argmax only")]
    public int Argmax() => TensorPrimitives.IndexOfMax<float>(_logits[_step++ & 15]);

    [Benchmark(Description = "Sample + FillTopLogprobs + Accept")]
    public int Step()
    {
        int token = _sampler.Sample(_logits[_step++ & 15], out _);
        _sampler.FillTopLogprobs(_topIds, _topLogprobs);
        _sampler.Accept(token);
        return token;
    }

    [Benchmark(Description = "Sample without logprob + FillTopLogprobs + Accept")]
    public int StepWithoutLogprob()
    {
        // What the scheduler calls for requests that did not ask for logprobs.
        int token = _sampler.Sample(_logits[_step++ & 15]);
        _sampler.FillTopLogprobs(_topIds, _topLogprobs);
        _sampler.Accept(token);
        return token;
    }
}
