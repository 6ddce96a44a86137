using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Serving.Gateway;
using Serving.Inference.Node;
using Serving.Standalone.Tests.Infrastructure;

namespace Serving.Standalone.Tests.Configuration;

/// <summary>
/// One way to configure: every options type a host binds has an <see cref="IValidateOptions{TOptions}"/> of the project
/// and is validated at start (<c>ValidateOnStart</c>); no DataAnnotations; options types that are never bound are listed
/// here with the reason.
/// </summary>
public sealed class OptionsValidationTests
{
    /// <summary>Options types built by code from already validated settings or from a request, never bound from configuration.</summary>
    private static readonly Dictionary<string, string> BuiltByCode = new(StringComparer.Ordinal)
    {
        ["Serving.Inference.Scheduling.SchedulerOptions"] = "built by the node's ModelHost from NodeOptions",
        ["Serving.Inference.Runtime.RuntimeOptions"] = "built by the node's ModelHost from NodeOptions",
        ["Serving.Inference.Chat.ChatRenderOptions"] = "per chat request, from its fields (add_generation_prompt, continue_final_message, chat_template_kwargs, tools)",
        ["Serving.AdapterStore.Compression.CodecOptions"] = "per upload, from the request's form fields (400 when invalid)",
        ["Serving.AdapterStore.Compression.ComPeftOptions"] = "per upload, from the request's form fields (400 when invalid)",
        ["Serving.AdapterStore.Compression.QuantOptions"] = "per upload, from the request's form fields (400 when invalid)",
        ["Serving.AdapterStore.Compression.AutoOptions"] = "per upload, from the request's form fields (400 when invalid)",
    };

    private sealed record HostServices(string Name, IServiceCollection Services);

    private static IEnumerable<HostServices> Hosts(IDictionary<string, string?>? settings = null)
    {
        var gateway = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing", ContentRootPath = AppContext.BaseDirectory });
        gateway.Configuration.AddInMemoryCollection(settings ?? new Dictionary<string, string?>());
        gateway.AddGateway();
        yield return new HostServices("gateway", gateway.Services);

        var node = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing", ContentRootPath = AppContext.BaseDirectory });
        node.Configuration.AddInMemoryCollection(settings ?? new Dictionary<string, string?>());
        node.AddNode();
        yield return new HostServices("node", node.Services);

        var standalone = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { EnvironmentName = "Testing", ContentRootPath = AppContext.BaseDirectory });
        standalone.Configuration.AddInMemoryCollection(settings ?? new Dictionary<string, string?>());
        standalone.AddStandalone();
        yield return new HostServices("standalone", standalone.Services);
    }

    private static bool IsProjectType(Type t) => t.Assembly.GetName().Name!.StartsWith("Serving.", StringComparison.Ordinal);

    private static Type? OptionsTypeOf(ServiceDescriptor d, params Type[] definitions) =>
        d.ServiceType.IsGenericType && definitions.Contains(d.ServiceType.GetGenericTypeDefinition()) ? d.ServiceType.GetGenericArguments()[0] : null;

    /// <summary>Options types the host configures (Bind, BindConfiguration, Configure).</summary>
    private static HashSet<Type> Configured(IServiceCollection services) =>
        [.. services.Select(d => OptionsTypeOf(d, typeof(IConfigureOptions<>), typeof(IPostConfigureOptions<>), typeof(IOptionsChangeTokenSource<>)))
            .OfType<Type>().Where(IsProjectType)];

    /// <summary>Options types with a validator of the project registered (the DataAnnotations adapter does not count).</summary>
    private static HashSet<Type> Validated(IServiceCollection services) =>
        [.. services.Where(d => OptionsTypeOf(d, typeof(IValidateOptions<>)) is { } t && IsProjectType(t) && ValidatorType(d) is { } v && IsProjectType(v))
            .Select(d => OptionsTypeOf(d, typeof(IValidateOptions<>))!)];

    private static Type? ValidatorType(ServiceDescriptor d) => d.ImplementationType ?? d.ImplementationInstance?.GetType();

    /// <summary>
    /// Options types validated at start: <c>ValidateOnStart</c> registers, per type, a configuration of the (internal)
    /// StartupValidatorOptions that depends on <c>IOptionsMonitor&lt;T&gt;</c>; resolving them reveals each T.
    /// </summary>
    private static HashSet<Type> ValidatedOnStart(IServiceCollection services)
    {
        var startupOptions = typeof(IStartupValidator).Assembly.GetType("Microsoft.Extensions.Options.StartupValidatorOptions", throwOnError: true)!;
        using var provider = services.BuildServiceProvider();
        var result = new HashSet<Type>();
        foreach (var configure in provider.GetServices(typeof(IConfigureOptions<>).MakeGenericType(startupOptions)))
        {
            var type = configure!.GetType();
            if (!type.IsGenericType || type.GetGenericTypeDefinition() != typeof(ConfigureNamedOptions<,>)) continue;
            var dependency = type.GetGenericArguments()[1];
            if (dependency.IsGenericType && dependency.GetGenericTypeDefinition() == typeof(IOptionsMonitor<>)) result.Add(dependency.GetGenericArguments()[0]);
        }
        return result;
    }

    [Fact]
    public void EveryHost_EachBoundOptionsType_HasItsValidatorAndIsValidatedAtStart()
    {
        var expected = new Dictionary<string, string[]>
        {
            ["gateway"] = ["GatewayOptions", "RoutingOptions", "TenancyOptions", "RateLimitOptions", "ResilienceOptions", "AdapterStoreOptions", "AdapterApiOptions"],
            ["node"] = ["NodeOptions", "NodeRegistrationOptions"],
            ["standalone"] = ["StandaloneOptions"],
        };
        foreach (var host in Hosts())
        {
            var configured = Configured(host.Services);
            // The reflection must see what the host binds, or this test could pass on nothing.
            foreach (var name in expected[host.Name]) Assert.Contains(configured, t => t.Name == name);

            var validated = Validated(host.Services);
            var onStart = ValidatedOnStart(host.Services);
            foreach (var t in configured)
            {
                Assert.True(validated.Contains(t), $"{host.Name}: {t.FullName} is bound without an IValidateOptions<{t.Name}> of the project");
                Assert.True(onStart.Contains(t), $"{host.Name}: {t.FullName} is not validated at start (ValidateOnStart)");
            }
            Assert.DoesNotContain(host.Services, d => ValidatorType(d) is { IsGenericType: true } v && v.GetGenericTypeDefinition() == typeof(DataAnnotationValidateOptions<>));
        }
    }

    [Fact]
    public void OptionsTypes_InTheHostAssemblies_AreBoundWithValidationOrBuiltByCode()
    {
        var bound = Hosts().SelectMany(h => Configured(h.Services)).ToHashSet();
        var optionsTypes = HostAssemblies.All.SelectMany(a => a.GetTypes())
            .Where(t => t.IsClass && !t.IsAbstract && t.Name.EndsWith("Options", StringComparison.Ordinal) && !t.Name.Contains('<'))
            .ToList();
        Assert.Contains(optionsTypes, t => t.Name == "NodeOptions");
        foreach (var t in optionsTypes)
        {
            Assert.True(bound.Contains(t) || BuiltByCode.ContainsKey(t.FullName!),
                $"{t.FullName} is neither bound by a host (with its validator, at start) nor listed as built by code in this test");
        }
    }

    [Fact]
    public void StartupValidation_OutOfRangeOrRenamedSettings_FailWithTheKeyNamed()
    {
        var gateway = Hosts(new Dictionary<string, string?> { ["Gateway:Routing:RefreshInterval"] = "00:00:00" }).First();
        using (var provider = gateway.Services.BuildServiceProvider())
        {
            var e = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
            Assert.Contains("Gateway:Routing:RefreshInterval", e.Message);
        }

        var model = Directory.CreateTempSubdirectory("options-test-").FullName;
        try
        {
            var node = Hosts(new Dictionary<string, string?> { ["Node:ModelPath"] = model, ["Node:ShutdownDrainSeconds"] = "5" }).ElementAt(1);
            using (var provider = node.Services.BuildServiceProvider())
            {
                var e = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
                Assert.Contains("Node:ShutdownDrainSeconds was renamed Node:ShutdownDrain", e.Message);
            }
            var good = Hosts(new Dictionary<string, string?> { ["Node:ModelPath"] = model, ["Node:ShutdownDrain"] = "00:00:05" }).ElementAt(1);
            using (var provider = good.Services.BuildServiceProvider())
            {
                provider.GetRequiredService<IStartupValidator>().Validate();
                Assert.Equal(TimeSpan.FromSeconds(5), provider.GetRequiredService<IOptions<Serving.Inference.Node.Hosting.NodeOptions>>().Value.ShutdownDrain);
            }
        }
        finally
        {
            Directory.Delete(model);
        }
    }
}
