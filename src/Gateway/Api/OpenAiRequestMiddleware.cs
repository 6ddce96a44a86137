using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Serving.Contracts.Errors;
using Serving.Contracts.Json;
using Serving.Contracts.Models;
using Serving.Contracts.Security;
using Serving.Gateway.RateLimiting;
using Serving.Gateway.Routing;
using Serving.Gateway.Telemetry;
using Serving.Gateway.Tenancy;

namespace Serving.Gateway.Api;

/// <summary>
/// First step of the proxy pipeline for the OpenAI routes: reads the body (bounded), resolves <c>model</c> against
/// the caller's tenant (another tenant's adapter is a 404), charges the token budget, rewrites <c>model</c> to its
/// canonical form <c>base:tenant/adapter</c> for the node, strips the caller's key, and hands the routing policy a
/// <see cref="RoutingRequest"/>. Every other field (OpenAI's and the node's extensions: <c>reward_head</c>,
/// <c>return_token_rewards</c>, <c>alignment</c>, <c>early_exit</c>, …) reaches the node byte for byte: only the
/// <c>model</c> token is spliced, and for a stream the <c>stream_options</c> value, so that the node reports usage in
/// every chunk (<see cref="UsageCapture"/> shows the client only the usage it asked for). The token reservation is
/// settled when the response ends (<see cref="TokenSettlement"/>).
/// </summary>
internal sealed class OpenAiRequestMiddleware(
    INodeView view, AdapterVisibility visibility, TokenBudget tokens, TenantUsage usage, IOptionsMonitor<RoutingOptions> routing,
    IOptionsMonitor<RateLimitOptions> limits, IOptions<GatewayOptions> gateway, GatewayMetrics metrics)
{
    /// <summary>Header carrying the calling tenant to the node (set by the gateway, never taken from the client).</summary>
    public const string TenantHeader = "X-Serving-Tenant";

    public async Task InvokeAsync(HttpContext context, Func<Task> next)
    {
        string? tenant = context.User.FindFirst(TenancyPolicies.TenantClaim)?.Value;
        if (tenant is null)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.Forbidden, "Admin keys manage tenants and keys; use a tenant key for this route.");
            return;
        }

        long max = routing.CurrentValue.MaxRequestBodyBytes;
        if (context.Request.ContentLength > max)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.RequestTooLarge, $"The request body exceeds {max} bytes.");
            return;
        }
        byte[]? body = await ReadBodyAsync(context.Request.Body, context.Request.ContentLength, max, context.RequestAborted);
        if (body is null)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.RequestTooLarge, $"The request body exceeds {max} bytes.");
            return;
        }

        if (JsonTextCheck.FindInvalidString(body) is { } badText)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.InvalidJson,
                $"The request body holds text that is not valid UTF-8 (or an escape that leaves a lone surrogate) in {(badText.Length == 0 ? "a property name" : $"'{badText}'")}; send UTF-8 JSON.",
                badText.Length == 0 ? null : badText);
            return;
        }
        RequestFields fields;
        try
        {
            fields = RequestFields.Parse(body, chat: context.Request.Path.StartsWithSegments("/v1/chat"));
        }
        catch (RequestFieldException e)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.InvalidJson, $"The request body is not valid JSON for this endpoint: {e.Message}", e.Param);
            return;
        }
        catch (JsonException e)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.InvalidJson, $"The body is not valid JSON: {e.Message}");
            return;
        }
        if (fields.Model is null)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.MissingParameter, "You must provide a model parameter.", "model");
            return;
        }
        if (!ModelId.TryParse(fields.Model, out var model) || !view.KnownModels.Contains(model.BaseModel))
        {
            await ModelNotFoundAsync(context, fields.Model);
            return;
        }
        if (ServedNow(model.BaseModel) is not { } maxModelLen)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.NoNodeAvailable, $"No inference node serving '{model.BaseModel}' is available right now; retry shortly.",
                retryAfter: gateway.Value.RetryAfter);
            return;
        }
        if (model.HasAdapter)
        {
            // An unreachable store (nothing cached) is the exception handler's 503.
            if (await visibility.FindAsync(model, tenant, context.RequestAborted) is null)
            {
                await ModelNotFoundAsync(context, fields.Model);
                return;
            }
            model = model.WithTenant(AdapterVisibility.OwnerFor(model, tenant)!);
        }
        if (routing.CurrentValue.ShedAtNodeLimit
            && NodeAdmission.AllFull(context.GetReverseProxyFeature().AvailableDestinations, view.Current, model.BaseModel))
        {
            metrics.RecordShed();
            await OpenAiErrors.WriteAsync(context, ErrorCodes.RequestRateLimited,
                $"Every inference node serving '{model.BaseModel}' is at its queue limit; retry later.", retryAfter: gateway.Value.RetryAfter);
            return;
        }

        // /tokenize and /detokenize generate nothing: they reserve (and, answering without usage, are charged) their body only.
        bool generates = !RegistryProxyConfigProvider.TokenizerPaths.Contains(context.Request.Path.Value, StringComparer.Ordinal);
        int maxTokens = generates ? fields.MaxTokens ?? limits.CurrentValue.DefaultMaxTokens : 0;
        var cost = TokenCost.Of(body.Length, maxTokens, fields.N, maxModelLen);
        var (admission, reservation, retryAfter) = tokens.TryReserve(tenant, cost.Tokens);
        if (admission == Admission.NeverFits)
        {
            await OpenAiErrors.WriteAsync(context, ErrorCodes.TokenBudgetExceeded,
                $"This request may use up to {cost.Tokens} tokens (about {cost.Prompt} of prompt + {cost.Choices} × {cost.PerChoice} of completion"
                + (maxModelLen > 0 ? $", max_tokens clamped to the model's context of {maxModelLen}" : "")
                + $"), more than your tenant may spend in a minute ({tokens.LimitOf(tenant)}); lower max_tokens or n, or shorten the prompt.",
                fields.MaxTokensParam);
            return;
        }
        if (reservation is null)
        {
            await TenantRateLimits.WriteTooManyAsync(context, retryAfter, ErrorCodes.TokenRateLimited, "tokens");
            return;
        }

        var capture = new UsageCapture(context.Response.Body, () => context.Response.ContentType?.StartsWith("text/event-stream", StringComparison.OrdinalIgnoreCase) == true,
            !fields.IncludeUsage ? ClientUsage.None : fields.ContinuousUsage ? ClientUsage.Continuous : ClientUsage.Final);
        var responseBody = context.Response.Body;
        try
        {
            string canonical = model.ToString();
            body = Rewrite(body, fields, canonical == fields.Model ? null : canonical);
            context.Request.Body = new MemoryStream(body, writable: false);
            context.Request.ContentLength = body.Length;
            context.Request.Headers.Remove("Transfer-Encoding");
            context.Request.Headers.Authorization = default;
            context.Request.Headers.Remove("api-key");
            // Only the gateway speaks X-Serving-* to nodes: drop what the client sent, then add the tenant and the credential.
            foreach (var header in context.Request.Headers.Keys.Where(h => h.StartsWith(GatewayCredential.HeaderPrefix, StringComparison.OrdinalIgnoreCase)).ToList())
            {
                context.Request.Headers.Remove(header);
            }
            context.Request.Headers[TenantHeader] = tenant;
            if (routing.CurrentValue.NodeKey is { Length: > 0 } nodeKey) context.Request.Headers[GatewayCredential.Header] = nodeKey;
            // The spread key only scatters base-model requests over nodes: no need for a cryptographic generator.
            context.Features.Set(new RoutingRequest(model, tenant, (ulong)Random.Shared.NextInt64()));
            context.Response.Body = capture;
            await next();
            await capture.CompleteAsync(context.RequestAborted);
        }
        finally
        {
            context.Response.Body = responseBody;
            var (charged, outcome, used) = TokenSettlement.Decide(reservation.Tokens, fields.Stream, context, capture);
            tokens.Settle(reservation, charged);
            usage.Record(tenant, model.AdapterKey, outcome, used, charged);
            await capture.DisposeAsync();
        }
    }

    /// <summary>Whether a ready node serves <paramref name="baseModel"/>, and the largest context one publishes (0 when none does); null when none is ready.</summary>
    private int? ServedNow(string baseModel)
    {
        int? served = null;
        foreach (var n in view.Current.Nodes.Values)
        {
            if (n.Heartbeat.Ready && n.Heartbeat.Model == baseModel) served = Math.Max(served ?? 0, n.Heartbeat.MaxModelLen);
        }
        return served;
    }

    private static Task ModelNotFoundAsync(HttpContext context, string model) =>
        OpenAiErrors.WriteAsync(context, ErrorCodes.ModelNotFound, $"The model '{model}' does not exist or you do not have access to it.", "model");

    private static readonly byte[] StreamOptionsValue = "{\"include_usage\":true,\"continuous_usage_stats\":true}"u8.ToArray();

    /// <summary>
    /// The body for the node: <c>model</c> replaced by <paramref name="canonical"/> (when not null) and, for a stream,
    /// <c>stream_options</c> asking for usage in every chunk (its value replaced, or the member added first).
    /// </summary>
    private static byte[] Rewrite(byte[] body, RequestFields fields, string? canonical)
    {
        var edits = new List<(int Start, int Length, byte[] Value)>(2);
        if (canonical is not null) edits.Add((fields.ModelStart, fields.ModelLength, JsonSerializer.SerializeToUtf8Bytes(canonical)));
        if (fields.Stream)
        {
            edits.Add(fields.StreamOptions.Start >= 0
                ? (fields.StreamOptions.Start, fields.StreamOptions.Length, StreamOptionsValue)
                : (fields.BodyStart, 0, [.. "\"stream_options\":"u8, .. StreamOptionsValue, (byte)',']));
        }
        if (edits.Count == 0) return body;
        edits.Sort((a, b) => a.Start.CompareTo(b.Start));
        var result = new byte[body.Length + edits.Sum(e => e.Value.Length - e.Length)];
        int from = 0, to = 0;
        foreach (var (start, length, value) in edits)
        {
            body.AsSpan(from, start - from).CopyTo(result.AsSpan(to));
            to += start - from;
            value.CopyTo(result, to);
            to += value.Length;
            from = start + length;
        }
        body.AsSpan(from).CopyTo(result.AsSpan(to));
        return result;
    }

    /// <summary>
    /// The whole body, or null when it is longer than <paramref name="max"/>. With a Content-Length (what OpenAI clients
    /// send) it is read straight into one array of that size; chunked bodies go through a growing buffer.
    /// </summary>
    private static async Task<byte[]?> ReadBodyAsync(Stream stream, long? contentLength, long max, CancellationToken cancellationToken)
    {
        if (contentLength is { } length and <= int.MaxValue)
        {
            var exact = new byte[length];
            int filled = 0;
            while (filled < exact.Length)
            {
                int read = await stream.ReadAsync(exact.AsMemory(filled), cancellationToken);
                if (read == 0) break; // shorter than announced: Kestrel fails the request itself
                filled += read;
            }
            return filled == exact.Length ? exact : exact[..filled];
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(16 << 10);
        try
        {
            using var ms = new MemoryStream();
            int read;
            while ((read = await stream.ReadAsync(buffer, cancellationToken)) > 0)
            {
                if (ms.Length + read > max) return null;
                ms.Write(buffer, 0, read);
            }
            return ms.ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
