using System.Diagnostics;
using System.Net;
using Portico.Threading;
using Microsoft.AspNetCore.Http;

namespace Portico.Proxy;

/// <summary>
/// One downstream request as it passes the phases: the ASP.NET <see cref="Microsoft.AspNetCore.Http.HttpContext"/>
/// plus what the proxy learns along the way (request id, client address, the peer of each attempt, timings).
/// Created by the runner per request; not thread-safe (one request is handled by one logical flow). On Portico's own
/// servers one session object is kept with each pooled request context and reset for its next request
/// (<see cref="Server.OwnRequest.Session"/>), like the HttpContext it wraps: neither may be used once the request has
/// ended.
/// </summary>
public sealed class ProxySession
{
    internal ProxySession(HttpContext httpContext, string requestId)
        : this(httpContext, requestId, httpContext.Features as Server.OwnRequest)
    {
    }

    internal ProxySession(HttpContext httpContext, string requestId, Server.OwnRequest? ownRequest)
    {
        HttpContext = httpContext;
        _requestId = requestId;
        StartTimestamp = LoopClock.Timestamp;
        Own = ownRequest;
        ClientAddress = (Own is { } own ? own.ClientIp : httpContext.Connection.RemoteIpAddress) ?? IPAddress.None;
    }

    /// <summary>
    /// Makes a kept session (<see cref="Server.OwnRequest.Session"/>) the session of the context's next request: every
    /// field back to what a new session has.
    /// </summary>
    internal void Reset(string requestId)
    {
        _requestId = requestId;
        _idGenerated = false;
        ResetState();
    }

    /// <summary>
    /// <see cref="Reset(string)"/> with a newly generated id, kept as bytes (<see cref="GeneratedRequestId"/>): the heads
    /// carry those bytes, and the string is made only if something asks for <see cref="RequestId"/> (a log line, an
    /// error page, a phase), so a request that is only proxied allocates none.
    /// </summary>
    internal void ResetWithNewId()
    {
        GenerateId();
        ResetState();
    }

    /// <summary>A new session on an own server with a generated id (see <see cref="ResetWithNewId"/>).</summary>
    internal static ProxySession WithNewId(HttpContext httpContext, Server.OwnRequest? ownRequest)
    {
        var session = new ProxySession(httpContext, null!, ownRequest);
        session.GenerateId();
        return session;
    }

    private void GenerateId()
    {
        HeaderRules.WriteNewRequestId(_idBytes ??= new byte[HeaderRules.GeneratedIdLength]);
        _requestId = null;
        _idGenerated = true;
    }

    private void ResetState()
    {
        StartTimestamp = LoopClock.Timestamp;
        ClientAddress = (Own is { } own ? own.ClientIp : HttpContext.Connection.RemoteIpAddress) ?? IPAddress.None;
        Peer = null;
        Attempts = 0;
        UpstreamStatus = 0;
        UpstreamHeaderTime = default;
        ResponseBodyBytes = 0;
        RequestBodyBytes = 0;
        ReadTimeoutOverride = null;
        UpstreamPathAndQuery = null;
        RequestBodyStarted = false;
        IsUpgrade = false;
        Activity = null;
    }

    /// <summary>
    /// The app's per-request context (<see cref="ProxyApp{TContext}.NewContext"/>) kept with a kept session, for an app
    /// that resets and reuses it instead of allocating one per request (the gateway does); <see cref="Reset"/> leaves it.
    /// </summary>
    internal object? AppContext { get; set; }

    /// <summary>
    /// The request's state on Portico's own servers (HTTP/1.1 or h2c); null when Kestrel serves it (TLS HTTP/2, HTTP/1.1
    /// bodies and upgrades).
    /// </summary>
    internal Server.OwnRequest? Own { get; }

    /// <summary>
    /// <see cref="ClientAddress"/> as text for X-Forwarded-For: the connection's cached string while the address is the
    /// connection's own (a phase may replace it), else formatted.
    /// </summary>
    internal string ClientAddressText()
    {
        var client = ClientAddress;
        if (Own is { } own && ReferenceEquals(client, own.ClientIp))
        {
            return own.ClientIpText;
        }
        return FormatAddress(client);
    }

    /// <summary>An address as X-Forwarded-For shows it (IPv4-mapped IPv6 addresses as IPv4).</summary>
    internal static string FormatAddress(IPAddress address) =>
        (address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address).ToString();

    /// <summary>The downstream request and response.</summary>
    public HttpContext HttpContext { get; }

    public HttpRequest Request => HttpContext.Request;

    public HttpResponse Response => HttpContext.Response;

    /// <summary>The X-Request-ID: the client's when well-formed, else generated. Sent upstream and returned.</summary>
    public string RequestId => _requestId ??= System.Text.Encoding.ASCII.GetString(_idBytes!);

    /// <summary>The id as ASCII bytes when this session generated it; empty when it came from the client.</summary>
    internal ReadOnlySpan<byte> GeneratedRequestId => _idGenerated ? _idBytes : default;

    private string? _requestId;
    private byte[]? _idBytes;
    private bool _idGenerated;

    /// <summary>The TCP peer of the downstream connection (phases may replace it, e.g. from a trusted X-Forwarded-For).</summary>
    public IPAddress ClientAddress { get; set; }

    /// <summary>
    /// <see cref="Stopwatch.GetTimestamp"/> when the request arrived (<see cref="Threading.LoopClock.Timestamp"/>: on an own
    /// epoll loop, the loop's time of the batch that read it).
    /// </summary>
    /// <remarks>Settable inside the assembly only, for tests and benchmarks that reuse one session as many requests.</remarks>
    public long StartTimestamp { get; internal set; }

    /// <summary>The peer of the current (or last) attempt; null before upstream selection.</summary>
    public UpstreamPeer? Peer { get; internal set; }

    /// <summary>How many attempts were made to reach an upstream (1 + retries).</summary>
    public int Attempts { get; internal set; }

    /// <summary>The upstream's status code, 0 when no upstream response was received.</summary>
    public int UpstreamStatus { get; internal set; }

    /// <summary>Time until the upstream's response headers arrived, for the last attempt; 0 if none.</summary>
    public TimeSpan UpstreamHeaderTime { get; internal set; }

    /// <summary>Response body bytes sent to the client.</summary>
    public long ResponseBodyBytes { get; internal set; }

    /// <summary>Request body bytes read from the client.</summary>
    public long RequestBodyBytes { get; internal set; }

    /// <summary>Overrides the peer's read timeout for this request (a route's timeout_ms); null = the peer's.</summary>
    public TimeSpan? ReadTimeoutOverride { get; set; }

    /// <summary>Replaces the path sent upstream (e.g. after a prefix strip); null = the original request target.</summary>
    public string? UpstreamPathAndQuery { get; set; }

    /// <summary>True once any request body byte was read from the client: the request can no longer be replayed.</summary>
    public bool RequestBodyStarted { get; internal set; }

    /// <summary>True when the request is a protocol upgrade (WebSocket over HTTP/1.1 Upgrade or HTTP/2 extended CONNECT).</summary>
    public bool IsUpgrade { get; internal set; }

    /// <summary>
    /// The request's server span (<see cref="Observability.RequestTracing"/>); null when the request is not traced
    /// (no listener on the "Portico" source, tracing off for it, or not sampled). Phases may add tags to it.
    /// </summary>
    public Activity? Activity { get; internal set; }

    /// <summary>Elapsed time since the request arrived.</summary>
    public TimeSpan Elapsed => LoopClock.Elapsed(StartTimestamp);
}
