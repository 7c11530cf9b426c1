namespace Portico.Proxy;

/// <summary>
/// A programmable proxy, as Pingora's <c>ProxyHttp</c> trait: the runner calls these phases for every request,
/// in this order (see docs/phases.md for the chart):
/// <code>
/// NewContext → RequestFilterAsync ─(true: answered)──────────────────────────────┐
///            └→ SelectUpstreamAsync → UpstreamRequestFilterAsync → [forward] → ResponseFilterAsync ─┤
///                 ↑            on connect failure: FailToConnect ─(Retryable)─┘                     │
///                 └─────────── on error after connect: ErrorWhileProxy ─(Retryable)─┘               │
///            on a final error: FailToProxyAsync (writes the error response)                          │
///                                                                         LoggingAsync (always, once) ┘
/// </code>
/// Only <see cref="SelectUpstreamAsync"/> is abstract; every other phase has a safe default. Per-request state
/// lives in <typeparamref name="TContext"/>; state shared by all requests lives in the app's fields and must be
/// thread-safe.
/// </summary>
/// <typeparam name="TContext">Per-request state created by <see cref="NewContext"/>.</typeparam>
public abstract class ProxyApp<TContext>
{
    /// <summary>Creates the per-request context. Called first, once per request.</summary>
    public abstract TContext NewContext(ProxySession session);

    /// <summary>
    /// Inspects or answers the request before any upstream is involved: ACLs, rate limits, auth, cache lookup,
    /// redirects. Return true when the response has been written and the request is finished; the runner then
    /// skips straight to <see cref="LoggingAsync"/>. Default: false.
    /// </summary>
    public virtual ValueTask<bool> RequestFilterAsync(ProxySession session, TContext ctx) => ValueTask.FromResult(false);

    /// <summary>
    /// Chooses where the request goes. Called once per attempt (again after a retryable failure, with
    /// <see cref="ProxySession.Peer"/> holding the peer that failed). Return null when there is no server to send to:
    /// the runner answers 503. Throw <see cref="ProxyException"/> to fail with a specific error.
    /// </summary>
    public abstract ValueTask<UpstreamPeer?> SelectUpstreamAsync(ProxySession session, TContext ctx);

    /// <summary>
    /// Edits the request about to be sent upstream: headers are already copied (hop-by-hop removed,
    /// X-Forwarded-*, X-Request-ID set). Called once per attempt. Default: nothing.
    /// </summary>
    /// <remarks>
    /// An app that overrides this phase has every request built as an <see cref="HttpRequestMessage"/> and sent
    /// through SocketsHttpHandler, which costs more CPU per request than Portico's own HTTP/1.1 client. To change
    /// headers on the fast path, edit <see cref="ProxySession.Request"/>'s headers in <see cref="RequestFilterAsync"/>
    /// instead (see docs/phases.md).
    /// </remarks>
    public virtual ValueTask UpstreamRequestFilterAsync(ProxySession session, HttpRequestMessage upstreamRequest, TContext ctx) => ValueTask.CompletedTask;

    /// <summary>
    /// Edits the response before its headers go to the client. The upstream's status (also in
    /// <see cref="ProxySession.UpstreamStatus"/>) and headers (hop-by-hop removed) have already been copied to
    /// <see cref="ProxySession.Response"/>; change them there. Default: nothing.
    /// </summary>
    public virtual ValueTask ResponseFilterAsync(ProxySession session, TContext ctx) => ValueTask.CompletedTask;

    /// <summary>
    /// Called when the upstream's response head arrives (its status in <see cref="ProxySession.UpstreamStatus"/>),
    /// before anything is copied to the client: return true to
    /// discard this answer and try another server (e.g. a 503 from a server that is restarting). The runner then
    /// calls <see cref="ErrorWhileProxy"/> with a retryable <see cref="ProxyErrorKind.UpstreamRetryStatus"/> error.
    /// Return true only when a retry will really happen (retries left, body not streamed): a false answer is sent
    /// to the client as it is. Not called for upgrades. Default: false.
    /// </summary>
    public virtual bool ShouldRetryResponse(ProxySession session, TContext ctx) => false;

    /// <summary>
    /// Called when connecting to <paramref name="peer"/> failed. Nothing was sent, so the error is retryable by
    /// default; return it (possibly with <see cref="ProxyError.Retryable"/> changed) to decide. The runner retries
    /// while the app's retry limit allows.
    /// </summary>
    public virtual ProxyError FailToConnect(ProxySession session, UpstreamPeer peer, ProxyError error, TContext ctx) => error;

    /// <summary>
    /// Called when the exchange with <paramref name="peer"/> failed after connecting (reset, timeout, bad
    /// response). Not retryable by default: the request may have had effects upstream.
    /// </summary>
    public virtual ProxyError ErrorWhileProxy(ProxySession session, UpstreamPeer peer, ProxyError error, TContext ctx) => error;

    /// <summary>
    /// Writes the response for a final error when no response has started: by default a small JSON body with the
    /// error code and request id, status from <see cref="ProxyError.StatusCode"/>. Returns the status sent (0 when
    /// nothing could be sent).
    /// </summary>
    public virtual ValueTask<int> FailToProxyAsync(ProxySession session, ProxyError error, TContext ctx) => ErrorResponse.WriteAsync(session, error);

    /// <summary>
    /// Called exactly once per request, after the response is complete or failed: metrics, access logs.
    /// <paramref name="error"/> is the final error, or null on success. Must not throw.
    /// </summary>
    public virtual ValueTask LoggingAsync(ProxySession session, ProxyError? error, TContext ctx) => ValueTask.CompletedTask;

    /// <summary>
    /// The probability (0..1) of tracing this request when the client sent no valid traceparent; when it did, the
    /// client's sampled flag decides (parent-based sampling). Null: no span for this request at all. Called after
    /// <see cref="NewContext"/>, and only when something listens to the "Portico" ActivitySource
    /// (<see cref="Observability.RequestTracing.SourceName"/>). Default: 1 (every root request, once a listener exists).
    /// </summary>
    public virtual double? TraceSamplingRate(ProxySession session, TContext ctx) => 1.0;

    /// <summary>
    /// How many times a request may be retried after a retryable failure (so at most 1 + this many attempts).
    /// Called per failure. Default: 1.
    /// </summary>
    public virtual int MaxRetries(ProxySession session, TContext ctx) => 1;

    /// <summary>
    /// How long to wait before retrying after <paramref name="error"/> (back-off). Called only when a retry will
    /// happen. Default: no wait.
    /// </summary>
    public virtual TimeSpan RetryDelay(ProxySession session, ProxyError error, TContext ctx) => TimeSpan.Zero;
}

/// <summary>Thrown from a phase to fail the request with a specific <see cref="ProxyError"/>.</summary>
public sealed class ProxyException(ProxyError error) : Exception(error.Message)
{
    public ProxyError Error { get; } = error;
}
