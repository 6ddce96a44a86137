using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Serving.Standalone.Tests.Infrastructure;

namespace Serving.Standalone.Tests.Telemetry;

/// <summary>
/// Log event ids are unique in the one-process host (gateway, node and store log into one sink there), and each
/// assembly keeps to its range in the table of <c>docs/telemetry.md</c>.
/// </summary>
public sealed partial class EventIdTests
{
    private sealed record Message(string Assembly, string Method, int Id);

    /// <summary>Every method with <see cref="LoggerMessageAttribute"/> in the host's assemblies, nested and private types included.</summary>
    private static List<Message> Messages() =>
        [.. from a in HostAssemblies.All
            from t in a.GetTypes()
            from m in t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly)
            let attribute = m.GetCustomAttribute<LoggerMessageAttribute>()
            where attribute is not null
            select new Message(a.GetName().Name!, $"{t.FullName}.{m.Name}", attribute.EventId)];

    /// <summary>The rows <c>| `Serving.X` | 1000–1999 |</c> of the event-id table in docs/telemetry.md.</summary>
    private static Dictionary<string, (int From, int To)> Ranges()
    {
        var text = File.ReadAllText(Path.Combine(HostAssemblies.RepoRoot, "docs", "telemetry.md"));
        return RangeRow().Matches(text).ToDictionary(m => m.Groups[1].Value, m => (int.Parse(m.Groups[2].Value), int.Parse(m.Groups[3].Value)));
    }

    [Fact]
    public void LoggerMessages_InTheOneProcessHost_HaveDistinctEventIds()
    {
        var messages = Messages();
        // The reflection must see the logs of every part, or this test could pass on nothing.
        foreach (var owner in new[] { "Serving.Gateway", "Serving.Inference.Node", "Serving.AdapterStore", "Serving.Standalone" })
            Assert.Contains(messages, m => m.Assembly == owner);

        Assert.All(messages, m => Assert.True(m.Id > 0, $"{m.Method} has no event id"));
        var clashes = messages.GroupBy(m => m.Id).Where(g => g.Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(m => m.Method))}").ToList();
        Assert.True(clashes.Count == 0, "Event ids used twice:\n" + string.Join("\n", clashes));
    }

    [Fact]
    public void LoggerMessages_EachAssembly_StaysInItsRangeOfTheTelemetryTable()
    {
        var ranges = Ranges();
        Assert.True(ranges.Count >= 4, "docs/telemetry.md lists no event-id ranges");
        var ordered = ranges.OrderBy(r => r.Value.From).ToList();
        for (var i = 1; i < ordered.Count; i++)
            Assert.True(ordered[i].Value.From > ordered[i - 1].Value.To, $"ranges of {ordered[i - 1].Key} and {ordered[i].Key} overlap");

        foreach (var m in Messages())
        {
            Assert.True(ranges.TryGetValue(m.Assembly, out var range), $"{m.Assembly} logs ({m.Method}) but has no row in docs/telemetry.md");
            Assert.True(m.Id >= range.From && m.Id <= range.To, $"{m.Method}: event id {m.Id} is outside {m.Assembly}'s range {range.From}–{range.To}");
        }
    }

    [GeneratedRegex(@"^\| `(Serving\.[A-Za-z.]+)` \| (\d+)–(\d+) \|", RegexOptions.Multiline)]
    private static partial Regex RangeRow();
}
