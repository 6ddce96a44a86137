using Serving.Inference.Scheduling;

namespace Serving.Inference.Output;

/// <summary>Where a row's events go: the request's stream, or a buffer a strategy replays later (best-of-n).</summary>
public interface IGenerationSink
{
    /// <summary>Writes one event (called on the scheduler thread).</summary>
    void Write(in GenerationEvent e);
}

/// <summary>
/// Events held back until a strategy knows which row the client gets; <see cref="ReplayInto"/> writes them with their
/// choice index rewritten.
/// </summary>
public sealed class BufferedSink : IGenerationSink
{
    private readonly List<GenerationEvent> _events = [];

    /// <summary>Events written so far.</summary>
    public IReadOnlyList<GenerationEvent> Events => _events;

    public void Write(in GenerationEvent e) => _events.Add(e);

    /// <summary>Writes every buffered event to <paramref name="sink"/> as choice <paramref name="choice"/>.</summary>
    public void ReplayInto(IGenerationSink sink, int choice)
    {
        foreach (var e in _events) sink.Write(e with { Choice = choice });
    }
}
