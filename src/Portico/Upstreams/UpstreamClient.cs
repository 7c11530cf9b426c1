using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Portico.Observability.Metrics;

namespace Portico.Upstreams;

/// <summary>
/// The connection pools to one upstream group: Portico's own HTTP/1.1 pools (<see cref="Http1PoolFor"/>, one per
/// server, for cleartext HTTP/1.1 requests without a body), and one long-lived <see cref="HttpMessageInvoker"/> over a
/// <see cref="SocketsHttpHandler"/> for everything else (HTTP/2, TLS, request bodies, upgrades). Never
/// <see cref="HttpClient"/> on the forward path: it buffers and adds its own timeout. Reused across reloads when its
/// <see cref="Options"/> are unchanged, so pooled connections survive.
/// </summary>
public sealed class UpstreamClient : IDisposable
{
    /// <summary>
    /// Set to <c>sockets</c> to send every request through SocketsHttpHandler (Portico's own HTTP/1.1 client off),
    /// e.g. to rule it out when chasing an upstream problem.
    /// </summary>
    public const string EngineVariable = "PORTICO_UPSTREAM_HTTP1";

    private static readonly bool OwnHttp1Enabled =
        !string.Equals(Environment.GetEnvironmentVariable(EngineVariable), "sockets", StringComparison.OrdinalIgnoreCase);

    /// <summary>"portico" or "sockets" (<see cref="EngineVariable"/>), for the start-up line.</summary>
    public static string Http1Engine => OwnHttp1Enabled ? "portico" : "sockets";

    private readonly SocketsHttpHandler _handler;
    private readonly ConcurrentDictionary<string, Http1Pool> _http1Pools = new(StringComparer.Ordinal);
    private readonly Timer? _sweep;

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
        if (UsesOwnHttp1)
        {
            var period = TimeSpan.FromMilliseconds(Math.Clamp(options.PooledConnectionIdleTimeout.TotalMilliseconds / 2, 500, 15_000));
            _sweep = new Timer(static s => ((UpstreamClient)s!).SweepIdle(), this, period, period);
        }
    }

    /// <summary>
    /// True when cleartext HTTP/1.1 requests without a body go through Portico's own pools: the group speaks HTTP/1.1
    /// and <see cref="EngineVariable"/> is not <c>sockets</c>. TLS servers always use SocketsHttpHandler.
    /// </summary>
    public bool UsesOwnHttp1 => OwnHttp1Enabled && Options.Protocol == UpstreamProtocol.Http1;

    public UpstreamClientOptions Options { get; }

    /// <summary>The invoker requests are sent with.</summary>
    public HttpMessageInvoker Invoker { get; }

    /// <summary>
    /// Counts each new TCP connection this pool opens (<c>pingora_upstream_connections_created_total</c>); set when a
    /// snapshot is bound to the gateway's metrics, null = not counted.
    /// </summary>
    internal CounterCell? ConnectionCounter { get; set; }

    public void Dispose()
    {
        _sweep?.Dispose();
        foreach (var pool in _http1Pools.Values)
        {
            pool.Dispose();
        }
        Invoker.Dispose();
    }

    /// <summary>The own HTTP/1.1 pool for <paramref name="server"/>, or null when its requests go through SocketsHttpHandler.</summary>
    internal Http1Pool? Http1PoolFor(ServerModel server)
    {
        if (!UsesOwnHttp1 || server.Tls)
        {
            return null;
        }
        return _http1Pools.GetOrAdd(server.Authority, static (authority, state) => new Http1Pool(state.Client, state.Server.Host, state.Server.Port, authority), (Client: this, Server: server));
    }

    private void SweepIdle()
    {
        foreach (var pool in _http1Pools.Values)
        {
            pool.Sweep();
        }
    }

    /// <summary>
    /// Opens a TCP connection for the own HTTP/1.1 pools: a dual-mode socket, Nagle off, within the connect timeout.
    /// A timeout surfaces as an <see cref="OperationCanceledException"/> wrapping a <see cref="TimeoutException"/>
    /// (as SocketsHttpHandler reports it); a refusal as the <see cref="SocketException"/>. Counted like the handler's.
    /// </summary>
    internal async ValueTask<(Socket Socket, Server.Epoll.EpollSocket? Io)> ConnectOwnAsync(EndPoint endPoint, CancellationToken cancellationToken)
    {
        if (endPoint is IPEndPoint ip && Server.Epoll.EpollLoop.Enabled)
        {
            // On Portico's own event loop (Server/Epoll): connected without .NET's socket engine, which would
            // otherwise watch the socket too and wake for every response.
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(Options.ConnectTimeout);
            Server.Epoll.EpollSocket? io;
            try
            {
                io = await Server.Epoll.EpollSocket.ConnectAsync(ip, timeout.Token);
            }
            catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException("connect timed out", new TimeoutException($"connect did not finish within {Options.ConnectTimeout.TotalMilliseconds:0} ms", ex));
            }
            if (io is not null)
            {
                ConnectionCounter?.Inc();
                return (io.Socket, io);
            }
        }
        return (await ConnectSocketAsync(endPoint, cancellationToken), null);
    }

    internal async ValueTask<Socket> ConnectSocketAsync(EndPoint endPoint, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Options.ConnectTimeout);
        try
        {
            await socket.ConnectAsync(endPoint, timeout.Token);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            socket.Dispose();
            throw new OperationCanceledException("connect timed out", new TimeoutException($"connect did not finish within {Options.ConnectTimeout.TotalMilliseconds:0} ms", ex));
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        ConnectionCounter?.Inc();
        return socket;
    }

    /// <summary>
    /// Opens the TCP connection for SocketsHttpHandler, as it does by default (a dual-mode socket, Nagle off), and
    /// counts it: new connections against requests sent is the pool's reuse ratio. A server that also has an own
    /// HTTP/1.1 pool shares one connection cap with it (<see cref="Http1Pool"/>): a slot is taken first and given
    /// back when the connection closes.
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
        var pool = SharedCapPool(context.DnsEndPoint);
        if (pool is not null)
        {
            await pool.AcquireForHandlerAsync(cancellationToken);
        }
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
        }
        catch
        {
            socket.Dispose();
            pool?.Release();
            throw;
        }
        ConnectionCounter?.Inc();
        return pool is null ? new NetworkStream(socket, ownsSocket: true) : new CappedNetworkStream(socket, pool);
    }

    private Http1Pool? SharedCapPool(DnsEndPoint endPoint)
    {
        if (_http1Pools.IsEmpty)
        {
            return null;
        }
        var host = endPoint.Host.Trim('[', ']');
        foreach (var pool in _http1Pools.Values)
        {
            if (pool.Port == endPoint.Port && string.Equals(pool.Host, host, StringComparison.OrdinalIgnoreCase))
            {
                return pool;
            }
        }
        return null;
    }

    /// <summary>A SocketsHttpHandler connection counted under an own pool's cap: closing it frees the slot, once.</summary>
    private sealed class CappedNetworkStream(Socket socket, Http1Pool pool) : NetworkStream(socket, ownsSocket: true)
    {
        private int _released;

        protected override void Dispose(bool disposing)
        {
            base.Dispose(disposing);
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                pool.Release();
            }
        }
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
