using Serving.Inference.Node;

// Defaults: Serilog, options, metrics, health, registry heartbeats. Services: model, scheduler, adapters.
// Endpoints: OpenAI routes, node status, adapter pin/prefetch. (NodeApplication is shared with hosts that embed a node.)
var builder = WebApplication.CreateBuilder(args);
builder.AddNode();

var app = builder.Build();
app.MapNode();

app.Run();
