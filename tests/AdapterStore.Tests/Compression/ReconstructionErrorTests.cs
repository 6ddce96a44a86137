using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;
using Serving.AdapterStore.Tests.Peft;

namespace Serving.AdapterStore.Tests.Compression;

public sealed class ReconstructionErrorTests
{
    [Fact]
    public void Compute_GramTrick_EqualsDenseFrobeniusError()
    {
        var folder = PeftFolders.Gpt2Lora(seed: 8);
        var payload = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Gpt2).Payload;
        var original = AdapterMaterializer.Materialize(payload);
        var decoded = AdapterMaterializer.Materialize(AdapterContainer.Decode(AdapterContainer.Encode(payload, new CodecOptions { ComPeft = new() { Density = 0.2, Factor = 1.7 } })));
        var errors = ReconstructionError.Compute(original, decoded);
        foreach (var e in errors)
        {
            var x = PeftAdapterReaderTests.Dense(original.Find(e.Layer, e.Module)!);
            var y = PeftAdapterReaderTests.Dense(decoded.Find(e.Layer, e.Module)!);
            double num = 0, den = 0;
            for (int i = 0; i < x.Length; i++)
            {
                num += (x[i] - y[i]) * (x[i] - y[i]);
                den += x[i] * x[i];
            }
            Assert.Equal(Math.Sqrt(num / den), e.Relative, 1e-6);
        }
        Assert.All(errors, e => Assert.InRange(e.Relative, 0.05, 2.0));
    }

    [Fact]
    public void Compute_Lossless_IsZero()
    {
        var folder = PeftFolders.Vera(PeftFolders.Llama);
        var payload = PeftAdapterReader.Read(folder.ConfigBytes, folder.Safetensors, PeftFolders.Llama).Payload;
        var bytes = AdapterContainer.Encode(payload, new CodecOptions()); // VeRA is always lossless
        Assert.Equal(AdapterCodec.Lossless, AdapterContainer.ReadHeader(bytes, out _).Codec);
        var errors = ReconstructionError.Compute(AdapterMaterializer.Materialize(payload), AdapterMaterializer.Materialize(AdapterContainer.Decode(bytes)));
        Assert.All(errors, e => Assert.Equal(0, e.Relative, 1e-9));
    }
}
