using Serving.Inference.Node;

// Defaults: Serilog, options, metrics, health, registry heartbeats. Services: model, scheduler.
// Endpoints: OpenAI routes, node status. (NodeApplication is shared with hosts that embed a node.)
var builder = WebApplication.CreateBuilder(args);
builder.AddNode();

var app = builder.Build();
app.MapNode();

app.Run();
