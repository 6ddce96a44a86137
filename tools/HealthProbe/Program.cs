// Container health check: GET the URL (default the service's readiness path on loopback), exit 0 on 2xx, 1 otherwise.
// The runtime images have no shell, curl or wget; this is what their HEALTHCHECK runs:
//   dotnet /app/probe/Serving.HealthProbe.dll http://127.0.0.1:8080/health/ready
using System.Net.Http;

var url = args.Length > 0 ? args[0] : "http://127.0.0.1:8080/health/ready";
if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
{
    Console.Error.WriteLine($"usage: Serving.HealthProbe [http(s)://host:port/path] (got '{url}')");
    return 2;
}
using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
try
{
    using var response = await http.GetAsync(uri);
    Console.WriteLine($"{(int)response.StatusCode} {uri}");
    return response.IsSuccessStatusCode ? 0 : 1;
}
catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
{
    Console.WriteLine($"unreachable {uri}: {e.Message}");
    return 1;
}
