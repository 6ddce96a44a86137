namespace Serving.Inference.Tests;
