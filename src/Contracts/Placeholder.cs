namespace Serving.Contracts;
