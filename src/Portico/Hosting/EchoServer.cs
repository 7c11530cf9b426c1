using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Portico.Hosting;

/// <summary>
/// A small upstream for trying routes without a real backend (<c>portico echo --listen 127.0.0.1:3001</c>): it
/// answers every request with JSON describing what it received (method, path, headers, body size), serves
/// <c>/health</c>, and echoes WebSocket-free HTTP/1.1 and h2c. Used by the quick start.
/// </summary>
public static class EchoServer
{
    public static WebApplication Build(IReadOnlyList<IPEndPoint> endpoints, string name)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.AllowAlternateSchemes = true;
            foreach (var endpoint in endpoints)
            {
                kestrel.Listen(endpoint, listen =>
                {
                    // Protocols left at Kestrel's default (HTTP/1.1 and HTTP/2): setting them explicitly only adds a
                    // start-up warning that cleartext HTTP/2 is off, which H2cPriorKnowledge makes untrue.
                    listen.Use(H2cPriorKnowledge.Middleware);
                });
            }
        });
        var app = builder.Build();
        app.Run(async context =>
        {
            var request = context.Request;
            long size = 0;
            var buffer = new byte[16 * 1024];
            int read;
            while ((read = await request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
            {
                size += read;
            }
            var headers = new SortedDictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (var header in request.Headers)
            {
                headers[header.Key] = header.Value.ToString();
            }
            var body = new Dictionary<string, object?>
            {
                ["service"] = name,
                ["server"] = $"{context.Connection.LocalIpAddress}:{context.Connection.LocalPort}",
                ["method"] = request.Method,
                ["path"] = request.Path.Value,
                ["query"] = request.QueryString.Value,
                ["protocol"] = request.Protocol,
                ["headers"] = headers,
                ["body_bytes"] = size,
            };
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(JsonSerializer.Serialize(body) + "\n", context.RequestAborted);
        });
        return app;
    }
}
