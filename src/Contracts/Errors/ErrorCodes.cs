namespace Serving.Contracts.Errors;

/// <summary>OpenAI's error <c>type</c> values the services use.</summary>
public static class ErrorTypes
{
    /// <summary>The request cannot be served as sent (4xx other than 403 and 429), as OpenAI types it.</summary>
    public const string InvalidRequest = "invalid_request_error";

    /// <summary>The key may not use this route (403).</summary>
    public const string Permission = "permission_error";

    /// <summary>A limit on requests was hit (429): OpenAI names the limited resource in <c>type</c>.</summary>
    public const string Requests = "requests";

    /// <summary>A limit on tokens was hit (429).</summary>
    public const string Tokens = "tokens";

    /// <summary>The service or what it depends on failed or is unavailable (5xx).</summary>
    public const string Server = "server_error";
}

/// <summary>One kind of refusal: the stable <c>code</c>, the HTTP status it is sent with and OpenAI's <c>type</c>.</summary>
/// <param name="Code">The code clients match on (null: a bad parameter value, named by <c>param</c>).</param>
/// <param name="Status">The HTTP status.</param>
/// <param name="Type">OpenAI's <c>type</c> (<see cref="ErrorTypes"/>).</param>
public sealed record ErrorCode(string? Code, int Status, string Type)
{
    /// <summary>The OpenAI envelope for this refusal.</summary>
    public OpenAIErrorBody Body(string message, string? param = null) => new(new OpenAIError(message, Type, param, Code));
}

/// <summary>
/// The one table of refusals of the node and the gateway: the same refusal carries the same status, <c>type</c> and
/// <c>code</c> whichever service sends it. Codes are the OpenAI API's own where it has one (<c>invalid_api_key</c>,
/// <c>model_not_found</c>, <c>rate_limit_exceeded</c>, <c>missing_required_parameter</c>), else ours in the same style.
/// The full table with who sends what: <c>docs/errors.md</c>.
/// </summary>
public static class ErrorCodes
{
    // ---- 400 ----

    /// <summary>A parameter has a value the service cannot take (OpenAI sends no code; <c>param</c> names the field).</summary>
    public static readonly ErrorCode InvalidParameter = new(null, 400, ErrorTypes.InvalidRequest);

    /// <summary>The body is not JSON of the expected shape.</summary>
    public static readonly ErrorCode InvalidJson = new("invalid_json", 400, ErrorTypes.InvalidRequest);

    /// <summary>A required field is absent (gateway: <c>model</c>).</summary>
    public static readonly ErrorCode MissingParameter = new("missing_required_parameter", 400, ErrorTypes.InvalidRequest);

    /// <summary>
    /// A request field the service knows but does not implement, and that would change the output (<c>functions</c>,
    /// <c>audio</c>, <c>modalities</c>, <c>prediction</c>, ...): refused rather than silently ignored; <c>param</c> names it (node).
    /// </summary>
    public static readonly ErrorCode UnsupportedParameter = new("unsupported_parameter", 400, ErrorTypes.InvalidRequest);

    /// <summary>A malformed <c>X-Serving-Tenant</c> header (node).</summary>
    public static readonly ErrorCode InvalidTenant = new("invalid_tenant", 400, ErrorTypes.InvalidRequest);

    /// <summary>A bare adapter name that both the caller's tenant and <c>public</c> have (node).</summary>
    public static readonly ErrorCode ModelAmbiguous = new("model_ambiguous", 400, ErrorTypes.InvalidRequest);

    /// <summary>An adapter that does not fit the node's base model (node).</summary>
    public static readonly ErrorCode AdapterIncompatible = new("adapter_incompatible", 400, ErrorTypes.InvalidRequest);

    /// <summary>A tenant id outside the allowed form (gateway admin API).</summary>
    public static readonly ErrorCode TenantInvalid = new("tenant_invalid", 400, ErrorTypes.InvalidRequest);

    /// <summary>
    /// A request whose token reservation (prompt + n × max_tokens, clamped to the model's context) exceeds what the
    /// tenant may spend in a minute, so waiting can never admit it (gateway).
    /// </summary>
    public static readonly ErrorCode TokenBudgetExceeded = new("token_budget_exceeded", 400, ErrorTypes.InvalidRequest);

    // ---- 401, 403 ----

    /// <summary>No API key was sent (gateway).</summary>
    public static readonly ErrorCode MissingApiKey = new("missing_api_key", 401, ErrorTypes.InvalidRequest);

    /// <summary>The API key is unknown or revoked (gateway; OpenAI's code and type).</summary>
    public static readonly ErrorCode InvalidApiKey = new("invalid_api_key", 401, ErrorTypes.InvalidRequest);

    /// <summary>A node configured with <c>Node:GatewayKey</c> got a request without the gateway's credential (node).</summary>
    public static readonly ErrorCode GatewayCredentialRequired = new("gateway_credential_required", 401, ErrorTypes.InvalidRequest);

    /// <summary>The key's role may not use the route (gateway).</summary>
    public static readonly ErrorCode Forbidden = new("forbidden", 403, ErrorTypes.Permission);

    // ---- 404 ----

    /// <summary>Unknown base model or adapter, or one the caller may not see (never 403, so nothing is confirmed).</summary>
    public static readonly ErrorCode ModelNotFound = new("model_not_found", 404, ErrorTypes.InvalidRequest);

    /// <summary>A route under <c>/v1</c> the service does not implement (<c>/v1/embeddings</c>, ...): node, gateway.</summary>
    public static readonly ErrorCode UnknownRoute = new("unknown_url", 404, ErrorTypes.InvalidRequest);

    /// <summary>Unpinning an adapter that is not pinned (node).</summary>
    public static readonly ErrorCode NotPinned = new("not_pinned", 404, ErrorTypes.InvalidRequest);

    /// <summary>A reward head that does not exist or that the caller may not see (node; like <see cref="ModelNotFound"/>).</summary>
    public static readonly ErrorCode RewardHeadNotFound = new("reward_head_not_found", 404, ErrorTypes.InvalidRequest);

    /// <summary>No such tenant (gateway admin API).</summary>
    public static readonly ErrorCode TenantNotFound = new("tenant_not_found", 404, ErrorTypes.InvalidRequest);

    /// <summary>No such key of the tenant (gateway admin API).</summary>
    public static readonly ErrorCode KeyNotFound = new("key_not_found", 404, ErrorTypes.InvalidRequest);

    // ---- 405 ----

    /// <summary>A route under <c>/v1</c> called with a method it does not take (<c>GET /v1/chat/completions</c>): node, gateway.</summary>
    public static readonly ErrorCode MethodNotAllowed = new("method_not_allowed", 405, ErrorTypes.InvalidRequest);

    // ---- 408 ----

    /// <summary>The client sent its body more slowly than Kestrel's minimum data rate (<c>MinRequestBodyDataRate</c>).</summary>
    public static readonly ErrorCode RequestTimeout = new("request_timeout", 408, ErrorTypes.InvalidRequest);

    // ---- 413, 422, 429, 499 ----

    /// <summary>The body is larger than the service reads (gateway: its routing limit; node and gateway: Kestrel's MaxRequestBodySize).</summary>
    public static readonly ErrorCode RequestTooLarge = new("request_too_large", 413, ErrorTypes.InvalidRequest);

    /// <summary>
    /// A well-formed request this model cannot serve as asked: early exit on a node started without it, or a criterion
    /// whose trained parts (an exit probe) the model lacks (node).
    /// </summary>
    public static readonly ErrorCode FeatureUnavailable = new("feature_unavailable", 422, ErrorTypes.InvalidRequest);

    /// <summary>
    /// A reward head the caller may use that was made for another base model, or whose files do not fit the model the
    /// node serves under that id (node). The upload API refuses such a head with <c>head_base_mismatch</c>, also 422.
    /// </summary>
    public static readonly ErrorCode RewardHeadIncompatible = new("reward_head_incompatible", 422, ErrorTypes.InvalidRequest);

    /// <summary>
    /// Too many requests: the tenant's request rate (gateway) or the node's full queue. <c>Retry-After</c> says when to
    /// come back; the message says which limit.
    /// </summary>
    public static readonly ErrorCode RequestRateLimited = new("rate_limit_exceeded", 429, ErrorTypes.Requests);

    /// <summary>The tenant's token budget per minute is spent (gateway).</summary>
    public static readonly ErrorCode TokenRateLimited = new("rate_limit_exceeded", 429, ErrorTypes.Tokens);

    /// <summary>The client went away before the answer (gateway; nginx's 499, rarely seen by anyone).</summary>
    public static readonly ErrorCode ClientClosed = new("client_closed", 499, ErrorTypes.InvalidRequest);

    // ---- 5xx ----

    /// <summary>A stored adapter failed its checksums (adapter API).</summary>
    public static readonly ErrorCode StoreCorrupt = new("store_corrupt", 500, ErrorTypes.Server);

    /// <summary>A node failed while handling the request; not retried, it may have started (gateway).</summary>
    public static readonly ErrorCode UpstreamError = new("upstream_error", 502, ErrorTypes.Server);

    /// <summary>A node stopped in the middle of a streamed answer (gateway, as the stream's last event).</summary>
    public static readonly ErrorCode UpstreamDisconnected = new("upstream_disconnected", 502, ErrorTypes.Server);

    /// <summary>The store (Redis) is unreachable; nothing was changed. Comes with <c>Retry-After</c>.</summary>
    public static readonly ErrorCode StoreUnavailable = new("store_unavailable", 503, ErrorTypes.Server);

    /// <summary>An adapter cannot be read from the store (node).</summary>
    public static readonly ErrorCode AdapterUnavailable = new("adapter_unavailable", 503, ErrorTypes.Server);

    /// <summary>A reward head cannot be read from the store (node).</summary>
    public static readonly ErrorCode RewardHeadUnavailable = new("reward_head_unavailable", 503, ErrorTypes.Server);

    /// <summary>No node serving the model is ready (gateway). Comes with <c>Retry-After</c>.</summary>
    public static readonly ErrorCode NoNodeAvailable = new("no_node_available", 503, ErrorTypes.Server);

    /// <summary>The node is shutting down and takes nothing new (node). Comes with <c>Retry-After</c>.</summary>
    public static readonly ErrorCode Draining = new("draining", 503, ErrorTypes.Server);

    /// <summary>A node did not answer, or fell silent in a stream, for too long (gateway).</summary>
    public static readonly ErrorCode UpstreamTimeout = new("upstream_timeout", 504, ErrorTypes.Server);

    /// <summary>Every row of the table, in the order above.</summary>
    public static IReadOnlyList<ErrorCode> All { get; } =
    [
        InvalidParameter, InvalidJson, MissingParameter, InvalidTenant, ModelAmbiguous, AdapterIncompatible, TenantInvalid, TokenBudgetExceeded,
        MissingApiKey, InvalidApiKey, Forbidden,
        ModelNotFound, NotPinned, RewardHeadNotFound, TenantNotFound, KeyNotFound,
        RequestTimeout, RequestTooLarge, FeatureUnavailable, RewardHeadIncompatible, RequestRateLimited, TokenRateLimited, ClientClosed,
        StoreCorrupt, UpstreamError, UpstreamDisconnected, StoreUnavailable, AdapterUnavailable, RewardHeadUnavailable, NoNodeAvailable, Draining, UpstreamTimeout,
    ];
}

/// <summary>
/// A request the service refuses, as one row of <see cref="ErrorCodes"/> with a message and the field at fault. Each
/// host's exception handler turns it into its error body (OpenAI's on the OpenAI routes, ProblemDetails elsewhere).
/// </summary>
public sealed class RequestRefusedException(ErrorCode error, string message, string? param = null) : Exception(message)
{
    /// <summary>The refusal's row of the table.</summary>
    public ErrorCode Error { get; } = error;

    /// <summary>The request field at fault, null when none is.</summary>
    public string? Param { get; } = param;

    /// <summary>The OpenAI envelope for this refusal.</summary>
    public OpenAIErrorBody Body => Error.Body(Message, Param);
}
