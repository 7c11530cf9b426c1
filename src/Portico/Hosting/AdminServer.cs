using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Portico.Gateway;

namespace Portico.Hosting;

/// <summary>
/// The admin listener (loopback:9080 by default): liveness (<c>/health</c>, <c>/healthz</c>), readiness
/// (<c>/ready</c>: config loaded and every upstream has an available server), a status page (<c>/</c>) and its
/// data (<c>/status.json</c>). Kept off the data-plane port so it is never exposed by accident.
/// </summary>
internal static class AdminServer
{
    public static WebApplication Build(IPEndPoint endpoint, GatewayApp app, ILoggerFactory loggerFactory, ListenSockets? sockets)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddSingleton<IHostLifetime, NoLifetime>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromDays(1));
        builder.WebHost.UseKestrelCore();
        if (sockets is not null)
        {
            builder.WebHost.UseSockets(o => o.CreateBoundListenSocket = sockets.CreateForKestrel);
        }
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Listen(endpoint);
        });
        var web = builder.Build();
        web.Run(context => HandleAsync(context, app));
        return web;
    }

    private static Task HandleAsync(HttpContext context, GatewayApp app)
    {
        var path = context.Request.Path.Value ?? "/";
        var response = context.Response;
        response.Headers.CacheControl = "no-store";
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
            case "/status.json":
                response.ContentType = "application/json";
                return response.WriteAsync(StatusJson(app.Snapshot));
            case "/":
                response.ContentType = "text/html; charset=utf-8";
                return response.WriteAsync(StatusPage(app.Snapshot));
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

    private static string StatusJson(GatewaySnapshot snapshot)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("version", typeof(AdminServer).Assembly.GetName().Version?.ToString(3));
            w.WriteNumber("config_generation", snapshot.Generation);
            w.WriteStartArray("routes");
            foreach (var route in snapshot.Routes.Routes)
            {
                w.WriteStartObject();
                w.WriteString("name", route.Name);
                w.WriteString("path", route.Path);
                w.WriteString("host", route.Host);
                w.WriteString("upstream", route.UpstreamName);
                w.WriteBoolean("auth_required", route.AuthRequired);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("upstreams");
            foreach (var upstream in snapshot.Upstreams.Values)
            {
                w.WriteStartObject();
                w.WriteString("name", upstream.Name);
                w.WriteString("strategy", upstream.Policy.Name);
                w.WriteString("protocol", upstream.Config.Protocol);
                w.WriteStartArray("servers");
                foreach (var server in upstream.Servers)
                {
                    w.WriteStartObject();
                    w.WriteString("address", server.Authority);
                    w.WriteNumber("weight", server.Weight);
                    w.WriteBoolean("healthy", server.State.IsHealthy);
                    w.WriteBoolean("draining", server.State.IsDraining);
                    w.WriteBoolean("ejected", server.State.IsEjected);
                    w.WriteBoolean("available", server.State.IsAvailable);
                    w.WriteString("circuit_breaker", server.State.Breaker is { } breaker ? breaker.State.ToString().ToLowerInvariant() : "off");
                    w.WriteNumber("in_flight", server.State.InFlight);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray()) + "\n";
    }

    private static string StatusPage(GatewaySnapshot snapshot)
    {
        var html = new StringBuilder();
        html.Append("<!doctype html><html><head><meta charset=\"utf-8\"><title>Portico status</title>")
            .Append("<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin-bottom:1.5rem}")
            .Append("td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}.ok{color:#1a7f37}.bad{color:#cf222e}</style></head><body>")
            .Append("<h1>Portico</h1><p>Config generation ").Append(snapshot.Generation).Append(". Data: <a href=\"/status.json\">/status.json</a>, ")
            .Append("<a href=\"/health\">/health</a>, <a href=\"/ready\">/ready</a>.</p><h2>Routes</h2><table><tr><th>path</th><th>host</th><th>upstream</th><th>auth</th></tr>");
        foreach (var route in snapshot.Routes.Routes)
        {
            html.Append("<tr><td>").Append(WebUtility.HtmlEncode(route.Path)).Append("</td><td>").Append(WebUtility.HtmlEncode(route.Host ?? "*"))
                .Append("</td><td>").Append(WebUtility.HtmlEncode(route.UpstreamName ?? "(respond)")).Append("</td><td>")
                .Append(route.AuthRequired ? "required" : "-").Append("</td></tr>");
        }
        html.Append("</table><h2>Upstreams</h2><table><tr><th>upstream</th><th>strategy</th><th>server</th><th>state</th><th>breaker</th><th>in flight</th></tr>");
        foreach (var upstream in snapshot.Upstreams.Values)
        {
            foreach (var server in upstream.Servers)
            {
                var ok = server.State.IsAvailable;
                html.Append("<tr><td>").Append(WebUtility.HtmlEncode(upstream.Name)).Append("</td><td>").Append(upstream.Policy.Name)
                    .Append("</td><td>").Append(WebUtility.HtmlEncode(server.Authority)).Append("</td><td class=\"").Append(ok ? "ok\">up" : "bad\">down")
                    .Append("</td><td>").Append(server.State.Breaker is { } breaker ? breaker.State.ToString().ToLowerInvariant() : "off")
                    .Append("</td><td>").Append(server.State.InFlight).Append("</td></tr>");
            }
        }
        html.Append("</table></body></html>\n");
        return html.ToString();
    }

    private sealed class NoLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
