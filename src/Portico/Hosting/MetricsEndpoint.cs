using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Portico.Gateway;
using Portico.Observability;
using Portico.Observability.Metrics;

namespace Portico.Hosting;

/// <summary>
/// The Prometheus scrape endpoint and the connection counter of the data-plane listeners. The host mounts
/// <see cref="HandleAsync"/> on the metrics listener (<c>monitoring.prometheus.listen_port</c> and
/// <c>metrics_path</c>, or seed 001's <c>metrics.bind_address</c> and <c>path</c>) and adds
/// <see cref="CountConnections"/> to each data-plane <c>ListenOptions</c>.
/// </summary>
public static class MetricsEndpoint
{
    /// <summary>The media type of the text exposition format 0.0.4.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>
    /// Answers a scrape: GET (or HEAD, headers only) gets every metric of <paramref name="metrics"/>, with health and
    /// breaker state read from <paramref name="snapshot"/> now; any other method gets 405 with <c>Allow: GET, HEAD</c>.
    /// The path is not checked here.
    /// </summary>
    /// <remarks>
    /// The text is rendered into a pooled buffer first, so the response has a Content-Length and a scrape that fails
    /// halfway never sends half a page (Prometheus would store the half).
    /// </remarks>
    public static async Task HandleAsync(HttpContext context, GatewayMetrics metrics, GatewaySnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentNullException.ThrowIfNull(snapshot);
        var request = context.Request;
        var response = context.Response;
        var head = HttpMethods.IsHead(request.Method);
        if (!head && !HttpMethods.IsGet(request.Method))
        {
            response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            response.Headers.Allow = "GET, HEAD";
            return;
        }

        using var buffer = new PooledBufferWriter();
        metrics.WriteTo(buffer, snapshot);
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = ContentType;
        response.Headers.CacheControl = "no-store";
        response.ContentLength = buffer.WrittenCount;
        if (!head)
        {
            await response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted);
        }
    }

    /// <summary>
    /// The request delegate of a metrics listener: <paramref name="path"/> (e.g. <c>/metrics</c>, compared exactly) is
    /// answered by <see cref="HandleAsync"/> with <paramref name="app"/>'s metrics and its snapshot of the moment; any
    /// other path gets 404. <c>metricsApp.Run(MetricsEndpoint.CreateHandler(gatewayApp, "/metrics"))</c>.
    /// </summary>
    public static RequestDelegate CreateHandler(GatewayApp app, string path)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentException.ThrowIfNullOrEmpty(path);
        return context =>
        {
            if (!string.Equals(context.Request.Path.Value, path, StringComparison.Ordinal))
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            }
            return HandleAsync(context, app.Metrics, app.Snapshot);
        };
    }

    /// <summary>
    /// Kestrel connection middleware that keeps <c>{prefix}_connections_active</c> (and <c>_connections_total</c>)
    /// up to date: <c>listenOptions.Use(MetricsEndpoint.CountConnections(metrics))</c>. Add it first on the listener,
    /// before TLS and protocol detection, so every accepted TCP connection is counted, also one that fails its handshake.
    /// </summary>
    public static Func<ConnectionDelegate, ConnectionDelegate> CountConnections(GatewayMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        return next => async connection =>
        {
            metrics.ConnectionOpened();
            try
            {
                await next(connection);
            }
            finally
            {
                metrics.ConnectionClosed();
            }
        };
    }
}
