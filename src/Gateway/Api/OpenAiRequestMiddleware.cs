using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Serving.Contracts.Errors;
using Serving.Contracts.Models;
using Serving.Contracts.Security;
using Serving.Gateway.RateLimiting;
using Serving.Gateway.Routing;
using Serving.Gateway.Tenancy;

namespace Serving.Gateway.Api;

/// <summary>The fields of an OpenAI request body the gateway needs.</summary>
/// <param name="Model">The <c>model</c> string.</param>
/// <param name="ModelStart">Byte offset of the model's JSON string token (including its quote).</param>
/// <param name="ModelLength">Byte length of that token (quotes included).</param>
/// <param name="MaxTokens">max_tokens or max_completion_tokens, null when absent.</param>
/// <param name="N">n, 1 when absent.</param>
internal readonly record struct RequestFields(string? Model, int ModelStart, int ModelLength, int? MaxTokens, int N)
{
    /// <summary>Reads top-level fields; throws <see cref="JsonException"/> for malformed JSON or a non-object.</summary>
    public static RequestFields Parse(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 64 });
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw new JsonException("The body must be a JSON object.");
        string? model = null;
        int start = 0, length = 0, n = 1;
        int? maxTokens = null;
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == 0) break;
            if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1)
            {
                continue;
            }
            if (reader.ValueTextEquals("model"u8))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.String) throw new JsonException("'model' must be a string.");
                model = reader.GetString();
                start = (int)reader.TokenStartIndex;
                length = (int)(reader.BytesConsumed - reader.TokenStartIndex);
            }
            else if (reader.ValueTextEquals("max_tokens"u8) || reader.ValueTextEquals("max_completion_tokens"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int m)) maxTokens = m;
            }
            else if (reader.ValueTextEquals("n"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out int v) && v > 0) n = v;
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
        return new RequestFields(model, start, length, maxTokens, n);
    }
}

/// <summary>
/// First step of the proxy pipeline for the OpenAI routes: reads the body (bounded), resolves <c>model</c> against
/// the caller's tenant (another tenant's adapter is a 404), charges the token budget, rewrites <c>model</c> to its
/// canonical form <c>base:tenant/adapter</c> for the node, strips the caller's key, and hands the routing policy a
/// <see cref="RoutingRequest"/>. Every other field (OpenAI's and the node's extensions: <c>reward_head</c>,
/// <c>return_token_rewards</c>, <c>alignment</c>, <c>early_exit</c>, …) reaches the node byte for byte: only the
/// <c>model</c> token is spliced. After the response, the node's <c>usage.generated_tokens</c> settles the token charge
/// (<see cref="TokenBudget.Settle"/>).
/// </summary>
internal sealed class OpenAiRequestMiddleware(
    INodeView view, AdapterVisibility visibility, TokenBudget tokens, IOptionsMonitor<RoutingOptions> routing,
    IOptionsMonitor<RateLimitOptions> limits, IOptions<GatewayOptions> gateway)
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

        RequestFields fields;
        try
        {
            fields = RequestFields.Parse(body);
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
        if (!ServedNow(model.BaseModel))
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

        int maxTokens = fields.MaxTokens ?? limits.CurrentValue.DefaultMaxTokens;
        int cost = TokenBudget.Estimate(body.Length, maxTokens, fields.N);
        var (ok, retryAfter) = tokens.TryTake(tenant, cost);
        if (!ok)
        {
            await TenantRateLimits.WriteTooManyAsync(context, retryAfter, ErrorCodes.TokenRateLimited, "tokens");
            return;
        }

        string canonical = model.ToString();
        if (canonical != fields.Model) body = Splice(body, fields, canonical);
        context.Request.Body = new MemoryStream(body, writable: false);
        context.Request.ContentLength = body.Length;
        context.Request.Headers.Remove("Transfer-Encoding");
        context.Request.Headers.Authorization = default;
        context.Request.Headers.Remove("api-key");
        // Only the gateway speaks X-Serving-* to nodes: drop what the client sent, then add the tenant and the credential.
        foreach (var header in context.Request.Headers.Keys.Where(h => h.StartsWith(GatewayCredential.HeaderPrefix, StringComparison.OrdinalIgnoreCase)).ToList())
            context.Request.Headers.Remove(header);
        context.Request.Headers[TenantHeader] = tenant;
        if (routing.CurrentValue.NodeKey is { Length: > 0 } nodeKey) context.Request.Headers[GatewayCredential.Header] = nodeKey;
        // The spread key only scatters base-model requests over nodes: no need for a cryptographic generator.
        context.Features.Set(new RoutingRequest(model, tenant, (ulong)Random.Shared.NextInt64()));

        // What the node reports generating (usage.generated_tokens) settles the charge upward when it exceeds max_tokens × n.
        var tap = new GeneratedTokensTap(context.Response.Body);
        context.Response.Body = tap;
        await next();
        if (tap.GeneratedTokens is { } generated) tokens.Settle(tenant, (long)Math.Max(0, maxTokens) * fields.N, generated);
    }

    private bool ServedNow(string baseModel)
    {
        foreach (var n in view.Current.Nodes.Values)
        {
            if (n.Heartbeat.Ready && n.Heartbeat.Model == baseModel) return true;
        }
        return false;
    }

    private static Task ModelNotFoundAsync(HttpContext context, string model) =>
        OpenAiErrors.WriteAsync(context, ErrorCodes.ModelNotFound, $"The model '{model}' does not exist or you do not have access to it.", "model");

    private static byte[] Splice(byte[] body, RequestFields fields, string canonical)
    {
        byte[] value = JsonSerializer.SerializeToUtf8Bytes(canonical);
        var result = new byte[body.Length - fields.ModelLength + value.Length];
        body.AsSpan(0, fields.ModelStart).CopyTo(result);
        value.CopyTo(result, fields.ModelStart);
        body.AsSpan(fields.ModelStart + fields.ModelLength).CopyTo(result.AsSpan(fields.ModelStart + value.Length));
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
