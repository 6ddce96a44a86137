using System.Net.Http.Headers;

namespace Serving.System.Tests.Infrastructure;

/// <summary>Multipart uploads of the demo model's real PEFT adapters (models/demo/adapters/{name}).</summary>
public static class AdapterUpload
{
    /// <summary>The folder's two files and <c>base_model</c>, plus form <paramref name="fields"/> such as <c>("codec", "lossless")</c>.</summary>
    public static MultipartFormDataContent Demo(string name, params (string Name, string Value)[] fields)
    {
        string dir = Path.Combine(Paths.DemoModel, "adapters", name);
        var form = new MultipartFormDataContent();
        var config = new ByteArrayContent(File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")));
        config.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        form.Add(config, "config", "adapter_config.json");
        form.Add(new ByteArrayContent(File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors"))), "weights", "adapter_model.safetensors");
        form.Add(new StringContent(Cluster.Model), "base_model");
        foreach (var (field, value) in fields) form.Add(new StringContent(value), field);
        return form;
    }
}
