using System.Net;
using System.Net.Security;
using System.Security.Authentication;

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

    public void Dispose() => Invoker.Dispose();
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
