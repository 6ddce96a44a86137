namespace Serving.LoadGen.Workload;

/// <summary>One request of a workload trace.</summary>
/// <param name="Id">Position in the trace, from 0.</param>
/// <param name="ArrivalSeconds">Offset from the start of the run at which an open-loop run sends it (µs resolution).</param>
/// <param name="Adapter">Adapter name, or null for the base model.</param>
/// <param name="PromptTokens">Prompt length in (approximate) tokens.</param>
/// <param name="OutputTokens">Requested output length, sent as max_tokens.</param>
/// <param name="Prompt">Prompt text.</param>
public sealed record TraceRequest(int Id, double ArrivalSeconds, string? Adapter, int PromptTokens, int OutputTokens, string Prompt);
