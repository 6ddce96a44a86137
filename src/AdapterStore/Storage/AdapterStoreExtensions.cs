using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Storage;

/// <summary>Read helpers for consumers (the inference node).</summary>
public static class AdapterStoreExtensions
{
    /// <summary>Reads, verifies, decodes and materialises an adapter; null when absent, <see cref="StoreCorruptException"/> when damaged.</summary>
    public static async Task<(AdapterMetadata Metadata, LoraAdapter Adapter)?> LoadAdapterAsync(
        this IAdapterStore store, string tenant, string name, long? version, CancellationToken cancellationToken)
    {
        var stored = await store.ReadAsync(tenant, name, version, cancellationToken);
        if (stored is null) return null;
        try
        {
            return (stored.Metadata, AdapterMaterializer.Materialize(AdapterContainer.Decode(stored.Container)));
        }
        catch (Exception e) when (e is ContainerFormatException or InvalidDataException)
        {
            throw new StoreCorruptException($"Adapter {tenant}/{name} v{stored.Metadata.Version} cannot be decoded: {e.Message}");
        }
    }
}
