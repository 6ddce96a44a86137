using Serving.Contracts.Models;

namespace Serving.Gateway.Routing;

/// <summary>What the routing policy needs about a request, set as an HttpContext feature before load balancing.</summary>
/// <param name="Model">The resolved model (adapter owner filled in).</param>
/// <param name="Tenant">Calling tenant.</param>
/// <param name="SpreadKey">Random per request: spreads base-model requests over equally good nodes.</param>
public sealed record RoutingRequest(ModelId Model, string Tenant, ulong SpreadKey);
