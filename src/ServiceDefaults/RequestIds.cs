using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Serving.ServiceDefaults;

/// <summary>
/// <c>X-Request-Id</c> on every response, as the OpenAI API sends it: the client's own id when it sent a usable one
/// (1–128 visible ASCII characters), else a new <c>req_…</c>. The id becomes <see cref="HttpContext.TraceIdentifier"/>,
/// the request header (so the gateway forwards the same id to the node) and the <c>RequestId</c> of the log scope, so a
/// client's id finds the gateway's and the node's log lines of its request.
/// </summary>
public static class RequestIds
{
    /// <summary>The header, request and response.</summary>
    public const string Header = "X-Request-Id";

    /// <summary>Longest client id kept; a longer or odd one is replaced.</summary>
    public const int MaxLength = 128;

    /// <summary>Adds the middleware; call it first so that every response, errors included, carries the header.</summary>
    public static IApplicationBuilder UseRequestIds(this IApplicationBuilder app)
    {
        var logger = app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger("Serving.RequestIds");
        return app.Use(async (context, next) =>
        {
            var id = context.Request.Headers[Header].ToString();
            if (!IsUsable(id))
            {
                id = "req_" + Guid.NewGuid().ToString("N");
                context.Request.Headers[Header] = id;
            }
            context.TraceIdentifier = id;
            // At the start of the response: the exception handler clears headers before it writes an error.
            context.Response.OnStarting(static state =>
            {
                var c = (HttpContext)state;
                c.Response.Headers[Header] = c.TraceIdentifier;
                return Task.CompletedTask;
            }, context);
            using (logger.BeginScope(new RequestScope(id)))
            {
                await next(context).ConfigureAwait(false);
            }
        });
    }

    /// <summary>True for a client id worth keeping: 1–128 visible ASCII characters.</summary>
    public static bool IsUsable(string id)
    {
        if (id.Length is 0 or > MaxLength) return false;
        foreach (var c in id)
        {
            if (c is < '!' or > '~') return false;
        }
        return true;
    }

    /// <summary>The log scope: one <c>RequestId</c> property (it replaces the host's own connection-based one).</summary>
    private sealed class RequestScope(string id) : IReadOnlyList<KeyValuePair<string, object>>
    {
        public KeyValuePair<string, object> this[int index] => index == 0 ? new("RequestId", id) : throw new ArgumentOutOfRangeException(nameof(index));

        public int Count => 1;

        public IEnumerator<KeyValuePair<string, object>> GetEnumerator()
        {
            yield return this[0];
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

        public override string ToString() => "RequestId:" + id;
    }
}
