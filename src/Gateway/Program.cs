using Serving.Gateway;

// Defaults and services: store (Redis, or embedded Garnet), node registry view, tenancy, rate limits, YARP routing.
var builder = WebApplication.CreateBuilder(args);
builder.AddGateway();

// Build, then middleware and endpoints: /v1 (proxied + models + adapters + reward heads), /admin, /health, /metrics, /openapi, /scalar.
var app = builder.Build();
app.MapGateway();
app.Run();

/// <summary>Entry point (public for test hosts).</summary>
public partial class Program;
