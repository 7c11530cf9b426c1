using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Portico.Observability;
using Portico.Threading;

namespace Portico.Proxy;

/// <summary>
/// Runs a <see cref="ProxyApp{TContext}"/> for each request: the terminal ASP.NET request delegate. It creates
/// the session, starts the request's span when it is traced (<see cref="RequestTracing"/>), calls the phases in
/// order, caps retries, calls logging exactly once, and then ends the span.
/// </summary>
public sealed partial class ProxyService<TContext>
{
    /// <summary>Where Kestrel puts a request's Content-Length when it also has Transfer-Encoding.</summary>
    private const string KestrelMovedContentLength = "X-Content-Length";

    private readonly ProxyApp<TContext> _app;
    private readonly HttpForwarder _forwarder;
    private readonly ILogger _logger;

    public ProxyService(ProxyApp<TContext> app, ILogger logger)
    {
        _app = app;
        _logger = logger;
        Tunnels = new UpgradedTunnels();
        _forwarder = new HttpForwarder(Tunnels, ownHttp1: !EditsUpstreamRequests(app));
    }

    /// <summary>True when the app overrides <see cref="ProxyApp{TContext}.UpstreamRequestFilterAsync"/> (it needs an HttpRequestMessage).</summary>
    private static bool EditsUpstreamRequests(ProxyApp<TContext> app)
    {
        var method = app.GetType().GetMethod(nameof(ProxyApp<TContext>.UpstreamRequestFilterAsync),
            [typeof(ProxySession), typeof(HttpRequestMessage), typeof(TContext)]);
        return method is not null && method.DeclaringType != typeof(ProxyApp<TContext>);
    }

    /// <summary>
    /// The live upgraded connections (WebSockets). A graceful shutdown calls
    /// <see cref="UpgradedTunnels.CloseAllAsync"/> first, so each ends with a close frame rather than a cut.
    /// </summary>
    public UpgradedTunnels Tunnels { get; }

    /// <summary>The request delegate: <c>app.Run(service.InvokeAsync)</c>.</summary>
    public Task InvokeAsync(HttpContext httpContext)
    {
        var run = ServeAsync(httpContext);
        return run.IsCompletedSuccessfully ? Task.CompletedTask : run.AsTask();
    }

    /// <summary>
    /// Serves one request: the phases in order, the retry loop, logging exactly once, the span. Portico's own HTTP/1.1
    /// server calls this directly (a pooled <see cref="ValueTask"/>, no Task per request); Kestrel through
    /// <see cref="InvokeAsync"/>.
    /// </summary>
    /// <remarks>
    /// The retry loop is written out here rather than in a method of its own: every async method that waits for the
    /// upstream is one more frame to suspend and resume per request (measured: each costs about 1 % of the CPU per
    /// request at c64).
    /// </remarks>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    public async ValueTask ServeAsync(HttpContext httpContext)
    {
        var session = NewSession(httpContext);
        ProxyError? error = null;
        TContext ctx = default!;
        try
        {
            ctx = _app.NewContext(session);
            if (RequestTracing.Source.HasListeners() && _app.TraceSamplingRate(session, ctx) is { } rate)
            {
                session.Activity = RequestTracing.StartServerSpan(session, rate);
            }
            // Portico's own server refuses an ambiguous request before it gets here (RequestHeadParser).
            error = session.Own is null ? RejectSmuggling(session) : null;
            if (error is null && !await _app.RequestFilterAsync(session, ctx))
            {
                // :: the attempts: select, forward, and on a retryable failure select again
                while (true)
                {
                    var peer = await _app.SelectUpstreamAsync(session, ctx);
                    if (peer is null)
                    {
                        error = new ProxyError(ProxyErrorKind.NoHealthyServer, ProxyErrorSource.Upstream, false, "no healthy upstream server");
                        break;
                    }
                    session.Peer = peer;
                    session.Attempts++;
                    var server = peer.Server.State;
                    server.OnRequestStart();
                    try
                    {
                        error = await _forwarder.ForwardAsync(session, peer, _app, ctx);
                    }
                    finally
                    {
                        server.OnRequestEnd();
                    }
                    if (error is null)
                    {
                        break;
                    }
                    error = error.IsConnectFailure
                        ? _app.FailToConnect(session, peer, error, ctx)
                        : _app.ErrorWhileProxy(session, peer, error, ctx);
                    // A retry is only possible while nothing has gone to the client and the body can be replayed.
                    var canRetry = error.Retryable && !session.Response.HasStarted && !session.RequestBodyStarted
                        && session.Attempts <= _app.MaxRetries(session, ctx);
                    if (!canRetry)
                    {
                        break;
                    }
                    Log.Retrying(_logger, session.RequestId, peer.Server.Authority, error.Code);
                    var delay = _app.RetryDelay(session, error, ctx);
                    if (delay > TimeSpan.Zero)
                    {
                        await Task.Delay(delay, session.HttpContext.RequestAborted);
                    }
                }
            }
            if (error is not null)
            {
                await _app.FailToProxyAsync(session, error, ctx);
            }
        }
        catch (ProxyException pe)
        {
            error = pe.Error;
            await SafeFailAsync(session, error, ctx);
        }
        catch (Exception ex) when (httpContext.RequestAborted.IsCancellationRequested)
        {
            error = new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed the request", ex);
        }
        catch (Exception ex)
        {
            error = new ProxyError(ProxyErrorKind.Internal, ProxyErrorSource.Internal, false, "internal error", ex);
            Log.Unhandled(_logger, session.RequestId, ex);
            await SafeFailAsync(session, error, ctx);
        }
        finally
        {
            try
            {
                await _app.LoggingAsync(session, error, ctx);
            }
            catch (Exception ex)
            {
                Log.LoggingPhaseFailed(_logger, session.RequestId, ex);
            }
            if (session.Activity is { } span)
            {
                // After LoggingAsync, so the app's tags (the gateway's route) are on the span when it ends.
                RequestTracing.EndServerSpan(span, session, error);
            }
        }
    }

    private static readonly int ResponseRequestId = Http1.HeaderStrings.XRequestId;

    /// <summary>
    /// The session of a new request: its id (the client's when well-formed, else a new one), also sent back. On the own
    /// servers the request context's kept session is reset and reused (<see cref="Server.OwnRequest.Session"/>).
    /// </summary>
    private static ProxySession NewSession(HttpContext httpContext)
    {
        var own = httpContext.Features as Server.OwnRequest;
        string requestId;
        if (own is not null && !own.RequestHeaderTable.Has(Server.RequestHeaderNames.XRequestId))
        {
            // The usual case on the own servers, no id from the client: no lookups by string on either table, and the
            // id stays bytes (both heads take it as such; the string is made only when asked for).
            ProxySession session;
            if (own.Session is { } reused)
            {
                reused.ResetWithNewId();
                session = reused;
            }
            else
            {
                session = own.Session = ProxySession.WithNewId(httpContext, own);
            }
            own.ResponseHeaderTable.SetKnownAscii(ResponseRequestId, session.GeneratedRequestId);
            return session;
        }
        else
        {
            var incomingId = httpContext.Request.Headers["X-Request-ID"];
            requestId = incomingId.Count == 1 && HeaderRules.IsValidRequestId(incomingId[0]) ? incomingId[0]! : HeaderRules.NewRequestId();
            httpContext.Response.Headers["X-Request-ID"] = requestId;
        }
        if (own is null)
        {
            return new ProxySession(httpContext, requestId, null);
        }
        if (own.Session is { } kept)
        {
            kept.Reset(requestId);
            return kept;
        }
        return own.Session = new ProxySession(httpContext, requestId, own);
    }

    /// <summary>
    /// Request smuggling defence (RFC 9112 §6.1): a message with both Transfer-Encoding and Content-Length is
    /// ambiguous; a proxy that forwards it lets the two ends disagree on where it ends. Reject it.
    /// </summary>
    /// <remarks>
    /// Kestrel's HTTP/1.1 parser (dotnet/aspnetcore#43523) removes Content-Length when Transfer-Encoding is present
    /// and keeps the client's value as <c>X-Content-Length</c>, so by the time the app runs, Content-Length alone never
    /// shows the conflict; checking it alone made this defence dead code. A client that sends its own X-Content-Length
    /// with a chunked body is rejected too: no legitimate client needs that combination.
    /// </remarks>
    private static ProxyError? RejectSmuggling(ProxySession session)
    {
        var headers = session.Request.Headers;
        if (headers.TransferEncoding.Count > 0 && (headers.ContentLength is not null || headers.ContainsKey(KestrelMovedContentLength)))
        {
            session.HttpContext.Response.Headers.Connection = "close";
            return ProxyError.Reject(400, "Content-Length and Transfer-Encoding must not both be present");
        }
        return null;
    }

    private async ValueTask SafeFailAsync(ProxySession session, ProxyError error, TContext ctx)
    {
        try
        {
            if (ctx is not null)
            {
                await _app.FailToProxyAsync(session, error, ctx);
            }
            else
            {
                await ErrorResponse.WriteAsync(session, error);
            }
        }
        catch (Exception ex)
        {
            Log.ErrorResponseFailed(_logger, session.RequestId, ex);
            session.HttpContext.Abort();
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1001, Level = LogLevel.Error, Message = "Unhandled error proxying request {RequestId}")]
        public static partial void Unhandled(ILogger logger, string requestId, Exception exception);

        [LoggerMessage(EventId = 1002, Level = LogLevel.Error, Message = "Logging phase failed for request {RequestId}")]
        public static partial void LoggingPhaseFailed(ILogger logger, string requestId, Exception exception);

        [LoggerMessage(EventId = 1003, Level = LogLevel.Debug, Message = "Request {RequestId}: retrying after {Code} from {Server}")]
        public static partial void Retrying(ILogger logger, string requestId, string server, string code);

        [LoggerMessage(EventId = 1004, Level = LogLevel.Warning, Message = "Could not write the error response for request {RequestId}")]
        public static partial void ErrorResponseFailed(ILogger logger, string requestId, Exception exception);
    }
}
