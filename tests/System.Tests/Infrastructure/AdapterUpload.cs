using System.Net.Http.Headers;

namespace Serving.System.Tests.Infrastructure;

/// <summary>Multipart uploads of the demo model's real PEFT adapters (models/demo/adapters/{name}).</summary>
public static class AdapterUpload
{
    public static MultipartFormDataContent Demo(string name)
    {
        string dir = Path.Combine(Paths.DemoModel, "adapters", name);
        var form = new MultipartFormDataContent();
        var config = new ByteArrayContent(File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")));
        config.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        form.Add(config, "config", "adapter_config.json");
        form.Add(new ByteArrayContent(File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors"))), "weights", "adapter_model.safetensors");
        form.Add(new StringContent(Cluster.Model), "base_model");
        return form;
    }
}
