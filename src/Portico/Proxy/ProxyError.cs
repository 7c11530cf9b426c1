namespace Portico.Proxy;

/// <summary>What went wrong while proxying a request.</summary>
public enum ProxyErrorKind
{
    /// <summary>The upstream refused or reset the TCP connection before anything was sent. Safe to retry.</summary>
    ConnectRefused,
    /// <summary>Connecting took longer than connect_timeout_ms. Safe to retry.</summary>
    ConnectTimeout,
    /// <summary>TLS handshake with the upstream failed. Safe to retry on another server.</summary>
    TlsHandshakeFailed,
    /// <summary>No server of the upstream group is available (all unhealthy, drained or breaker-open).</summary>
    NoHealthyServer,
    /// <summary>No route matched and no default upstream exists.</summary>
    NoRoute,
    /// <summary>The upstream did not answer within read_timeout_ms.</summary>
    UpstreamTimeout,
    /// <summary>The upstream closed or reset the connection, or broke off its response.</summary>
    UpstreamProtocolError,
    /// <summary>
    /// The upstream's response head is malformed (status line, Content-Length, header syntax, over 64 KiB). 502; not
    /// retried by the gateway, as nginx's <c>invalid_header</c> is not among its default retry conditions: the
    /// upstream did answer, so the request may have had its effect.
    /// </summary>
    UpstreamInvalidResponse,
    /// <summary>
    /// The upstream answered with a status the app retries on (<see cref="ProxyApp{TContext}.ShouldRetryResponse"/>);
    /// the answer was discarded and the request goes to another server.
    /// </summary>
    UpstreamRetryStatus,
    /// <summary>The client went away or reset its stream; nothing can be sent back.</summary>
    DownstreamClosed,
    /// <summary>Reading the client's request body failed (too large, too slow, malformed).</summary>
    RequestBodyError,
    /// <summary>The request was rejected before proxying with an explicit status.</summary>
    Rejected,
    /// <summary>A bug or an unexpected exception.</summary>
    Internal,
}

/// <summary>Which side of the proxy an error came from.</summary>
public enum ProxyErrorSource
{
    Upstream,
    Downstream,
    Internal,
}

/// <summary>
/// An expected proxy failure as a value, reported through one path that feeds passive health, metrics and logs.
/// Mapping to a status: explicit status → that; upstream error → 502; upstream timeout → 504; no healthy server →
/// 503; client gone → no response; internal → 500.
/// </summary>
public sealed class ProxyError
{
    public ProxyError(ProxyErrorKind kind, ProxyErrorSource source, bool retryable, string message, Exception? cause = null, int? status = null)
    {
        Kind = kind;
        Source = source;
        Retryable = retryable;
        Message = message;
        Cause = cause;
        _status = status;
    }

    private readonly int? _status;

    public ProxyErrorKind Kind { get; }
    public ProxyErrorSource Source { get; }
    /// <summary>Whether the request may be sent again to another server. Hooks may change this.</summary>
    public bool Retryable { get; set; }
    public string Message { get; }
    public Exception? Cause { get; }

    /// <summary>The HTTP status for the client; 0 when no response can be sent (client gone).</summary>
    public int StatusCode => _status ?? Kind switch
    {
        ProxyErrorKind.ConnectRefused or ProxyErrorKind.TlsHandshakeFailed or ProxyErrorKind.UpstreamProtocolError
            or ProxyErrorKind.UpstreamInvalidResponse or ProxyErrorKind.UpstreamRetryStatus => 502,
        ProxyErrorKind.ConnectTimeout or ProxyErrorKind.UpstreamTimeout => 504,
        ProxyErrorKind.NoHealthyServer => 503,
        ProxyErrorKind.NoRoute => 404,
        ProxyErrorKind.RequestBodyError => 400,
        ProxyErrorKind.DownstreamClosed => 0,
        ProxyErrorKind.Rejected => 400,
        _ => 500,
    };

    /// <summary>True when the failure happened before any byte reached the upstream.</summary>
    public bool IsConnectFailure => Kind is ProxyErrorKind.ConnectRefused or ProxyErrorKind.ConnectTimeout or ProxyErrorKind.TlsHandshakeFailed;

    /// <summary>A short machine-readable code for the JSON error body and logs.</summary>
    public string Code => Kind switch
    {
        ProxyErrorKind.ConnectRefused => "upstream_connect_failed",
        ProxyErrorKind.ConnectTimeout => "upstream_connect_timeout",
        ProxyErrorKind.TlsHandshakeFailed => "upstream_tls_failed",
        ProxyErrorKind.NoHealthyServer => "no_healthy_upstream",
        ProxyErrorKind.NoRoute => "no_route",
        ProxyErrorKind.UpstreamTimeout => "upstream_timeout",
        ProxyErrorKind.UpstreamProtocolError => "upstream_error",
        ProxyErrorKind.UpstreamInvalidResponse => "upstream_invalid_response",
        ProxyErrorKind.UpstreamRetryStatus => "upstream_retry_status",
        ProxyErrorKind.DownstreamClosed => "client_closed",
        ProxyErrorKind.RequestBodyError => "bad_request_body",
        ProxyErrorKind.Rejected => "rejected",
        _ => "internal_error",
    };

    public override string ToString() => Cause is null ? $"{Code}: {Message}" : $"{Code}: {Message} ({Cause.GetType().Name}: {Cause.Message})";

    /// <summary>An error with an explicit status, e.g. 401 from an auth filter.</summary>
    public static ProxyError Reject(int status, string message) =>
        new(ProxyErrorKind.Rejected, ProxyErrorSource.Downstream, retryable: false, message, status: status);
}
