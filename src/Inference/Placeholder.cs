namespace Serving.Inference;
