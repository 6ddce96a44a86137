using System.Text.Encodings.Web;
using System.Text.Json;
using Serving.LoadGen.Workload;

namespace Serving.LoadGen.Client;

/// <summary>Builds OpenAI request bodies.</summary>
public static class RequestBody
{
    private static readonly JsonWriterOptions Options = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>UTF-8 JSON body for <paramref name="request"/>.</summary>
    public static byte[] Build(TraceRequest request, ClientOptions options)
    {
        using var buffer = new MemoryStream(request.Prompt.Length + 256);
        using (var w = new Utf8JsonWriter(buffer, Options))
        {
            w.WriteStartObject();
            w.WriteString("model", options.ModelFor(request.Adapter));
            if (options.Endpoint == ApiEndpoint.Chat)
            {
                w.WriteStartArray("messages");
                w.WriteStartObject();
                w.WriteString("role", "user");
                w.WriteString("content", request.Prompt);
                w.WriteEndObject();
                w.WriteEndArray();
            }
            else
            {
                w.WriteString("prompt", request.Prompt);
            }

            w.WriteNumber("max_tokens", request.OutputTokens);
            w.WriteNumber("temperature", 0);
            w.WriteBoolean("stream", options.Stream);
            if (options.Stream)
            {
                w.WriteStartObject("stream_options");
                w.WriteBoolean("include_usage", true);
                w.WriteEndObject();
            }

            if (options.IgnoreEos)
            {
                w.WriteBoolean("ignore_eos", true);
            }

            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    /// <summary>Request path for the endpoint.</summary>
    public static string PathFor(ApiEndpoint endpoint) =>
        endpoint == ApiEndpoint.Chat ? "v1/chat/completions" : "v1/completions";
}
