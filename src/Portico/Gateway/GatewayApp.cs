using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Portico.Observability;
using Portico.Proxy;
using Portico.Routing;
using Portico.Upstreams;

namespace Portico.Gateway;

/// <summary>Per-request state of the gateway.</summary>
public sealed class GatewayContext
{
    internal GatewayContext(GatewaySnapshot snapshot)
    {
        Snapshot = snapshot;
    }

    /// <summary>The config snapshot this request runs on, taken once when it arrived.</summary>
    public GatewaySnapshot Snapshot { get; private set; }

    /// <summary>Makes a kept context (<see cref="ProxySession.AppContext"/>) the context of its session's next request.</summary>
    internal void Reset(GatewaySnapshot snapshot)
    {
        Snapshot = snapshot;
        Route = null;
        Upstream = null;
        Breaker = null;
    }

    /// <summary>The matched route; null when the default upstream serves the request.</summary>
    public RouteModel? Route { get; internal set; }

    /// <summary>The upstream group chosen for the request.</summary>
    public UpstreamModel? Upstream { get; internal set; }

    /// <summary>The breaker of the current attempt's server, acquired and not yet told the outcome.</summary>
    internal CircuitBreaker? Breaker { get; set; }
}

/// <summary>
/// The ready gateway: a <see cref="ProxyApp{TContext}"/> whose phases are driven by the YAML config. Holds the
/// current <see cref="GatewaySnapshot"/> and swaps it atomically on reload.
/// </summary>
public sealed partial class GatewayApp : ProxyApp<GatewayContext>
{
    private GatewaySnapshot _snapshot;
    private readonly ILogger _accessLog;
    private readonly ILogger _logger;
    private readonly GatewayMetrics _metrics;
    /// <summary>logging.format is json: access lines carry a short message, the fields being properties.</summary>
    private readonly bool _jsonAccessLog;

    /// <param name="snapshot">The first config snapshot.</param>
    /// <param name="loggerFactory">Loggers for the access log and the gateway's events.</param>
    /// <param name="metrics">
    /// Where requests are recorded; null creates one with the snapshot's prefix (<see cref="GatewayMetrics.PrefixOf"/>).
    /// It lives as long as the app, so counters carry over reloads.
    /// </param>
    public GatewayApp(GatewaySnapshot snapshot, ILoggerFactory loggerFactory, GatewayMetrics? metrics = null)
    {
        _snapshot = snapshot;
        _accessLog = loggerFactory.CreateLogger("Portico.AccessLog");
        _logger = loggerFactory.CreateLogger<GatewayApp>();
        _metrics = metrics ?? new GatewayMetrics(GatewayMetrics.PrefixOf(snapshot.Config));
        _metrics.Bind(snapshot);
        // The logger factory is built from the same first config; a format change needs a restart.
        _jsonAccessLog = string.Equals(snapshot.Config.Logging.Format, "json", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The snapshot new requests run on.</summary>
    public GatewaySnapshot Snapshot => Volatile.Read(ref _snapshot);

    /// <summary>The gateway's Prometheus metrics: recorded by the phases, rendered by the metrics endpoint.</summary>
    public GatewayMetrics Metrics => _metrics;

    /// <summary>Makes <paramref name="next"/> current; returns the previous one. In-flight requests keep theirs.</summary>
    public GatewaySnapshot Swap(GatewaySnapshot next)
    {
        // Bound before it is published, so its first request already records into the cells of its names.
        _metrics.Bind(next);
        return Interlocked.Exchange(ref _snapshot, next);
    }

    public override GatewayContext NewContext(ProxySession session)
    {
        // A session kept by an own server's request context keeps its gateway context too: reset, not allocated.
        if (session.AppContext is GatewayContext kept)
        {
            kept.Reset(Snapshot);
            return kept;
        }
        var context = new GatewayContext(Snapshot);
        if (session.Own is not null)
        {
            session.AppContext = context;
        }
        return context;
    }

    public override async ValueTask<bool> RequestFilterAsync(ProxySession session, GatewayContext ctx)
    {
        var request = session.Request;
        var snapshot = ctx.Snapshot;
        // The Host value as sent (port included: Match drops it), not HostString.Host, which cuts a new string per request.
        var route = snapshot.Routes.Match(request.Host.Value ?? string.Empty, request.Method, request.Path.Value ?? "/", request.Headers);
        if (route is null)
        {
            if (snapshot.DefaultUpstream is null)
            {
                throw new ProxyException(new ProxyError(ProxyErrorKind.NoRoute, ProxyErrorSource.Downstream, false, "no route matches this request"));
            }
            ctx.Upstream = snapshot.DefaultUpstream;
            return false;
        }
        ctx.Route = route;

        Auth.JwtAuthenticator.StripIdentityHeaders(request);
        if (route.AuthRequired)
        {
            var failure = await snapshot.Auth.AuthenticateAsync(session);
            if (failure is not null)
            {
                await Auth.JwtAuthenticator.WriteChallengeAsync(session, failure);
                return true;
            }
        }

        if (route.Respond is { } respond)
        {
            var response = session.Response;
            response.StatusCode = respond.Status;
            response.ContentType = respond.ContentType;
            var body = Encoding.UTF8.GetBytes(respond.Body);
            response.ContentLength = body.Length;
            if (!HttpMethods.IsHead(request.Method))
            {
                await response.Body.WriteAsync(body, session.HttpContext.RequestAborted);
            }
            session.ResponseBodyBytes = body.Length;
            return true;
        }

        ctx.Upstream = route.Upstream;
        if (route.Timeout is { } timeout)
        {
            session.ReadTimeoutOverride = timeout;
        }
        if (route.StripPrefix is { Length: > 0 } prefix)
        {
            var path = request.Path;
            if (path.StartsWithSegments(prefix, StringComparison.Ordinal, out var rest))
            {
                var remaining = rest.HasValue ? rest.ToUriComponent() : "/";
                session.UpstreamPathAndQuery = request.PathBase.ToUriComponent() + remaining + request.QueryString.ToUriComponent();
            }
        }
        return false;
    }

    public override ValueTask<UpstreamPeer?> SelectUpstreamAsync(ProxySession session, GatewayContext ctx)
    {
        ReleaseBreaker(ctx);
        var upstream = ctx.Upstream;
        if (upstream is null)
        {
            return ValueTask.FromResult<UpstreamPeer?>(null);
        }
        if (session.Attempts == 0 && upstream.MaxRetries > 0)
        {
            // Only upstreams that can retry spend a clock read and an atomic per request on the budget.
            upstream.RetryBudget.RecordRequest();
        }
        var tiers = upstream.Tiers;
        var hashKey = tiers[0].UsesHashKey ? KetamaRing.HashKey(session.ClientAddress) : 0UL;
        var failed = session.Peer?.Server;
        foreach (var policy in tiers)
        {
            var exclude = failed;
            // A half-open breaker admits only a few probes at once; when this server's are taken, try another.
            for (var tries = 0; tries < 3; tries++)
            {
                var server = policy.Select(hashKey, exclude);
                if (server is null || (server == failed && tiers.Length > 1 && !ReferenceEquals(policy, tiers[^1])))
                {
                    // Nothing here, or only the server that just failed: the next tier may do better.
                    break;
                }
                var breaker = server.State.Breaker;
                if (breaker is null || breaker.TryAcquire())
                {
                    ctx.Breaker = breaker;
                    return ValueTask.FromResult<UpstreamPeer?>(ctx.Snapshot.PeerFor(upstream, server));
                }
                exclude = server;
            }
        }
        return ValueTask.FromResult<UpstreamPeer?>(null);
    }

    public override int MaxRetries(ProxySession session, GatewayContext ctx) => ctx.Upstream?.MaxRetries ?? 0;

    public override ProxyError FailToConnect(ProxySession session, UpstreamPeer peer, ProxyError error, GatewayContext ctx)
    {
        Log.ConnectFailed(_logger, session.RequestId, peer.UpstreamName ?? "-", peer.Server.Authority, error.Code);
        _metrics.RecordConnectError(peer);
        ReportFailure(peer, ctx, error.Code);
        return SpendRetryBudget(session, error, ctx);
    }

    /// <summary>
    /// retry_on_status: an answer with a listed status goes to another server when the request may be replayed
    /// (idempotent method or route, no body byte streamed), retries are left and the retry budget allows.
    /// </summary>
    public override bool ShouldRetryResponse(ProxySession session, GatewayContext ctx)
    {
        var upstream = ctx.Upstream;
        if (upstream?.RetryOnStatus is not { } statuses)
        {
            return false;
        }
        var status = session.UpstreamStatus;
        if (status >= statuses.Length || status < 0 || !statuses[status] || session.Attempts > upstream.MaxRetries
            || session.RequestBodyStarted || !(IsIdempotent(session.Request.Method) || ctx.Route is { Idempotent: true }))
        {
            return false;
        }
        return upstream.RetryBudget.TryAcquireRetry();
    }

    public override ProxyError ErrorWhileProxy(ProxySession session, UpstreamPeer peer, ProxyError error, GatewayContext ctx)
    {
        if (error.Kind == ProxyErrorKind.UpstreamRetryStatus)
        {
            // ShouldRetryResponse already spent the budget. The discarded answer counts as it would have had it been
            // delivered: a 5xx against the server, a 429 or 409 for it.
            ReportAnswer(peer, ctx, session.UpstreamStatus);
            return error;
        }
        if (error.Source == ProxyErrorSource.Upstream)
        {
            ReportFailure(peer, ctx, error.Code);
            // A reset before any answer may be retried when the method is idempotent (RFC 9110 §9.2.2) and no body
            // byte was sent: the upstream may or may not have acted, and for these methods that is harmless. Timeouts
            // are not retried: the work may still be running, and waiting twice doubles the client's wait.
            if (error.Kind == ProxyErrorKind.UpstreamProtocolError && !session.RequestBodyStarted
                && (IsIdempotent(session.Request.Method) || ctx.Route is { Idempotent: true }))
            {
                error.Retryable = true;
            }
        }
        else
        {
            ReleaseBreaker(ctx);
        }
        return SpendRetryBudget(session, error, ctx);
    }

    /// <summary>
    /// Connect failures retry at once on another server (nothing was sent, as nginx does); other retries wait a
    /// random 0–25 ms, doubling per attempt up to 250 ms ("full jitter"), so a burst of failures does not retry in
    /// lockstep.
    /// </summary>
    public override TimeSpan RetryDelay(ProxySession session, ProxyError error, GatewayContext ctx)
    {
        if (error.IsConnectFailure)
        {
            return TimeSpan.Zero;
        }
        var cap = Math.Min(250.0, 25.0 * Math.Pow(2, Math.Max(0, session.Attempts - 1)));
        return TimeSpan.FromMilliseconds(Random.Shared.NextDouble() * cap);
    }

    /// <summary>A retry the runner would make costs budget; when the budget is spent, the error is final.</summary>
    private static ProxyError SpendRetryBudget(ProxySession session, ProxyError error, GatewayContext ctx)
    {
        if (error.Retryable && ctx.Upstream is { } upstream && session.Attempts <= upstream.MaxRetries
            && !session.RequestBodyStarted && !session.Response.HasStarted && !upstream.RetryBudget.TryAcquireRetry())
        {
            error.Retryable = false;
        }
        return error;
    }

    private static void ReleaseBreaker(GatewayContext ctx)
    {
        ctx.Breaker?.Release();
        ctx.Breaker = null;
    }

    public override ValueTask ResponseFilterAsync(ProxySession session, GatewayContext ctx)
    {
        ReportAnswer(session.Peer!, ctx, session.UpstreamStatus);
        return ValueTask.CompletedTask;
    }

    /// <summary>An upstream answer for passive health and the breaker: a 5xx is a failure, anything else a success.</summary>
    private void ReportAnswer(UpstreamPeer peer, GatewayContext ctx, int status)
    {
        if (status >= 500)
        {
            ReportFailure(peer, ctx, "status " + status);
            return;
        }
        peer.Server.State.ReportSuccess();
        ctx.Breaker?.OnSuccess();
        ctx.Breaker = null;
    }

    /// <summary>GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 §9.2.2).</summary>
    internal static bool IsIdempotent(string method) =>
        HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method)
        || HttpMethods.IsPut(method) || HttpMethods.IsDelete(method) || HttpMethods.IsTrace(method);

    private void ReportFailure(UpstreamPeer peer, GatewayContext ctx, string reason)
    {
        if (ctx.Breaker is { } breaker)
        {
            var before = breaker.State;
            breaker.OnFailure();
            ctx.Breaker = null;
            if (before != CircuitState.Open && breaker.State == CircuitState.Open)
            {
                Log.BreakerOpened(_logger, peer.UpstreamName ?? "-", peer.Server.Authority, reason, breaker.Options.OpenTimeout.TotalSeconds);
            }
        }
        var upstream = ctx.Upstream;
        if (upstream is null)
        {
            return;
        }
        if (peer.Server.State.ReportFailure(upstream.PassiveMaxFails, upstream.PassiveEjectTime))
        {
            Log.Ejected(_logger, upstream.Name, peer.Server.Authority, upstream.PassiveMaxFails, reason, upstream.PassiveEjectTime.TotalSeconds);
        }
    }

    /// <summary>monitoring.tracing.sampling_rate of the request's snapshot; null (no span) when tracing is off.</summary>
    public override double? TraceSamplingRate(ProxySession session, GatewayContext ctx) =>
        ctx.Snapshot.Config.Monitoring.Tracing is { Enabled: true } tracing ? tracing.SamplingRate : null;

    public override ValueTask LoggingAsync(ProxySession session, ProxyError? error, GatewayContext ctx)
    {
        ReleaseBreaker(ctx);
        var status = session.Response.StatusCode;
        var elapsed = session.Elapsed;
        _metrics.RecordRequest(session, ctx.Route, ctx.Upstream, elapsed);
        if (session.Activity is { IsAllDataRequested: true } span)
        {
            TagSpan(span, session, ctx);
        }

        // Failures of the upstream or of Portico, 5xx answers and slow requests are always written; a client's own
        // mistakes (no route, a rejected request, a client that went away) are sampled like any request, so a scanner
        // cannot flood the log. The decision comes first: an unsampled request allocates and writes nothing.
        var logging = ctx.Snapshot.Config.Logging;
        var alwaysLog = status >= 500 || error is { Source: ProxyErrorSource.Upstream or ProxyErrorSource.Internal } || elapsed.TotalSeconds >= 1;
        if (!alwaysLog)
        {
            var rate = logging.SamplingRate ?? logging.SampleRate;
            if (!logging.AccessLog || rate <= 0 || (rate < 1.0 && Random.Shared.NextDouble() >= rate))
            {
                return ValueTask.CompletedTask;
            }
        }
        if (_accessLog.IsEnabled(LogLevel.Information))
        {
            WriteAccessLog(session, error, ctx, status, elapsed);
        }
        return ValueTask.CompletedTask;
    }

    private void WriteAccessLog(ProxySession session, ProxyError? error, GatewayContext ctx, int status, TimeSpan elapsed)
    {
        var request = session.Request;
        var client = session.ClientAddress.IsIPv4MappedToIPv6 ? session.ClientAddress.MapToIPv4() : session.ClientAddress;
        var entry = new AccessLogEntry(session.RequestId, TraceIdOf(session), client.ToString(), request.Method, request.Path.Value ?? "/",
            request.Protocol, status, session.ResponseBodyBytes, ctx.Route?.Name ?? "-", ctx.Upstream?.Name ?? "-",
            session.Peer?.Server.Authority ?? "-", elapsed.TotalMilliseconds, session.UpstreamHeaderTime.TotalMilliseconds,
            session.Attempts, error?.Code ?? "-", _jsonAccessLog);
        _accessLog.Log(LogLevel.Information, AccessLogEntry.EventId, entry, null, AccessLogEntry.Format);
    }

    /// <summary>The request's trace id: its span's, else the client's traceparent's (an untraced request still joins its trace in the logs), else "-".</summary>
    private static string TraceIdOf(ProxySession session)
    {
        if (session.Activity is { } span)
        {
            return span.TraceId.ToHexString();
        }
        var traceParent = session.Request.Headers.TraceParent;
        return traceParent.Count == 1 && traceParent[0] is { } value && RequestTracing.TraceIdOf(value) is { } id ? id : "-";
    }

    /// <summary>The gateway's part of the span: the route (name and span name) and the upstream group, known only here.</summary>
    private static void TagSpan(System.Diagnostics.Activity span, ProxySession session, GatewayContext ctx)
    {
        if (ctx.Route is { } route)
        {
            span.SetTag(RequestTracing.RouteTag, route.Name);
            // HTTP conventions: "{method} {route}"; a route-less name would be unbounded (the path).
            span.DisplayName = session.Request.Method + " " + route.Name;
        }
        if (ctx.Upstream is { } upstream)
        {
            span.SetTag(RequestTracing.UpstreamTag, upstream.Name);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2003, Level = LogLevel.Warning,
            Message = "Passive health: {Upstream}/{Server} ejected for {Seconds} s after {Failures} failures in a row (last: {Reason})")]
        public static partial void Ejected(ILogger logger, string upstream, string server, int failures, string reason, double seconds);

        [LoggerMessage(EventId = 2004, Level = LogLevel.Warning,
            Message = "Circuit breaker opened for {Upstream}/{Server} (last failure: {Reason}); half-open probes in {Seconds} s")]
        public static partial void BreakerOpened(ILogger logger, string upstream, string server, string reason, double seconds);

        [LoggerMessage(EventId = 2002, Level = LogLevel.Warning, Message = "{RequestId}: connect to {Upstream}/{Server} failed: {Code}")]
        public static partial void ConnectFailed(ILogger logger, string requestId, string upstream, string server, string code);
    }
}
