using System.Collections;
using System.Reflection;
using Serving.AdapterStore.Storage;
using Serving.Gateway;
using Serving.Inference.Node.Hosting;
using Serving.ServiceDefaults.Telemetry;

namespace Serving.Deploy.Tests;

/// <summary>
/// Resolves a configuration key (<c>Node:Redis</c>, or the environment form <c>Node__Redis</c>) to a property of the
/// options class that binds its section, the way the configuration binder walks it: case-insensitive property names,
/// any key under a dictionary, an index under a list, nested classes. Keys the framework itself reads (listen URLs)
/// are accepted by name.
/// </summary>
internal static class ConfigKeys
{
    /// <summary>Section → the options classes bound from it (discovered from their <c>SectionName</c> constants, plus the node's two).</summary>
    private static readonly Dictionary<string, List<Type>> Sections = Discover();

    private static Dictionary<string, List<Type>> Discover()
    {
        var sections = new Dictionary<string, List<Type>>(StringComparer.OrdinalIgnoreCase);
        void Add(string section, Type type)
        {
            if (!sections.TryGetValue(section, out var list)) sections[section] = list = [];
            list.Add(type);
        }
        foreach (var assembly in new[] { typeof(GatewayOptions).Assembly, typeof(AdapterStoreOptions).Assembly, typeof(TelemetryOptions).Assembly })
        {
            foreach (var type in assembly.GetTypes())
            {
                if (type.GetField("SectionName", BindingFlags.Public | BindingFlags.Static) is { IsLiteral: true } f && f.GetValue(null) is string s) Add(s, type);
            }
        }
        // Both bound from "Node" (NodeOptions.Section) by the node's hosting code.
        Add(NodeOptions.Section, typeof(NodeOptions));
        Add(NodeOptions.Section, typeof(NodeOptions).Assembly.GetType("Serving.Inference.Node.Registry.NodeRegistrationOptions", throwOnError: true)!);
        return sections;
    }

    /// <summary>Sections that are bound to options classes (for the tests' own sanity check).</summary>
    public static IReadOnlyCollection<string> KnownSections => Sections.Keys;

    /// <summary>Null when <paramref name="key"/> is a setting the services read; otherwise why not.</summary>
    public static string? Problem(string key)
    {
        string k = key.Replace("__", ":", StringComparison.Ordinal);
        if (IsFrameworkKey(k)) return null;
        var segments = k.Split(':');
        // The longest section that prefixes the key decides (Gateway:Routing before Gateway).
        for (int n = segments.Length - 1; n >= 1; n--)
        {
            string section = string.Join(':', segments[..n]);
            if (!Sections.TryGetValue(section, out var types)) continue;
            var rest = segments[n..];
            var problems = types.Select(t => Walk(t, rest)).ToList();
            return problems.Any(p => p is null) ? null : $"{key}: {problems.First()} (section {section} → {string.Join(", ", types.Select(t => t.Name))})";
        }
        return $"{key}: no options class binds any prefix of it";
    }

    // Logging:* and Telemetry:* are options classes of ServiceDefaults (LoggingOptions, TelemetryOptions): resolved like
    // any other section. The Serilog section is read by nothing, so its keys are reported.
    private static bool IsFrameworkKey(string k) =>
        k is "ASPNETCORE_URLS" or "ASPNETCORE_HTTP_PORTS" or "urls" or "DOTNET_gcServer";

    private static string? Walk(Type type, string[] path)
    {
        var current = type;
        for (int i = 0; i < path.Length; i++)
        {
            string segment = path[i];
            if (Dictionary(current) is { } valueType)
            {
                current = valueType;
                continue;
            }
            if (Element(current) is { } elementType)
            {
                if (!int.TryParse(segment, out _)) return $"'{segment}' is not an index of a list";
                current = elementType;
                continue;
            }
            var property = current.GetProperty(segment, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (property is null || property.SetMethod is null && Dictionary(property.PropertyType) is null && Element(property.PropertyType) is null)
                return $"{current.Name} has no settable property '{segment}'";
            current = property.PropertyType;
        }
        return IsLeaf(current) ? null : $"'{string.Join(':', path)}' names {current.Name}, not a value";
    }

    private static bool IsLeaf(Type t)
    {
        t = Nullable.GetUnderlyingType(t) ?? t;
        return t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(decimal) || t == typeof(TimeSpan) || t == typeof(Uri) || t == typeof(DateTimeOffset);
    }

    private static Type? Dictionary(Type t) =>
        t.IsGenericType && t.GetGenericTypeDefinition() is var d && (d == typeof(Dictionary<,>) || d == typeof(IDictionary<,>) || d == typeof(IReadOnlyDictionary<,>))
            ? t.GetGenericArguments()[1]
            : null;

    private static Type? Element(Type t) =>
        t.IsArray ? t.GetElementType()
        : t.IsGenericType && typeof(IEnumerable).IsAssignableFrom(t) && t != typeof(string) && Dictionary(t) is null ? t.GetGenericArguments()[0]
        : null;
}
