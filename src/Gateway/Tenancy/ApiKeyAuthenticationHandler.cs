using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;
using Serving.AdapterStore.Storage;
using Serving.Contracts.Errors;
using Serving.Gateway.Api;

namespace Serving.Gateway.Tenancy;

/// <summary>
/// Authenticates <c>Authorization: Bearer &lt;key&gt;</c> (or <c>api-key: &lt;key&gt;</c>) against <see cref="ApiKeyStore"/>.
/// The key itself is never logged; only its id.
/// </summary>
internal sealed partial class ApiKeyAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory loggerFactory, UrlEncoder encoder, ApiKeyStore keys, IOptions<GatewayOptions> gateway)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, loggerFactory, encoder)
{
    private const string FailureItem = "apikey.failure";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string? key = null;
        string auth = Request.Headers.Authorization.ToString();
        if (auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) key = auth["Bearer ".Length..].Trim();
        else if (Request.Headers.TryGetValue("api-key", out var h)) key = h.ToString().Trim();
        if (string.IsNullOrEmpty(key)) return AuthenticateResult.NoResult();

        ApiKeyRecord? record;
        try
        {
            record = await keys.VerifyAsync(key, Context.RequestAborted);
        }
        catch (StoreUnavailableException)
        {
            Context.Items[FailureItem] = "store";
            return AuthenticateResult.Fail("The key store is unreachable.");
        }
        if (record is null)
        {
            Context.Items[FailureItem] = "invalid";
            return AuthenticateResult.Fail("Invalid API key.");
        }
        var claims = new List<Claim> { new(ClaimTypes.Role, record.Role), new(TenancyPolicies.KeyIdClaim, record.KeyId) };
        if (record.Tenant.Length > 0) claims.Add(new Claim(TenancyPolicies.TenantClaim, record.Tenant));
        var identity = new ClaimsIdentity(claims, Scheme.Name, TenancyPolicies.KeyIdClaim, ClaimTypes.Role);
        return AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name));
    }

    protected override Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.Headers.WWWAuthenticate = "Bearer";
        return Context.Items[FailureItem] switch
        {
            "store" => OpenAiErrors.WriteAsync(Context, ErrorCodes.StoreUnavailable, "The key store is unreachable; retry shortly.", retryAfter: gateway.Value.RetryAfter),
            "invalid" => OpenAiErrors.WriteAsync(Context, ErrorCodes.InvalidApiKey, "Incorrect API key provided."),
            _ => OpenAiErrors.WriteAsync(Context, ErrorCodes.MissingApiKey, "No API key provided. Send 'Authorization: Bearer <key>'."),
        };
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties) =>
        OpenAiErrors.WriteAsync(Context, ErrorCodes.Forbidden, Context.User.IsInRole(ApiKeyRoles.Admin)
            ? "Admin keys manage tenants and keys; use a tenant key for this route."
            : "This route needs an admin key.");
}
