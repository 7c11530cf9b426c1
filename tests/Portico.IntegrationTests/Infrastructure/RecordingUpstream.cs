using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A <see cref="TestUpstream"/> that records every request it receives (method, raw target, protocol, headers) and
/// dispatches to handlers registered per path prefix, so one upstream can serve many tests of a class. Requests no
/// handler claims get a small text answer naming the upstream (also in the <c>X-Upstream</c> header), which is how
/// routing and balancing tests tell which upstream served them.
/// </summary>
public sealed class RecordingUpstream : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, RequestDelegate> _handlers = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<RecordedRequest> _recorded = new();
    private TestUpstream? _upstream;

    private RecordingUpstream(string name)
    {
        Name = name;
    }

    /// <summary>The name this upstream reports in <c>X-Upstream</c> and in its default body.</summary>
    public string Name { get; }

    public int Port => _upstream!.Port;

    public string Address => _upstream!.Address;

    /// <summary>Every request received so far, in arrival order.</summary>
    public IReadOnlyCollection<RecordedRequest> Recorded => _recorded;

    /// <summary>Number of requests received so far.</summary>
    public int Requests => _recorded.Count;

    public static async Task<RecordingUpstream> StartAsync(string name, bool http2Only = false)
    {
        var self = new RecordingUpstream(name);
        self._upstream = await TestUpstream.StartAsync(self.HandleAsync, http2Only);
        return self;
    }

    /// <summary>Routes requests whose path starts with <paramref name="pathPrefix"/> to <paramref name="handler"/> (longest prefix wins).</summary>
    public void Map(string pathPrefix, RequestDelegate handler) => _handlers[pathPrefix] = handler;

    /// <summary>The most recent request whose path is exactly <paramref name="path"/>, or null.</summary>
    public RecordedRequest? Last(string path)
    {
        RecordedRequest? last = null;
        foreach (var request in _recorded)
        {
            if (request.Path == path)
            {
                last = request;
            }
        }
        return last;
    }

    /// <summary>How many requests had a path starting with <paramref name="pathPrefix"/>.</summary>
    public int CountWithPrefix(string pathPrefix)
    {
        var count = 0;
        foreach (var request in _recorded)
        {
            if (request.Path.StartsWith(pathPrefix, StringComparison.Ordinal))
            {
                count++;
            }
        }
        return count;
    }

    private Task HandleAsync(HttpContext context)
    {
        _recorded.Enqueue(RecordedRequest.From(context));
        var path = context.Request.Path.Value ?? "/";
        RequestDelegate? best = null;
        var bestLength = -1;
        foreach (var (prefix, handler) in _handlers)
        {
            if (prefix.Length > bestLength && path.StartsWith(prefix, StringComparison.Ordinal))
            {
                best = handler;
                bestLength = prefix.Length;
            }
        }
        return best is null ? DefaultAsync(context) : best(context);
    }

    private Task DefaultAsync(HttpContext context)
    {
        var request = context.Request;
        context.Response.Headers["X-Upstream"] = Name;
        context.Response.ContentType = "text/plain";
        return context.Response.WriteAsync($"{Name} {request.Method} {RecordedRequest.RawTargetOf(context)}");
    }

    public async ValueTask DisposeAsync()
    {
        if (_upstream is not null)
        {
            await _upstream.DisposeAsync();
        }
    }
}

/// <summary>What an upstream saw of one request: header values of a repeated header are joined with ", ".</summary>
public sealed class RecordedRequest
{
    private RecordedRequest(string method, string path, string rawTarget, string protocol, Dictionary<string, string> headers)
    {
        Method = method;
        Path = path;
        RawTarget = rawTarget;
        Protocol = protocol;
        Headers = headers;
    }

    public string Method { get; }

    /// <summary>The decoded path (<c>HttpRequest.Path</c>).</summary>
    public string Path { get; }

    /// <summary>The request target exactly as it arrived (path and query, not decoded).</summary>
    public string RawTarget { get; }

    public string Protocol { get; }

    public IReadOnlyDictionary<string, string> Headers { get; }

    /// <summary>The header's value, or null when the upstream did not receive it.</summary>
    public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;

    internal static RecordedRequest From(HttpContext context)
    {
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in context.Request.Headers)
        {
            headers[name] = value.ToString();
        }
        return new RecordedRequest(context.Request.Method, context.Request.Path.Value ?? "/", RawTargetOf(context), context.Request.Protocol, headers);
    }

    internal static string RawTargetOf(HttpContext context) =>
        context.Features.Get<IHttpRequestFeature>()?.RawTarget
        ?? context.Request.Path.ToUriComponent() + context.Request.QueryString.ToUriComponent();
}
