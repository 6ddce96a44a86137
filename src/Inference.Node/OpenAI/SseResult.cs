using System.Buffers;
using System.IO.Pipelines;
using System.Text.Json;
using System.Threading.Channels;
using Serving.Inference.Node.Telemetry;
using Serving.Inference.Sampling;
using Serving.Inference.Scheduling;

namespace Serving.Inference.Node.OpenAI;

/// <summary>
/// Streams a request's events as Server-Sent Events in OpenAI's chunk format (<c>text_completion</c> or
/// <c>chat.completion.chunk</c>), then the usage chunk when <c>stream_options.include_usage</c> is set, then
/// <c>data: [DONE]</c>; with <c>continuous_usage_stats</c> too, every chunk carries the usage so far (vLLM's
/// extension). JSON is written straight into the response pipe; events already produced are sent in one flush. A
/// client that disconnects cancels the request, which frees its KV slots before the next decode step.
/// A completions request with several prompts streams their chunks interleaved as they come, each choice indexed from
/// its prompt's <see cref="ResponseContext.ChoiceOffset"/>, and ends once every prompt is done.
/// </summary>
internal sealed class SseResult : IResult
{
    private static readonly JsonWriterOptions WriterOptions = new() { SkipValidation = true };

    private readonly IReadOnlyList<ResponseContext> _parts;
    private readonly ResponseContext _first; // the first prompt's: id, model, flags and tokenizer are the same for every prompt
    private readonly ILogger _logger;
    private readonly Tools.ToolCallStream?[]? _tools; // per choice, when the output is read for tool calls (chat, one prompt)

    public SseResult(ResponseContext response, ILogger logger) : this([response], logger)
    {
    }

    public SseResult(IReadOnlyList<ResponseContext> parts, ILogger logger)
    {
        _parts = parts;
        _first = parts[0];
        _logger = logger;
        if (_first.IsChat && _first.Prepared.Tools is { ParsesCalls: true } tools)
        {
            _tools = new Tools.ToolCallStream?[_first.Choices];
            for (var i = 0; i < _tools.Length; i++) _tools[i] = new Tools.ToolCallStream(tools);
        }
    }

    public async Task ExecuteAsync(HttpContext httpContext)
    {
        var response = httpContext.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        var ct = httpContext.RequestAborted;
        var pipe = response.BodyWriter;
        var json = new Utf8JsonWriter(pipe, WriterOptions);
        var offsets = new int[_parts[^1].ChoiceOffset + _parts[^1].Choices];
        var completed = false;
        try
        {
            if (_first.IsChat)
            {
                for (var i = 0; i < _first.Choices; i++) WriteChunk(pipe, json, i, null, roleDelta: true, default, null, offsets);
                await pipe.FlushAsync(ct).ConfigureAwait(false);
            }
            completed = _parts.Count == 1
                ? await StreamAsync(pipe, json, offsets, ct).ConfigureAwait(false)
                : await StreamPromptsAsync(pipe, json, offsets, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            NodeLog.ClientDisconnected(_logger, _first.Id);
        }
        catch (IOException)
        {
            NodeLog.ClientDisconnected(_logger, _first.Id);
        }
        finally
        {
            if (!completed)
            {
                foreach (var part in _parts) part.Handle.Cancel();
            }
            await json.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One prompt: its events straight from its channel. True once <c>[DONE]</c> was written.</summary>
    private async Task<bool> StreamAsync(PipeWriter pipe, Utf8JsonWriter json, int[] offsets, CancellationToken ct)
    {
        var completed = false;
        var events = _first.Handle.Events;
        // The wait takes no token: a cancellable wait on the channel allocates a waiter (~100 B) for every token,
        // an uncancellable one reuses a single waiter. A disconnect cancels the request instead, and the scheduler
        // then ends its events (abort, done) before its next decode step, which ends this loop.
        using var disconnect = ct.Register(static h => ((GenerationHandle)h!).Cancel(), _first.Handle);
        while (await events.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
        {
            while (events.TryRead(out var e))
            {
                switch (e.Kind)
                {
                    case GenerationEventKind.Token when ToolStream(e.Choice) is { } tool:
                        // Content that cannot start a call goes out; the rest waits (an empty delta keeps usage and keep-alive flowing).
                        var content = tool.Append(e.Text);
                        WriteChunk(pipe, json, e.Choice, null, roleDelta: false, e, null, offsets, content, withheld: content.Length == 0);
                        break;
                    case GenerationEventKind.Finished when ToolStream(e.Choice) is { } tool:
                        WriteToolCallsEnd(pipe, json, tool, e, offsets);
                        break;
                    case GenerationEventKind.Token:
                        WriteChunk(pipe, json, e.Choice, null, roleDelta: false, e, null, offsets);
                        break;
                    case GenerationEventKind.Finished:
                        WriteChunk(pipe, json, e.Choice, e.FinishReason, roleDelta: false, e, null, offsets);
                        break;
                    case GenerationEventKind.Done:
                        completed = true;
                        if (_first.Handle.Alignment is { } report) WriteAlignment(pipe, json, report);
                        if (_first.Prepared.IncludeUsage) WriteChunk(pipe, json, -1, null, roleDelta: false, default, _first.Usage, offsets);
                        pipe.Write("data: [DONE]\n\n"u8);
                        break;
                }
            }
            await pipe.FlushAsync(ct).ConfigureAwait(false);
        }
        return completed;
    }

    /// <summary>Several prompts: their channels merged into one, in arrival order. True once <c>[DONE]</c> was written.</summary>
    private async Task<bool> StreamPromptsAsync(PipeWriter pipe, Utf8JsonWriter json, int[] offsets, CancellationToken ct)
    {
        var merged = Channel.CreateUnbounded<(int Part, GenerationEvent Event)>(new UnboundedChannelOptions { SingleReader = true });
        var pumps = new Task[_parts.Count];
        for (var i = 0; i < pumps.Length; i++) pumps[i] = PumpAsync(_parts[i].Handle, i, merged.Writer);
        _ = Task.WhenAll(pumps).ContinueWith(static (_, w) => ((ChannelWriter<(int, GenerationEvent)>)w!).TryComplete(), merged.Writer,
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        using var disconnect = ct.Register(static p =>
        {
            foreach (var part in (IReadOnlyList<ResponseContext>)p!) part.Handle.Cancel();
        }, _parts);
        var done = 0;
        var completed = false;
        while (await merged.Reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
        {
            while (merged.Reader.TryRead(out var item))
            {
                var e = item.Event;
                var choice = _parts[item.Part].ChoiceOffset + e.Choice;
                switch (e.Kind)
                {
                    case GenerationEventKind.Token:
                        WriteChunk(pipe, json, choice, null, roleDelta: false, e, null, offsets);
                        break;
                    case GenerationEventKind.Finished:
                        WriteChunk(pipe, json, choice, e.FinishReason, roleDelta: false, e, null, offsets);
                        break;
                    case GenerationEventKind.Done when ++done == _parts.Count:
                        completed = true;
                        if (_first.Prepared.IncludeUsage) WriteChunk(pipe, json, -1, null, roleDelta: false, default, ResponseContext.SumUsage(_parts), offsets);
                        pipe.Write("data: [DONE]\n\n"u8);
                        break;
                }
            }
            await pipe.FlushAsync(ct).ConfigureAwait(false);
        }
        return completed;
    }

    private static async Task PumpAsync(GenerationHandle handle, int part, ChannelWriter<(int, GenerationEvent)> merged)
    {
        await foreach (var e in handle.Events.ReadAllAsync(CancellationToken.None).ConfigureAwait(false)) merged.TryWrite((part, e));
    }

    /// <summary>
    /// A choice that was read for tool calls ends: the withheld text that is content after all, then one
    /// <c>tool_calls</c> delta per call (id, type, name and the whole arguments, as OpenAI's first and later deltas
    /// together), then the finish chunk (<c>tool_calls</c> when it made calls).
    /// </summary>
    private void WriteToolCallsEnd(PipeWriter pipe, Utf8JsonWriter json, Tools.ToolCallStream tool, in GenerationEvent finished, int[] offsets)
    {
        var (calls, content, error) = tool.Finish();
        if (content.Length > 0) WriteChunk(pipe, json, finished.Choice, null, roleDelta: false, finished, null, offsets, content);
        if (error is not null && _first.Prepared.Tools is { } tools) NodeLog.ToolCallUnparsed(_logger, _first.Prepared.Generation.Id ?? _first.Id, tools.Forced ? "forced" : tools.Parser.Name, error);
        var wire = Tools.ToolOutput.Wire(calls);
        for (var i = 0; i < wire.Count; i++)
        {
            pipe.Write("data: "u8);
            json.Reset(pipe);
            WriteChunkStart(json);
            json.WriteStartObject();
            json.WriteNumber("index"u8, finished.Choice);
            json.WriteStartObject("delta"u8);
            json.WriteStartArray("tool_calls"u8);
            json.WriteStartObject();
            json.WriteNumber("index"u8, i);
            json.WriteString("id"u8, wire[i].Id);
            json.WriteString("type"u8, "function"u8);
            json.WriteStartObject("function"u8);
            json.WriteString("name"u8, wire[i].Function.Name);
            json.WriteString("arguments"u8, wire[i].Function.Arguments);
            json.WriteEndObject();
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteNull("logprobs"u8);
            json.WriteNull("finish_reason"u8);
            json.WriteEndObject();
            json.WriteEndArray();
            if (_first.Prepared.IncludeUsage && !_first.Prepared.ContinuousUsage) json.WriteNull("usage"u8);
            json.WriteEndObject();
            json.Flush();
            pipe.Write("\n\n"u8);
        }
        WriteChunk(pipe, json, finished.Choice, finished.FinishReason, roleDelta: false, finished, null, offsets,
            finishOverride: Tools.ToolOutput.FinishReason(finished.FinishReason, calls.Count > 0));
    }

    private Tools.ToolCallStream? ToolStream(int choice) => _tools is null ? null : _tools[choice];

    private void WriteChunkStart(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteString("id"u8, _first.Id);
        json.WriteString("object"u8, _first.IsChat ? "chat.completion.chunk"u8 : "text_completion"u8);
        json.WriteNumber("created"u8, _first.Created);
        json.WriteString("model"u8, _first.Model);
        json.WriteStartArray("choices"u8);
    }

    /// <summary>
    /// One <c>data:</c> line. <paramref name="choice"/> -1 writes the usage chunk (no choices). <paramref name="content"/>
    /// replaces the token's text; <paramref name="withheld"/> writes an empty delta (text held back by the tool parser);
    /// <paramref name="finishOverride"/> replaces the finish reason's name.
    /// </summary>
    private void WriteChunk(PipeWriter pipe, Utf8JsonWriter json, int choice, FinishReason? finish, bool roleDelta, in GenerationEvent token,
        UsageBody? usage, int[] offsets, string? content = null, bool withheld = false, string? finishOverride = null)
    {
        pipe.Write("data: "u8);
        json.Reset(pipe);
        json.WriteStartObject();
        json.WriteString("id"u8, _first.Id);
        json.WriteString("object"u8, _first.IsChat ? "chat.completion.chunk"u8 : "text_completion"u8);
        json.WriteNumber("created"u8, _first.Created);
        json.WriteString("model"u8, _first.Model);
        json.WriteStartArray("choices"u8);
        if (choice >= 0)
        {
            json.WriteStartObject();
            json.WriteNumber("index"u8, choice);
            var text = content ?? token.Text ?? string.Empty;
            if (_first.IsChat)
            {
                json.WriteStartObject("delta"u8);
                if (withheld)
                {
                }
                else if (roleDelta)
                {
                    json.WriteString("role"u8, "assistant"u8);
                    json.WriteString("content"u8, ""u8);
                }
                else if (finish is null)
                {
                    json.WriteString("content"u8, text);
                }
                json.WriteEndObject();
            }
            else
            {
                json.WriteString("text"u8, text);
            }
            if (!withheld && finish is null && token.Kind == GenerationEventKind.Token && token.TokenId >= 0 && _first.Prepared.Logprobs != LogprobsStyle.None)
            {
                WriteLogprobs(json, token, offsets[choice]);
            }
            else
            {
                json.WriteNull("logprobs"u8);
            }
            if (finishOverride is not null) json.WriteString("finish_reason"u8, finishOverride);
            else if (finish is FinishReason f) json.WriteString("finish_reason"u8, f.ToOpenAIString());
            else json.WriteNull("finish_reason"u8);
            if (token.Reward is float reward) json.WriteNumber("reward"u8, reward);
            json.WriteEndObject();
            offsets[choice] += text.Length;
        }
        json.WriteEndArray();
        if (usage is not null)
        {
            json.WriteStartObject("usage"u8);
            json.WriteNumber("prompt_tokens"u8, usage.PromptTokens);
            json.WriteNumber("completion_tokens"u8, usage.CompletionTokens);
            json.WriteNumber("total_tokens"u8, usage.TotalTokens);
            json.WriteNumber("generated_tokens"u8, usage.GeneratedTokens);
            if (usage.LayersPerToken is double layers) json.WriteNumber("layers_per_token"u8, layers);
            if (usage.DraftAcceptance is double acceptance) json.WriteNumber("draft_acceptance"u8, acceptance);
            json.WriteEndObject();
        }
        else if (_first.Prepared.ContinuousUsage)
        {
            // The counts so far, summed over the prompts' handles (no allocation per chunk): the gateway settles a
            // cancelled stream by them.
            int prompt = 0, completion = 0, generated = 0;
            for (var i = 0; i < _parts.Count; i++)
            {
                var part = _parts[i];
                prompt += part.Handle.PromptTokens;
                completion += part.Handle.CompletionTokens;
                generated += part.Handle.GeneratedTokens;
            }
            json.WriteStartObject("usage"u8);
            json.WriteNumber("prompt_tokens"u8, prompt);
            json.WriteNumber("completion_tokens"u8, completion);
            json.WriteNumber("total_tokens"u8, prompt + completion);
            json.WriteNumber("generated_tokens"u8, generated);
            json.WriteEndObject();
        }
        else if (_first.Prepared.IncludeUsage)
        {
            json.WriteNull("usage"u8);
        }
        json.WriteEndObject();
        json.Flush();
        pipe.Write("\n\n"u8);
    }

    /// <summary>The alignment report (extension) as a chunk without choices, before <c>[DONE]</c>.</summary>
    private void WriteAlignment(PipeWriter pipe, Utf8JsonWriter json, Decoding.AlignmentReport report)
    {
        pipe.Write("data: "u8);
        json.Reset(pipe);
        json.WriteStartObject();
        json.WriteString("id"u8, _first.Id);
        json.WriteString("object"u8, _first.IsChat ? "chat.completion.chunk"u8 : "text_completion"u8);
        json.WriteNumber("created"u8, _first.Created);
        json.WriteString("model"u8, _first.Model);
        json.WriteStartArray("choices"u8);
        json.WriteEndArray();
        json.WritePropertyName("alignment"u8);
        JsonSerializer.Serialize(json, report, OpenAIApi.ResponseJson);
        json.WriteEndObject();
        json.Flush();
        pipe.Write("\n\n"u8);
    }

    private void WriteLogprobs(Utf8JsonWriter json, in GenerationEvent token, int offset)
    {
        json.WriteStartObject("logprobs"u8);
        var text = _first.TokenText(token.TokenId);
        if (_first.IsChat)
        {
            json.WriteStartArray("content"u8);
            json.WriteStartObject();
            WriteToken(json, text, token.Logprob);
            json.WriteStartArray("top_logprobs"u8);
            foreach (var a in token.TopLogprobs ?? [])
            {
                json.WriteStartObject();
                WriteToken(json, _first.TokenText(a.TokenId), a.Logprob);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndArray();
        }
        else
        {
            json.WriteStartArray("tokens"u8);
            json.WriteStringValue(text);
            json.WriteEndArray();
            json.WriteStartArray("token_logprobs"u8);
            json.WriteNumberValue(WireLogprob.Of(token.Logprob));
            json.WriteEndArray();
            json.WriteStartArray("top_logprobs"u8);
            if (token.TopLogprobs is { } top)
            {
                json.WriteStartObject();
                var seen = new HashSet<string>();
                foreach (var a in top)
                {
                    var t = _first.TokenText(a.TokenId);
                    if (seen.Add(t)) json.WriteNumber(t, WireLogprob.Of(a.Logprob));
                }
                json.WriteEndObject();
            }
            else
            {
                json.WriteNullValue();
            }
            json.WriteEndArray();
            json.WriteStartArray("text_offset"u8);
            json.WriteNumberValue(offset);
            json.WriteEndArray();
        }
        json.WriteEndObject();
    }

    private static void WriteToken(Utf8JsonWriter json, string text, float logprob)
    {
        json.WriteString("token"u8, text);
        json.WriteNumber("logprob"u8, WireLogprob.Of(logprob));
        json.WriteStartArray("bytes"u8);
        foreach (var b in System.Text.Encoding.UTF8.GetBytes(text)) json.WriteNumberValue(b);
        json.WriteEndArray();
    }
}
