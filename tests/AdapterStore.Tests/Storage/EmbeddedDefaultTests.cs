using Microsoft.Extensions.DependencyInjection;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Storage;
using Serving.AdapterStore.Tests.Peft;

namespace Serving.AdapterStore.Tests.Storage;

public sealed class EmbeddedDefaultTests
{
    [Fact]
    public async Task AddAdapterStore_WithoutConnectionString_StartsEmbeddedGarnetAndServesTheSameProtocol()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IBaseModelCatalog>(new StaticBaseModelCatalog().Add("gpt2-test", PeftFolders.Gpt2));
        services.AddAdapterStore(o => o.EmbeddedMemory = "128m");
        int port;
        await using (var provider = services.BuildServiceProvider())
        {
            var garnet = provider.GetRequiredService<EmbeddedGarnet>();
            port = garnet.Port;
            var ingestor = provider.GetRequiredService<AdapterIngestor>();
            var folder = PeftFolders.Gpt2Lora();
            var report = await ingestor.IngestAsync(new UploadRequest("default", "emb", null, new PeftFiles(folder.ConfigBytes, folder.Safetensors), new CodecOptions(), false), CancellationToken.None);
            Assert.Equal(1, report.Metadata.Version);
            var loaded = await provider.GetRequiredService<IAdapterStore>().LoadAdapterAsync("default", "emb", null, CancellationToken.None);
            Assert.Equal(8, loaded!.Value.Adapter.Modules.Count);
        }
        // Disposing the container stops the embedded server: the port is free again.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
        listener.Start();
    }
}
