using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using System.Net;

namespace Portico.Server;

/// <summary>
/// Portico's own HTTP/1.1 server. On cleartext listeners it runs on Portico's own accept path (<see cref="FastListener"/>,
/// straight on the sockets); on TLS listeners as a Kestrel connection middleware after TLS, on the connection's pipes.
/// Either way Kestrel keeps HTTP/2 and whatever this server hands over, and the HTTP/1.1 requests it takes are parsed
/// and answered here without Kestrel's per-request machinery. A request this server does not take (a body, an
/// upgrade, <c>Expect</c>, anything malformed or unusual: see <see cref="RequestHeadParser"/>) is left unread, and the
/// connection goes on in Kestrel's HTTP/1.1 implementation from that request on, which serves or refuses it as it
/// always did. So the two answer every request the same way, and the fast path only has to be right for what it takes.
/// </summary>
/// <remarks>
/// Why own it: measured on this project's bench (one core, c64, 100-byte answers), Kestrel's HTTP/1.1 layer costs
/// about 2.4 µs of CPU per request and keeps about 9.7 KB of objects per idle connection (docs/performance.md).
/// Pingora owns its HTTP stack for the same reasons. <c>PORTICO_HTTP1_SERVER=kestrel</c> turns this off.
/// </remarks>
public static class Http1Server
{
    /// <summary>The environment variable that turns the own server off ("kestrel").</summary>
    public const string Variable = "PORTICO_HTTP1_SERVER";

    /// <summary>False when <see cref="Variable"/> is "kestrel": every request is Kestrel's.</summary>
    public static bool Enabled { get; } = !string.Equals(Environment.GetEnvironmentVariable(Variable), "kestrel", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// True unless <see cref="Variable"/> is "transport" (or "kestrel"): cleartext listeners accept connections on
    /// Portico's own path (<see cref="FastListener"/>) instead of Kestrel's socket transport. "transport" keeps the own
    /// server as a connection middleware on Kestrel's transport, as TLS listeners always have it.
    /// </summary>
    public static bool OwnAccept { get; } = Enabled && !string.Equals(Environment.GetEnvironmentVariable(Variable), "transport", StringComparison.OrdinalIgnoreCase);

    /// <summary>Which server answers HTTP/1.1 requests (for the start-up log).</summary>
    public static string Mode => !Enabled ? "kestrel"
        : OwnAccept ? (Http2.Http2ServerConnection.Enabled
            ? "portico, own accept path on cleartext listeners, h2c on Portico's HTTP/2 server (Kestrel for bodies, upgrades and TLS HTTP/2)"
            : "portico, own accept path on cleartext listeners (Kestrel for bodies, upgrades and HTTP/2)")
        : "portico on Kestrel's transport (Kestrel for bodies, upgrades and HTTP/2)";

    /// <summary>Registers the own accept path with Kestrel (after <c>UseSockets</c>); it binds only <see cref="FastEndPoint"/>s.</summary>
    public static void AddTransport(IServiceCollection services) =>
        services.AddSingleton<IConnectionListenerFactory, FastTransportFactory>();

    /// <summary>
    /// Listens on a cleartext <paramref name="endpoint"/> serving HTTP/1.1 with <paramref name="app"/> (and HTTP/2 with
    /// prior knowledge through Kestrel): on the own accept path when <see cref="OwnAccept"/>, else as Kestrel connection
    /// middleware (<paramref name="hooks"/>, h2c detection, <see cref="Middleware"/>). Needs <see cref="AddTransport"/>
    /// on the server's services; Kestrel's request delegate must run the same app.
    /// </summary>
    public static void ListenCleartext(KestrelServerOptions kestrel, IPEndPoint endpoint, Func<HttpContext, ValueTask> app, ILoggerFactory loggerFactory, ConnectionHooks? hooks = null)
    {
        if (OwnAccept)
        {
            kestrel.Listen(new FastEndPoint(endpoint, app, kestrel, loggerFactory.CreateLogger("Portico.Server"), hooks));
            return;
        }
        kestrel.Listen(endpoint, listen =>
        {
            if (hooks is not null)
            {
                listen.Use(hooks.Middleware);
            }
            listen.Use(Hosting.H2cPriorKnowledge.Middleware);
            listen.Use(Middleware(app, kestrel, loggerFactory));
        });
    }

    /// <summary>
    /// A connection middleware that serves HTTP/1.1 requests with <paramref name="app"/>; add it last, after TLS and any
    /// other connection middleware. <paramref name="options"/> gives the limits and timeouts (Kestrel's, so both servers
    /// apply the same ones); the same app must also be the request delegate of the Kestrel server (as a
    /// <see cref="RequestDelegate"/>), which serves what this server hands over.
    /// </summary>
    public static Func<ConnectionDelegate, ConnectionDelegate> Middleware(Func<HttpContext, ValueTask> app, KestrelServerOptions options, ILoggerFactory loggerFactory)
    {
        var logger = loggerFactory.CreateLogger("Portico.Server");
        return next => Enabled ? connection => ServeAsync(connection, next, app, options, logger) : next;
    }

    private static async Task ServeAsync(ConnectionContext connection, ConnectionDelegate next, Func<HttpContext, ValueTask> app, KestrelServerOptions options, ILogger logger)
    {
        if (!Http1ServerConnection.IsHttp1(connection))
        {
            await next(connection);
            return;
        }
        var http1 = new Http1ServerConnection(connection, app, options, logger);
        bool handOff;
        try
        {
            handOff = await http1.RunAsync();
        }
        finally
        {
            http1.Dispose();
        }
        if (handOff)
        {
            await next(connection);
        }
    }
}
