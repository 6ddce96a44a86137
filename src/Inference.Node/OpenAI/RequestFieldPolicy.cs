using System.Collections.Concurrent;
using System.Text.Json;
using Serving.Contracts.Errors;
using Serving.Inference.Node.Telemetry;

namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// Request fields the node has no member for (<see cref="GenerationRequestBody.UnknownFields"/>), judged as vLLM does:
/// a field that would change what the client receives but is not implemented is a 400 <c>unsupported_parameter</c>
/// naming it (never silently ignored); a field that changes nothing here (bookkeeping of OpenAI's platform) is accepted
/// and logged once at Debug, as is a field the node does not know at all. A null value asks for nothing and passes.
/// </summary>
internal static class RequestFieldPolicy
{
    /// <summary>Fields that change the output and are not implemented, with what to do instead.</summary>
    public static readonly IReadOnlyDictionary<string, string> Unsupported = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["functions"] = "the deprecated functions field is not supported; send the functions as tools: [{\"type\": \"function\", \"function\": {...}}]",
        ["function_call"] = "the deprecated function_call field is not supported; use tool_choice",
        ["audio"] = "audio output is not supported by this node",
        ["modalities"] = "this node produces text only; leave modalities out",
        ["prediction"] = "predicted outputs are not supported by this node",
        ["web_search_options"] = "web search is not supported by this node",
        ["reasoning_effort"] = "reasoning effort is not supported by this node (a template's thinking switch goes in chat_template_kwargs)",
        ["verbosity"] = "verbosity is not supported by this node",
    };

    /// <summary>Fields accepted that change nothing here (logged once).</summary>
    public static readonly IReadOnlyDictionary<string, string> NoEffect = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["store"] = "this node stores no completions",
        ["metadata"] = "metadata is kept by OpenAI's platform only",
        ["service_tier"] = "this node has one service tier",
        ["prompt_cache_key"] = "prompt caching needs no key here",
        ["safety_identifier"] = "no safety system reads it here",
        ["user"] = "end-user ids are not tracked here",
    };

    private static readonly ConcurrentDictionary<string, byte> Logged = new(StringComparer.Ordinal);

    /// <summary>Throws the 400 for the first unsupported field; logs the ignored ones once.</summary>
    public static void Check(GenerationRequestBody body, ILogger logger)
    {
        if (body.User is not null) LogOnce(logger, "user", NoEffect["user"]);
        if (body.UnknownFields is not { Count: > 0 } fields) return;
        foreach (var (name, value) in fields)
        {
            if (value.ValueKind == JsonValueKind.Null) continue;
            if (Unsupported.TryGetValue(name, out var why))
            {
                throw Refusals.Invalid(name, $"'{name}' is not supported: {why}.", ErrorCodes.UnsupportedParameter);
            }
        }
        foreach (var name in fields.Keys)
        {
            LogOnce(logger, name, NoEffect.TryGetValue(name, out var why) ? why : Unsupported.ContainsKey(name) ? "null" : "not a field this node knows");
        }
    }

    private static void LogOnce(ILogger logger, string name, string why)
    {
        // Bounded: an unknown name is logged once too, but a client inventing names could grow the set; cap it.
        if (Logged.Count < 1024 && Logged.TryAdd(name, 0)) NodeLog.IgnoredField(logger, name, why);
    }
}
