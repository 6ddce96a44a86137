using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary><c>Node:Weights</c>: the node loads quantised projections, says so in <c>/node/status</c>, and serves with them.</summary>
public sealed class QuantizedNodeTests
{
    [Fact]
    public async Task Int4Weights_StatusReportsTheFormat_AndCompletionsAreServed()
    {
        await using var fp32 = await NodeServer.StartAsync();
        await using var int4 = await NodeServer.StartAsync(new Dictionary<string, string?>
        {
            ["Node:Weights"] = "Int4", ["Node:QuantizeHead"] = "true", ["Node:WeightBlockSize"] = "16",
        });
        var plain = JsonNode.Parse(await fp32.Http.GetStringAsync("node/status"))!["weights"]!;
        var quantized = JsonNode.Parse(await int4.Http.GetStringAsync("node/status"))!["weights"]!;
        Assert.Equal("fp32", (string)plain["format"]!);
        Assert.Equal("fp32", (string)plain["precision"]!);
        Assert.Equal("int4", (string)quantized["format"]!);
        Assert.Equal(16, (int)quantized["block_size"]!);
        Assert.True((bool)quantized["head_quantized"]!);
        // 4 bits + a 4-byte scale and a 4-bit zero point per 16 values: about 0.19 of fp32's 32 bits.
        Assert.InRange((double)(long)quantized["projection_bytes"]! / (long)plain["projection_bytes"]!, 0.15, 0.3);
        Assert.True((long)quantized["head_bytes"]! < (long)plain["head_bytes"]! / 4);

        using var response = await int4.Http.PostAsJsonAsync("v1/completions", new { model = NodeServer.ModelId, prompt = "hello", max_tokens = 8, temperature = 0, ignore_eos = true });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal(8, (int)body["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task Float16Precision_StatusReportsIt_AndCompletionsAreServed()
    {
        // fp16 blocks on the CPU provider (the CUDA node's arithmetic, run here as a test path).
        await using var fp16 = await NodeServer.StartAsync(new Dictionary<string, string?> { ["Node:Precision"] = "Float16" });
        var weights = JsonNode.Parse(await fp16.Http.GetStringAsync("node/status"))!["weights"]!;
        Assert.Equal("fp16", (string)weights["precision"]!);
        Assert.Equal("fp32", (string)weights["format"]!);

        using var response = await fp16.Http.PostAsJsonAsync("v1/completions", new { model = NodeServer.ModelId, prompt = "hello", max_tokens = 8, temperature = 0, ignore_eos = true });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal(8, (int)body["usage"]!["completion_tokens"]!);
    }

    [Theory]
    [InlineData("Node:Precision", "Float16;Node:MixedSteps=true", "Node:Precision Float16 does not run with")]
    [InlineData("Node:WeightBlockSize", "48", "Node:WeightBlockSize must be a power of two")]
    [InlineData("Node:WeightAccuracyLevel", "7", "Node:WeightAccuracyLevel must be in [0, 4]")]
    [InlineData("Node:QuantizeHead", "true", "Node:QuantizeHead needs Node:Weights Int8 or Int4")]
    public async Task InvalidWeightSettings_AreRefusedAtStart_NamingTheSetting(string key, string value, string message)
    {
        var settings = new Dictionary<string, string?>();
        foreach (var (part, i) in value.Split(';').Select((p, i) => (p, i)))
        {
            if (i == 0) settings[key] = part;
            else settings[part[..part.IndexOf('=')]] = part[(part.IndexOf('=') + 1)..]; // further "key=value" settings
        }
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => NodeServer.StartAsync(settings));
        Assert.Contains(message, e.Message);
    }
}
