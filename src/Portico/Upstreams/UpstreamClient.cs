using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Portico.Observability.Metrics;

namespace Portico.Upstreams;

/// <summary>
/// The connection pool to one upstream group: one long-lived <see cref="HttpMessageInvoker"/> over a
/// <see cref="SocketsHttpHandler"/>. Never <see cref="HttpClient"/> on the forward path: it buffers and adds
/// its own timeout. Reused across reloads when its <see cref="Options"/> are unchanged, so pooled connections survive.
/// </summary>
public sealed class UpstreamClient : IDisposable
{
    private readonly SocketsHttpHandler _handler;

    public UpstreamClient(UpstreamClientOptions options)
    {
        Options = options;
        _handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = options.ConnectTimeout,
            // Upstream keep-alive: close idle pooled connections before typical upstream idle timeouts
            // (nginx keepalive_timeout 75 s, Node 5 s) would close them under us. 
            PooledConnectionIdleTimeout = options.PooledConnectionIdleTimeout,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            MaxConnectionsPerServer = options.MaxConnectionsPerServer,
            // Headers are copied as they come; the limit guards memory against a hostile upstream (KiB).
            MaxResponseHeadersLength = 64,
            ActivityHeadersPropagator = null,
            Expect100ContinueTimeout = TimeSpan.FromSeconds(1),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            ConnectCallback = ConnectAsync,
        };
        if (options.AnyTls)
        {
            _handler.SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ApplicationProtocols = options.Protocol == UpstreamProtocol.Http2
                    ? [SslApplicationProtocol.Http2]
                    : [SslApplicationProtocol.Http11],
                RemoteCertificateValidationCallback = options.VerifyTls
                    ? null
                    : static (_, _, _, _) => true,
            };
        }
        Invoker = new HttpMessageInvoker(_handler, disposeHandler: true);
    }

    public UpstreamClientOptions Options { get; }

    /// <summary>The invoker requests are sent with.</summary>
    public HttpMessageInvoker Invoker { get; }

    /// <summary>
    /// Counts each new TCP connection this pool opens (<c>pingora_upstream_connections_created_total</c>); set when a
    /// snapshot is bound to the gateway's metrics, null = not counted.
    /// </summary>
    internal CounterCell? ConnectionCounter { get; set; }

    public void Dispose() => Invoker.Dispose();

    /// <summary>
    /// Opens the TCP connection for the pool, as SocketsHttpHandler does by default (a dual-mode socket, Nagle off),
    /// and counts it: new connections against requests sent is the pool's reuse ratio.
    /// </summary>
    /// <remarks>
    /// <paramref name="cancellationToken"/> already carries <see cref="SocketsHttpHandler.ConnectTimeout"/> (the
    /// handler links it in before calling this), so the connect timeout is the same as without the callback, and the
    /// handler wraps a failure here the same way: a refusal is an <see cref="HttpRequestException"/> with
    /// <see cref="HttpRequestError.ConnectionError"/>, a timeout a cancellation with an inner
    /// <see cref="TimeoutException"/>, which is how the forwarder tells connect failures (safe to retry) from others.
    /// TLS, when the server uses it, is negotiated by the handler on the stream returned here.
    /// </remarks>
    private async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        ConnectionCounter?.Inc();
        return new NetworkStream(socket, ownsSocket: true);
    }
}

/// <summary>Settings that shape an <see cref="UpstreamClient"/>; equal options mean the pool can be reused.</summary>
public sealed record UpstreamClientOptions
{
    public UpstreamProtocol Protocol { get; init; }
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan PooledConnectionIdleTimeout { get; init; } = TimeSpan.FromSeconds(60);
    public int MaxConnectionsPerServer { get; init; } = int.MaxValue;
    public bool AnyTls { get; init; }
    public bool VerifyTls { get; init; } = true;
}
