using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Serving.Inference.Tests.Tokenization;

/// <summary>A temporary checkpoint folder, deleted on dispose.</summary>
public sealed class TempFolder : IDisposable
{
    private static readonly JsonSerializerOptions RawUtf8 = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public TempFolder Write(string name, string text)
    {
        System.IO.File.WriteAllText(File(name), text);
        return this;
    }

    /// <summary>Writes JSON with raw UTF-8 (as Hugging Face's files are), not \u escapes.</summary>
    public TempFolder WriteJson(string name, JsonNode node) => Write(name, node.ToJsonString(RawUtf8));

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
