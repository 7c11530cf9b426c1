// A custom proxy in 40 lines: /api/* goes to one server, everything else to another; requests without an
// X-Api-Key get 403 before any upstream is touched; every response carries the upstream that served it.
using Portico.Hosting;
using Portico.Proxy;

var app = new ApiKeyProxy(UpstreamPeer.Create("127.0.0.1", 3001), UpstreamPeer.Create("127.0.0.1", 3002));
await using var server = ProxyHost.Build(app, args.Length > 0 ? args[0] : "127.0.0.1:8080");
await server.RunAsync();

internal sealed class ApiKeyProxy(UpstreamPeer api, UpstreamPeer web) : ProxyApp<ApiKeyProxy.Ctx>
{
    public sealed class Ctx
    {
        public long Started;
    }

    public override Ctx NewContext(ProxySession session) => new() { Started = session.StartTimestamp };

    public override async ValueTask<bool> RequestFilterAsync(ProxySession session, Ctx ctx)
    {
        if (session.Request.Headers.ContainsKey("X-Api-Key"))
        {
            return false;
        }
        await ErrorResponse.WriteAsync(session, ProxyError.Reject(403, "X-Api-Key required"));
        return true; // answered: no upstream phase runs
    }

    public override ValueTask<UpstreamPeer?> SelectUpstreamAsync(ProxySession session, Ctx ctx) =>
        ValueTask.FromResult<UpstreamPeer?>(session.Request.Path.StartsWithSegments("/api") ? api : web);

    public override ValueTask UpstreamRequestFilterAsync(ProxySession session, HttpRequestMessage request, Ctx ctx)
    {
        request.Headers.Remove("X-Api-Key"); // the key is for the proxy, not the backend
        return ValueTask.CompletedTask;
    }

    public override ValueTask ResponseFilterAsync(ProxySession session, Ctx ctx)
    {
        session.Response.Headers["X-Served-By"] = session.Peer!.Server.Authority;
        return ValueTask.CompletedTask;
    }

    public override ValueTask LoggingAsync(ProxySession session, ProxyError? error, Ctx ctx)
    {
        Console.WriteLine($"{session.Request.Method} {session.Request.Path} -> {session.Response.StatusCode} in {session.Elapsed.TotalMilliseconds:0.0} ms");
        return ValueTask.CompletedTask;
    }
}
