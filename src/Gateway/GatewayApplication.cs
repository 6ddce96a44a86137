using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Scalar.AspNetCore;
using Serving.AdapterStore;
using Serving.AdapterStore.Api;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Registry;
using Serving.Checkpoints;
using Serving.Contracts.Registry;
using Serving.Gateway.Api;
using Serving.Gateway.RateLimiting;
using Serving.Gateway.Resilience;
using Serving.Gateway.Routing;
using Serving.Gateway.Telemetry;
using Serving.Gateway.Tenancy;
using Serving.ServiceDefaults;
using Serving.ServiceDefaults.Telemetry;
using StackExchange.Redis;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.LoadBalancing;

namespace Serving.Gateway;

/// <summary>The gateway's composition: services, middleware order and endpoints, used by Program.cs and by tests.</summary>
public static class GatewayApplication
{
    /// <summary>Registers every gateway service, options bound from configuration and validated at start.</summary>
    public static IHostApplicationBuilder AddGateway(this IHostApplicationBuilder builder)
    {
        var services = builder.Services;
        // Serilog, traces (server spans continue a client's traceparent; YARP's forward and its HttpClient span send it
        // on to the node), metrics for /metrics, OTLP when configured.
        builder.AddServiceDefaults(new ServiceTelemetry(GatewayMetrics.ServiceName,
            Meters: [GatewayMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "System.Net.Http"],
            ActivitySources: [GatewayMetrics.YarpActivitySource]));
        // Options: bound from configuration, checked by their IValidateOptions at start (one way, everywhere).
        services.AddOptions<GatewayOptions>().BindConfiguration(GatewayOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayOptions>, GatewayOptionsValidator>();
        services.AddOptions<RoutingOptions>().BindConfiguration(RoutingOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<RoutingOptions>, RoutingOptionsValidator>();
        services.AddOptions<TenancyOptions>().BindConfiguration(TenancyOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<TenancyOptions>, TenancyOptionsValidator>();
        services.AddOptions<RateLimitOptions>().BindConfiguration(RateLimitOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<RateLimitOptions>, RateLimitOptionsValidator>();
        services.AddOptions<ResilienceOptions>().BindConfiguration(ResilienceOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ResilienceOptions>, ResilienceOptionsValidator>();
        services.TryAddSingleton(TimeProvider.System);
        services.AddHttpContextAccessor();
        services.AddProblemDetails();
        services.AddExceptionHandler<GatewayExceptionHandler>();

        // Store: adapters, Redis connection (embedded Garnet when none is configured); the tenant comes from the key.
        services.TryAddSingleton<IBaseModelCatalog>(sp => BaseModels(sp.GetRequiredService<IOptions<GatewayOptions>>().Value));
        services.AddScoped<ITenantContext, HttpTenantContext>();
        services.AddAdapterStore(builder.Configuration);

        // Tenancy.
        services.TryAddSingleton<ApiKeyStore>();
        services.TryAddSingleton<AdapterVisibility>();
        services.AddHostedService<AdapterEventsListener>();
        services.AddAuthentication(TenancyPolicies.Scheme)
            .AddScheme<AuthenticationSchemeOptions, ApiKeyAuthenticationHandler>(TenancyPolicies.Scheme, null);
        services.AddAuthorizationBuilder()
            .AddPolicy(TenancyPolicies.Tenant, p => p.RequireAuthenticatedUser().RequireRole(ApiKeyRoles.Tenant).RequireClaim(TenancyPolicies.TenantClaim))
            .AddPolicy(TenancyPolicies.Admin, p => p.RequireAuthenticatedUser().RequireRole(ApiKeyRoles.Admin));
        services.AddTenantRateLimits();

        // Routing: registry view → YARP config; adapter-aware policy; guarded forwarder; retry before reaching a node.
        services.TryAddSingleton(sp => new NodeRegistry(sp.GetRequiredService<IConnectionMultiplexer>(),
            new RegistryKeys(sp.GetRequiredService<IOptions<RoutingOptions>>().Value.RegistryPrefix), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<RegistryWatcher>();
        services.TryAddSingleton<INodeView>(sp => sp.GetRequiredService<RegistryWatcher>());
        services.AddHostedService(sp => sp.GetRequiredService<RegistryWatcher>());
        services.TryAddSingleton<GatewayMetrics>();
        services.TryAddSingleton<OpenAiRequestMiddleware>();
        services.TryAddSingleton<UpstreamRetryMiddleware>();
        services.TryAddSingleton<IProxyConfigProvider, RegistryProxyConfigProvider>();
        services.TryAddSingleton<IForwarderHttpClientFactory, GuardedForwarderHttpClientFactory>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingPolicy, AdapterAffinityPolicy>());
        services.AddReverseProxy().AddTransforms(InternalHeaders.Hide);

        // Surface.
        services.AddHealthChecks().AddCheck<NodesHealthCheck>(NodesHealthCheck.Name, tags: [HealthEndpoints.ReadyTag]);
        services.AddOpenApi(o => o.AddDocumentTransformer<OpenAiRoutesDocument>().AddDocumentTransformer<TokenizerRoutesDocument>());
        return builder;
    }

    /// <summary>Middleware in order, then every endpoint.</summary>
    public static WebApplication MapGateway(this WebApplication app)
    {
        app.UseRequestIds(); // first: every response carries X-Request-Id; the node gets the same id (forwarded header)
        app.UseExceptionHandler();
        app.UseRouting();
        app.UseAuthentication();
        app.UseAuthorization();
        app.UseRateLimiter();

        var metrics = app.Services.GetRequiredService<GatewayMetrics>();
        metrics.NodeCount = () => app.Services.GetRequiredService<INodeView>().Current.Nodes.Count;
        metrics.HealthyNodeCount = () =>
            app.Services.GetRequiredService<Yarp.ReverseProxy.IProxyStateLookup>().TryGetCluster(RoutingPolicies.NodesCluster, out var cluster)
                ? cluster.Destinations.Values.Count(d =>
                    d.Health.Active != Yarp.ReverseProxy.Model.DestinationHealth.Unhealthy
                    && d.Health.Passive != Yarp.ReverseProxy.Model.DestinationHealth.Unhealthy)
                : 0;

        app.MapHealthEndpoints();
        app.MapPrometheusScrapingEndpoint("/metrics").AllowAnonymous();
        app.MapOpenApi().AllowAnonymous();
        app.MapScalarApiReference().AllowAnonymous();
        app.MapModelsApi();
        app.MapAdapterApi().RequireAuthorization(TenancyPolicies.Tenant).RequireRateLimiting(RateLimitPolicies.TenantRequests);
        app.MapRewardHeadApi().RequireAuthorization(TenancyPolicies.Tenant).RequireRateLimiting(RateLimitPolicies.TenantRequests);
        app.MapAdminApi().MapTenantUsageApi();
        app.MapReverseProxy(proxy =>
        {
            var request = proxy.ApplicationServices.GetRequiredService<OpenAiRequestMiddleware>();
            var retry = proxy.ApplicationServices.GetRequiredService<UpstreamRetryMiddleware>();
            proxy.Use((context, next) => request.InvokeAsync(context, () => next()));
            proxy.Use((context, next) => retry.InvokeAsync(context, () => next()));
            proxy.UseLoadBalancing();
            proxy.UsePassiveHealthChecks();
        });
        app.MapUnknownV1Routes(); // any other /v1 route or method: OpenAI's error JSON naming it
        return app;
    }

    private static StaticBaseModelCatalog BaseModels(GatewayOptions options)
    {
        var catalog = new StaticBaseModelCatalog();
        foreach (var (id, path) in options.BaseModels) catalog.Add(id, ModelConfig.Load(path));
        return catalog;
    }
}
