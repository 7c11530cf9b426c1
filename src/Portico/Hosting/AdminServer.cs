using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Portico.Admin;
using Portico.Gateway;
using Portico.Upstreams;

namespace Portico.Hosting;

/// <summary>
/// The admin listener (loopback:9080 by default): liveness (<c>/health</c>, <c>/healthz</c>) and readiness
/// (<c>/ready</c>: config loaded and every upstream has an available server) without a token, the token-protected
/// admin API under <c>/api/</c> (<see cref="AdminApi"/>), and the dashboard at <c>/</c>, a static page that asks for the
/// token and then polls the API. Kept off the data-plane port so it is never exposed by accident. docs/admin.md.
/// </summary>
internal static class AdminServer
{
    /// <summary>The dashboard's files, embedded in the assembly (Admin/Dashboard): no CDN, nothing to deploy.</summary>
    private static readonly Lazy<Dictionary<string, (byte[] Content, string ContentType)>> Assets = new(LoadAssets);

    /// <summary>
    /// Only this origin's own files and API; no inline script, no framing. The page builds its DOM with textContent,
    /// so a route or server name cannot inject markup; this policy is the second fence.
    /// </summary>
    private const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    /// <param name="endpoint">Where to listen.</param>
    /// <param name="app">The gateway whose state is shown and acted on.</param>
    /// <param name="loggerFactory">Loggers.</param>
    /// <param name="sockets">Listening sockets kept across reloads and upgrades; null to let Kestrel bind.</param>
    /// <param name="reload">
    /// Reloads the config as SIGHUP does (<c>PorticoHost.ReloadAsync</c>); true when applied. Null: <c>POST /api/reload</c>
    /// answers 501.
    /// </param>
    /// <param name="configPath">The config file, read again to report why a reload was rejected; null: no details.</param>
    public static WebApplication Build(IPEndPoint endpoint, GatewayApp app, ILoggerFactory loggerFactory, ListenSockets? sockets,
        Func<Task<bool>>? reload = null, string? configPath = null)
    {
        var builder = ListenerServer.CreateBuilder(loggerFactory, sockets);
        var rates = new ServerRates(TimeProvider.System);
        builder.Services.AddSingleton<IHostedService>(new RateSampler(rates, app));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Listen(endpoint);
        });
        var web = builder.Build();
        var api = new AdminApi(app, AdminToken.FromEnvironment(), rates, reload, configPath, loggerFactory.CreateLogger("Portico.Admin"));
        web.Run(context => HandleAsync(context, app, api));
        return web;
    }

    private static Task HandleAsync(HttpContext context, GatewayApp app, AdminApi api)
    {
        var path = context.Request.Path.Value ?? "/";
        var response = context.Response;
        response.Headers.CacheControl = "no-store";
        response.Headers.XContentTypeOptions = "nosniff";
        if (path == "/api" || path.StartsWith("/api/", StringComparison.Ordinal))
        {
            return api.HandleAsync(context);
        }
        switch (path)
        {
            case "/health" or "/healthz":
                response.ContentType = "application/json";
                return response.WriteAsync("{\"status\":\"ok\"}\n");
            case "/ready":
                var (ready, reason) = Readiness(app.Snapshot);
                response.StatusCode = ready ? 200 : 503;
                response.ContentType = "application/json";
                return response.WriteAsync(JsonSerializer.Serialize(new Dictionary<string, string> { ["status"] = ready ? "ready" : "not_ready", ["reason"] = reason }) + "\n");
            case "/" or "/index.html":
                return AssetAsync(context, "index.html");
            case "/dashboard.js" or "/dashboard.css":
                return AssetAsync(context, path[1..]);
            default:
                response.StatusCode = 404;
                response.ContentType = "application/json";
                return response.WriteAsync("{\"error\":\"not_found\"}\n");
        }
    }

    internal static (bool Ready, string Reason) Readiness(GatewaySnapshot snapshot)
    {
        foreach (var upstream in snapshot.Upstreams.Values)
        {
            var any = false;
            foreach (var server in upstream.Servers)
            {
                any |= server.State.IsAvailable;
            }
            if (!any)
            {
                return (false, $"upstream {upstream.Name} has no available server");
            }
        }
        return (true, "config loaded");
    }

    /// <summary>A dashboard file; the page itself carries no data, so it is served without the token.</summary>
    private static Task AssetAsync(HttpContext context, string name)
    {
        var response = context.Response;
        if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
        {
            response.Headers.Allow = "GET, HEAD";
            response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            return Task.CompletedTask;
        }
        var (content, contentType) = Assets.Value[name];
        response.ContentType = contentType;
        response.ContentLength = content.Length;
        response.Headers.ContentSecurityPolicy = ContentSecurityPolicy;
        response.Headers.XFrameOptions = "DENY";
        response.Headers["Referrer-Policy"] = "no-referrer";
        return HttpMethods.IsHead(context.Request.Method) ? Task.CompletedTask : response.Body.WriteAsync(content).AsTask();
    }

    private static Dictionary<string, (byte[] Content, string ContentType)> LoadAssets()
    {
        var assembly = typeof(AdminServer).Assembly;
        var assets = new Dictionary<string, (byte[], string)>(StringComparer.Ordinal);
        foreach (var (name, contentType) in new[]
        {
            ("index.html", "text/html; charset=utf-8"),
            ("dashboard.js", "text/javascript; charset=utf-8"),
            ("dashboard.css", "text/css; charset=utf-8"),
        })
        {
            using var stream = assembly.GetManifestResourceStream("Portico.Admin.Dashboard." + name)
                ?? throw new InvalidOperationException($"dashboard file {name} is not embedded in {assembly.GetName().Name}");
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            assets[name] = (copy.ToArray(), contentType);
        }
        return assets;
    }

    /// <summary>Samples every server's totals once a second while the admin listener runs (<see cref="ServerRates"/>).</summary>
    private sealed class RateSampler(ServerRates rates, GatewayApp app) : IHostedService, IDisposable
    {
        private ITimer? _timer;

        public Task StartAsync(CancellationToken cancellationToken)
        {
            _timer = TimeProvider.System.CreateTimer(_ => rates.Sample(States(app.Snapshot)), null, TimeSpan.Zero, TimeSpan.FromSeconds(1));
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken)
        {
            Dispose();
            return Task.CompletedTask;
        }

        public void Dispose() => _timer?.Dispose();

        private static IEnumerable<ServerState> States(GatewaySnapshot snapshot)
        {
            foreach (var upstream in snapshot.Upstreams.Values)
            {
                foreach (var server in upstream.Servers)
                {
                    yield return server.State;
                }
            }
        }
    }
}
