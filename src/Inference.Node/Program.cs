using Serving.Inference.Node.Adapters;
using Serving.Inference.Node.Hosting;
using Serving.Inference.Node.OpenAI;
using Serving.Inference.Node.Status;

// Defaults: Serilog, options, metrics, health. Services: model, scheduler. Endpoints: OpenAI routes, node status, adapter pin/prefetch.
var builder = WebApplication.CreateBuilder(args);
builder.AddNodeDefaults();
builder.Services.AddInferenceNode();

var app = builder.Build();
app.MapNodeDefaults();
app.MapOpenAIApi();
app.MapNodeStatusApi();
app.MapAdapterAdminApi();

app.Run();
