using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Portico.Proxy;

namespace Portico.Hosting;

/// <summary>
/// Hosts any <see cref="ProxyApp{TContext}"/> on Kestrel: HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on each
/// endpoint, the app as the only request handler. For library users; the `portico` gateway uses the same pieces.
/// </summary>
public static class ProxyHost
{
    /// <summary>Builds (does not start) a server for <paramref name="app"/> on <paramref name="endpoints"/>.</summary>
    public static WebApplication Build<TContext>(ProxyApp<TContext> app, IEnumerable<IPEndPoint> endpoints, ILoggerFactory? loggerFactory = null) =>
        Build(app, endpoints, out _, loggerFactory);

    /// <summary>
    /// Builds (does not start) a server for <paramref name="app"/> on <paramref name="endpoints"/>, and gives the
    /// request runner it serves, e.g. to close its WebSockets at shutdown with
    /// <c>service.Tunnels.CloseAllAsync(TimeSpan.FromSeconds(5))</c> before stopping the server.
    /// </summary>
    public static WebApplication Build<TContext>(ProxyApp<TContext> app, IEnumerable<IPEndPoint> endpoints, out ProxyService<TContext> service, ILoggerFactory? loggerFactory = null)
    {
        loggerFactory ??= NullLoggerFactory.Instance;
        var runner = new ProxyService<TContext>(app, loggerFactory.CreateLogger("Portico.Proxy"));
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddSingleton(loggerFactory);
        builder.WebHost.UseKestrelCore();
        builder.WebHost.UseSockets();
        Server.Http1Server.AddTransport(builder.Services);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.AllowAlternateSchemes = true;
            kestrel.Limits.MaxRequestBodySize = null;
            foreach (var endpoint in endpoints)
            {
                Server.Http1Server.ListenCleartext(kestrel, endpoint, runner.ServeAsync, loggerFactory);
            }
        });
        var web = builder.Build();
        service = runner;
        web.Run(runner.InvokeAsync);
        return web;
    }

    /// <summary>Builds a server for <paramref name="app"/> on "host:port" addresses.</summary>
    public static WebApplication Build<TContext>(ProxyApp<TContext> app, params string[] addresses)
    {
        var endpoints = new List<IPEndPoint>();
        foreach (var address in addresses)
        {
            endpoints.Add(ListenAddress.TryParse(address, out var endpoint) ? endpoint : throw new ArgumentException($"not host:port: {address}", nameof(addresses)));
        }
        return Build(app, endpoints);
    }
}
