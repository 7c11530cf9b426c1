using System.Buffers;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Portico.Threading;

namespace Portico.Proxy;

/// <summary>
/// Sends one attempt of a downstream request to an <see cref="UpstreamPeer"/> and streams the response back.
/// </summary>
/// <remarks>
/// The steps, marked <c>// :: Step N</c> in the code:
/// 1. Build the upstream request: method, target, version (exact), body as streaming content.
/// 2. Copy request headers, dropping hop-by-hop ones (and whatever Connection names); keep TE: trailers; set
///    X-Forwarded-For/Proto/Host, Via and X-Request-ID; when the request is traced, send the span's traceparent
///    (and the tracestate it continues) instead of the client's. For an upgrade, keep Upgrade/Connection (or, for an
///    HTTP/2 extended CONNECT, translate it into an HTTP/1.1 WebSocket handshake).
/// 3. Let the app edit the request (<see cref="ProxyApp{TContext}.UpstreamRequestFilterAsync"/>).
/// 4. Send with ResponseHeadersRead, under the read timeout and the client's abort token. A failure here is
///    classified: connect failures are retryable (nothing was sent); the rest are not.
/// 5. Copy status and headers to the client (hop-by-hop dropped), let the app edit them
///    (<see cref="ProxyApp{TContext}.ResponseFilterAsync"/>).
/// 6. For a 101 answer to an upgrade: switch both sides to raw streams and copy both ways until one closes.
/// 7. Otherwise stream the body (read timeout renewed per read), then copy trailers.
/// Once a response has started, a failure can only abort the downstream stream; that is what happens.
/// </remarks>
internal sealed partial class HttpForwarder
{
    private const int ResponseBufferSize = 64 * 1024;

    private readonly UpgradedTunnels _tunnels;
    private readonly bool _ownHttp1;

    /// <param name="tunnels">Where upgraded connections are tracked.</param>
    /// <param name="ownHttp1">
    /// True when bodiless cleartext HTTP/1.1 requests may go through Portico's own client (false when the app edits
    /// upstream requests as <see cref="HttpRequestMessage"/>s, which only SocketsHttpHandler sends).
    /// </param>
    public HttpForwarder(UpgradedTunnels tunnels, bool ownHttp1 = true)
    {
        _tunnels = tunnels;
        _ownHttp1 = ownHttp1;
    }

    /// <summary>Forwards one attempt. Returns null on success, else the error (the response may have started).</summary>
    public ValueTask<ProxyError?> ForwardAsync<TContext>(ProxySession session, UpstreamPeer peer, ProxyApp<TContext> app, TContext ctx)
    {
        if (session.Own is { Plain: true } own && _ownHttp1 && peer.Http1 is { } pool)
        {
            // A bodiless, non-upgrade request on Portico's own servers: straight to the own client, without a frame of
            // its own here (see ProxyService.ServeAsync on frames per request).
            return ForwardHttp1Async(session, pool, app, ctx, session.ReadTimeoutOverride ?? peer.ReadTimeout, own.RequestAborted);
        }
        return ForwardAnyAsync(session, peer, app, ctx);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private async ValueTask<ProxyError?> ForwardAnyAsync<TContext>(ProxySession session, UpstreamPeer peer, ProxyApp<TContext> app, TContext ctx)
    {
        var httpContext = session.HttpContext;
        var request = httpContext.Request;
        var requestAborted = httpContext.RequestAborted;
        var readTimeout = session.ReadTimeoutOverride ?? peer.ReadTimeout;

        // :: Step 1
        var extendedConnect = httpContext.Features.Get<IHttpExtendedConnectFeature>();
        var isExtendedConnect = extendedConnect is { IsExtendedConnect: true };
        var upgradeFeature = httpContext.Features.Get<IHttpUpgradeFeature>();
        // Only WebSocket upgrades are tunnelled, as Envoy's default upgrade_configs: an "Upgrade: h2c" from
        // `curl --http2 http://...` is an offer the proxy declines, so it becomes an ordinary HTTP/1.1 request.
        var isH1Upgrade = !isExtendedConnect && upgradeFeature is { IsUpgradableRequest: true } && peer.Version.Major == 1
            && IsWebSocketUpgrade(request.Headers.Upgrade);
        session.IsUpgrade = isExtendedConnect || isH1Upgrade;
        var canHaveBody = httpContext.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? (request.ContentLength > 0);
        if (_ownHttp1 && peer.Http1 is { } pool && !session.IsUpgrade && !canHaveBody)
        {
            // Steps 2–7 on Portico's own HTTP/1.1 client (HttpForwarder.Http1.cs).
            return await ForwardHttp1Async(session, pool, app, ctx, readTimeout, requestAborted);
        }

        var upstreamRequest = new HttpRequestMessage
        {
            Method = isExtendedConnect ? HttpMethod.Get : HttpMethod.Parse(request.Method),
            RequestUri = BuildTarget(session, peer),
            Version = peer.Version,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };

        StreamingRequestContent? content = null;
        if (canHaveBody && !session.IsUpgrade)
        {
            content = new StreamingRequestContent(request.Body, session, requestAborted);
            upstreamRequest.Content = content;
        }

        // :: Step 2
        var sink = new MessageHeaderSink(upstreamRequest);
        CopyRequestHeaders(session, ref sink, isH1Upgrade);
        if (content is not null && request.ContentLength is { } length)
        {
            content.Headers.ContentLength = length;
        }
        if (isExtendedConnect)
        {
            // RFC 8441 §5: the HTTP/2 stream carries the WebSocket; an HTTP/1.1 upstream needs the classic
            // handshake, whose key HTTP/2 clients do not send. We make one; the upstream's accept hash is ours to
            // check, not the client's, so it is not passed down.
            upstreamRequest.Headers.TryAddWithoutValidation("Connection", "Upgrade");
            upstreamRequest.Headers.TryAddWithoutValidation("Upgrade", extendedConnect!.Protocol ?? "websocket");
            upstreamRequest.Headers.Remove("Sec-WebSocket-Key");
            upstreamRequest.Headers.TryAddWithoutValidation("Sec-WebSocket-Key", Convert.ToBase64String(Guid.NewGuid().ToByteArray()));
            if (!upstreamRequest.Headers.Contains("Sec-WebSocket-Version"))
            {
                upstreamRequest.Headers.TryAddWithoutValidation("Sec-WebSocket-Version", "13");
            }
        }

        // :: Step 3
        await app.UpstreamRequestFilterAsync(session, upstreamRequest, ctx);

        // :: Step 4
        using var timeout = TimeoutSource.Rent(requestAborted, readTimeout);
        var cts = timeout.Source;
        HttpResponseMessage response;
        var sendStarted = LoopClock.Timestamp;
        try
        {
            response = await peer.Client.Invoker.SendAsync(upstreamRequest, cts.Token);
        }
        catch (Exception ex)
        {
            upstreamRequest.Dispose();
            return ClassifySendFailure(ex, session, content, cts, requestAborted, readTimeout);
        }
        session.UpstreamHeaderTime = LoopClock.Elapsed(sendStarted);
        session.UpstreamStatus = (int)response.StatusCode;

        using (response)
        {
            // :: Step 5
            var switching = response.StatusCode == HttpStatusCode.SwitchingProtocols && session.IsUpgrade;
            if (!switching && app.ShouldRetryResponse(session, ctx))
            {
                return new ProxyError(ProxyErrorKind.UpstreamRetryStatus, ProxyErrorSource.Upstream, true,
                    $"upstream answered {session.UpstreamStatus}; retrying on another server");
            }
            var downstream = httpContext.Response;
            downstream.StatusCode = switching && isExtendedConnect ? StatusCodes.Status200OK : (int)response.StatusCode;
            try
            {
                CopyResponseHeaders(response, downstream.Headers, switching, isExtendedConnect);
            }
            catch (InvalidOperationException ex)
            {
                // Kestrel refuses a value it cannot send (an invalid Content-Length, a control character): the
                // upstream's answer is malformed, so 502 (RFC 9112 §6.3 ¶5), not an internal error.
                return new ProxyError(ProxyErrorKind.UpstreamInvalidResponse, ProxyErrorSource.Upstream, false, "upstream sent an invalid response header: " + ex.Message, ex);
            }
            downstream.Headers["X-Request-ID"] = session.RequestId;
            if (isH1Upgrade && !switching)
            {
                // The upstream declined the upgrade; this connection carries ordinary HTTP from here on.
                downstream.Headers.Remove("Upgrade");
            }
            if (content is not null && !session.RequestBodyStarted && ExpectsContinue(request))
            {
                // RFC 9110 §10.1.1: the upstream answered before asking for the body, so the client got no 100 Continue
                // and may or may not send the body now. curl, after a 417, sends its retry on the same connection,
                // which Kestrel would read as the unsent body of this request (and the retry then hangs). A server
                // answering before the body SHOULD say whether it closes; closing is the only framing both ends agree on.
                downstream.Headers.Connection = "close";
            }
            await app.ResponseFilterAsync(session, ctx);

            // :: Step 6
            if (switching)
            {
                return await ProxyUpgradeAsync(session, response, isExtendedConnect ? extendedConnect! : null, upgradeFeature, requestAborted);
            }

            // :: Step 7
            var error = await CopyResponseBodyAsync(session, response, cts, readTimeout, requestAborted);
            if (error is not null)
            {
                return error;
            }
            if (content is not null && !content.Completion.IsCompleted)
            {
                // The upstream finished answering while the client was still sending (e.g. an early error reply).
                // Stop reading the rest of the body: it has nowhere to go.
                cts.Cancel();
            }
            CopyTrailers(response, httpContext);
            return null;
        }
    }

    private static bool IsWebSocketUpgrade(StringValues upgrade)
    {
        for (var i = 0; i < upgrade.Count; i++)
        {
            if (upgrade[i] is { } value && value.Contains("websocket", StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>True for an HTTP/1.1 request with <c>Expect: 100-continue</c> (HTTP/2 has no connection to close).</summary>
    private static bool ExpectsContinue(HttpRequest request) =>
        HttpProtocol.IsHttp11(request.Protocol)
        && request.Headers.Expect.ToString().Contains("100-continue", StringComparison.OrdinalIgnoreCase);

    private static Uri BuildTarget(ProxySession session, UpstreamPeer peer) =>
        new(peer.BaseAddress + UpstreamTarget(session), UriKind.Absolute);

    /// <summary>
    /// The request target sent upstream: the app's replacement (a stripped prefix), else the target as the client sent
    /// it (like nginx proxy_pass without a URI part), so encoded characters are not decoded and re-encoded differently.
    /// </summary>
    private static string UpstreamTarget(ProxySession session)
    {
        if (session.UpstreamPathAndQuery is { } replaced)
        {
            return replaced;
        }
        var raw = session.HttpContext.Features.Get<IHttpRequestFeature>()?.RawTarget;
        var request = session.Request;
        return raw is { Length: > 0 } && raw[0] == '/'
            ? raw
            : request.PathBase.Add(request.Path).ToUriComponent() + request.QueryString.ToUriComponent();
    }

    /// <summary>
    /// The request headers that go upstream, written to <paramref name="sink"/> (an <see cref="HttpRequestMessage"/> or
    /// the own client's request head): the client's, minus hop-by-hop ones, the ones Connection names, and the ones the
    /// proxy sets itself; then Host, X-Forwarded-*, X-Request-ID, traceparent and Via.
    /// </summary>
    private static void CopyRequestHeaders<TSink>(ProxySession session, ref TSink sink, bool keepUpgrade)
        where TSink : struct, IUpstreamHeaderSink
    {
        var request = session.Request;
        var headers = request.Headers;
        var connection = headers.Connection;
        var dropConnectionNamed = HeaderRules.HasCustomConnectionTokens(connection);
        string? forwardedFor = null;
        var span = session.Activity;

        foreach (var header in headers)
        {
            var name = header.Key;
            if (name.Length > 0 && name[0] == ':')
            {
                continue;
            }
            if (HeaderRules.IsHopByHop(name))
            {
                if (name.Equals("TE", StringComparison.OrdinalIgnoreCase) && HeaderRules.IsTrailersOnlyTe(header.Value))
                {
                    sink.Add("TE", "trailers");
                }
                continue;
            }
            if (dropConnectionNamed && HeaderRules.ConnectionNames(connection, name))
            {
                continue;
            }
            if (name.Equals("X-Forwarded-For", StringComparison.OrdinalIgnoreCase))
            {
                forwardedFor = header.Value.ToString();
                continue;
            }
            if (span is not null && IsTraceContextHeader(name))
            {
                continue;
            }
            if (IsSetByProxy(name))
            {
                continue;
            }
            sink.Add(name, header.Value);
        }

        if (keepUpgrade)
        {
            sink.Add("Connection", "Upgrade");
            sink.Add("Upgrade", headers.Upgrade);
        }
        AddProxyHeaders(session, ref sink, request.Host.Value, forwardedFor, headers.Via, request.Protocol, DownstreamScheme(session.HttpContext));
    }

    /// <summary>
    /// The headers the proxy sets on every upstream request, after the client's: Host (kept as the client sent it, as
    /// Envoy, HAProxy and Caddy do) and X-Forwarded-Host repeating it, X-Forwarded-For (the client's list, if any, plus
    /// the client), X-Forwarded-Proto, X-Request-ID, the span's traceparent when traced, and Via.
    /// </summary>
    private static void AddProxyHeaders<TSink>(ProxySession session, ref TSink sink, string? host, string? forwardedFor, StringValues via, string protocol, string scheme)
        where TSink : struct, IUpstreamHeaderSink
    {
        if (!string.IsNullOrEmpty(host))
        {
            sink.Host(host);
            sink.Add("X-Forwarded-Host", host);
        }
        var clientText = session.ClientAddressText();
        sink.Add("X-Forwarded-For", forwardedFor is null ? clientText : forwardedFor + ", " + clientText);
        sink.Add("X-Forwarded-Proto", scheme);
        sink.RequestId(session);
        if (session.Activity is { } span)
        {
            // W3C Trace Context §3.2/§3.3: the upstream's parent is this span, not the client's; the span carries the
            // client's tracestate when it continues the client's trace, and none when the trace started here. Without
            // a span (tracing off, or not sampled) the client's headers went through unchanged.
            sink.Add("traceparent", span.Id!);
            if (span.TraceStateString is { Length: > 0 } traceState)
            {
                sink.Add("tracestate", traceState);
            }
        }
        var viaValue = ViaEntry(protocol);
        sink.Add("Via", StringValues.IsNullOrEmpty(via) ? viaValue : via.ToString() + ", " + viaValue);
    }

    /// <summary>Where <see cref="CopyRequestHeaders{TSink}"/> puts the upstream request's headers.</summary>
    internal interface IUpstreamHeaderSink
    {
        void Add(string name, string value);

        void Add(string name, StringValues values);

        void Host(string host);

        /// <summary>X-Request-ID with the session's id (as bytes when the sink can take them).</summary>
        void RequestId(ProxySession session);
    }

    /// <summary>Headers into an <see cref="HttpRequestMessage"/> for SocketsHttpHandler (content headers into its content).</summary>
    private readonly struct MessageHeaderSink(HttpRequestMessage message) : IUpstreamHeaderSink
    {
        public void Add(string name, string value)
        {
            if (!message.Headers.TryAddWithoutValidation(name, value))
            {
                message.Content?.Headers.TryAddWithoutValidation(name, value);
            }
        }

        public void Add(string name, StringValues values)
        {
            if (values.Count == 1)
            {
                Add(name, values.ToString());
            }
            else if (!message.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values))
            {
                message.Content?.Headers.TryAddWithoutValidation(name, (IEnumerable<string?>)values);
            }
        }

        public void Host(string host) => message.Headers.Host = host;

        public void RequestId(ProxySession session) => Add("X-Request-ID", session.RequestId);
    }

    /// <summary>Host, Via, X-Request-ID, X-Forwarded-Proto and X-Forwarded-Host: the proxy writes its own.</summary>
    private static bool IsSetByProxy(string name) => name.Length switch
    {
        3 => name.Equals("Via", StringComparison.OrdinalIgnoreCase),
        4 => name.Equals("Host", StringComparison.OrdinalIgnoreCase),
        12 => name.Equals("X-Request-ID", StringComparison.OrdinalIgnoreCase),
        16 => name.Equals("X-Forwarded-Host", StringComparison.OrdinalIgnoreCase),
        17 => name.Equals("X-Forwarded-Proto", StringComparison.OrdinalIgnoreCase),
        _ => false,
    };

    private static bool IsTraceContextHeader(string name) =>
        name.Equals("traceparent", StringComparison.OrdinalIgnoreCase) || name.Equals("tracestate", StringComparison.OrdinalIgnoreCase);

    /// <summary>"https" when the client connection really is TLS; never taken from the client's :scheme.</summary>
    internal static string DownstreamScheme(HttpContext context) =>
        context.Features.Get<ITlsConnectionFeature>() is null || Hosting.H2cPriorKnowledge.IsCleartextH2(context) ? "http" : "https";

    private static string ViaEntry(string protocol) => protocol switch
    {
        "HTTP/2" => "2 portico",
        "HTTP/3" => "3 portico",
        "HTTP/1.0" => "1.0 portico",
        _ => "1.1 portico",
    };

    private static void CopyResponseHeaders(HttpResponseMessage response, IHeaderDictionary destination, bool switching, bool extendedConnect)
    {
        var connection = response.Headers.NonValidated.TryGetValues("Connection", out var connectionValues)
            ? ToStringValues(connectionValues)
            : StringValues.Empty;
        var dropConnectionNamed = HeaderRules.HasCustomConnectionTokens(connection);
        CopyHeaderCollection(response.Headers.NonValidated, destination, connection, dropConnectionNamed, switching && !extendedConnect);
        CopyHeaderCollection(response.Content.Headers.NonValidated, destination, connection, dropConnectionNamed, keepUpgrade: false);
        if (response.Headers.NonValidated.Contains("Transfer-Encoding"))
        {
            // RFC 9112 §6.3 ¶3: Transfer-Encoding overrides Content-Length, and an intermediary must drop the latter
            // (the body is re-framed for the client); passed on, it makes Kestrel fail the response midway.
            destination.ContentLength = null;
        }
        if (switching && extendedConnect)
        {
            destination.Remove("Sec-WebSocket-Accept");
        }
    }

    private static void CopyHeaderCollection(HttpHeadersNonValidated source, IHeaderDictionary destination, StringValues connection, bool dropConnectionNamed, bool keepUpgrade)
    {
        foreach (var header in source)
        {
            var name = header.Key;
            if (HeaderRules.IsHopByHop(name))
            {
                if (keepUpgrade && name.Equals("Upgrade", StringComparison.OrdinalIgnoreCase))
                {
                    destination[name] = ToStringValues(header.Value);
                }
                continue;
            }
            if (dropConnectionNamed && HeaderRules.ConnectionNames(connection, name))
            {
                continue;
            }
            destination[name] = ToStringValues(header.Value);
        }
    }

    private static StringValues ToStringValues(HeaderStringValues values)
    {
        if (values.Count == 1)
        {
            return values.ToString();
        }
        var array = new string[values.Count];
        var i = 0;
        foreach (var value in values)
        {
            array[i++] = value;
        }
        return array;
    }

    private static ProxyError ClassifySendFailure(Exception ex, ProxySession session, StreamingRequestContent? content, CancellationTokenSource cts, CancellationToken requestAborted, TimeSpan readTimeout)
    {
        if (requestAborted.IsCancellationRequested || content?.ReadError is not null && content.ClientAborted)
        {
            return new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed the request", ex);
        }
        if (content?.ReadError is { } readError)
        {
            var status = readError is BadHttpRequestException bad ? bad.StatusCode : 400;
            return new ProxyError(ProxyErrorKind.RequestBodyError, ProxyErrorSource.Downstream, false, "could not read the request body", readError, status);
        }
        if (ex is OperationCanceledException && cts.IsCancellationRequested)
        {
            return new ProxyError(ProxyErrorKind.UpstreamTimeout, ProxyErrorSource.Upstream, false,
                $"upstream did not answer within {readTimeout.TotalMilliseconds:0} ms", ex);
        }
        if (ex is HttpRequestException hre)
        {
            // Connect-stage failures: nothing reached the upstream, so another server may be tried.
            if (hre.HttpRequestError == HttpRequestError.ConnectionError && !session.RequestBodyStarted)
            {
                return new ProxyError(ProxyErrorKind.ConnectRefused, ProxyErrorSource.Upstream, true, "could not connect to upstream", ex);
            }
            if (hre.HttpRequestError == HttpRequestError.SecureConnectionError || hre.InnerException is AuthenticationException)
            {
                return new ProxyError(ProxyErrorKind.TlsHandshakeFailed, ProxyErrorSource.Upstream, true, "TLS handshake with upstream failed", ex);
            }
            if (hre.InnerException is TimeoutException || hre.InnerException is OperationCanceledException { InnerException: TimeoutException })
            {
                return new ProxyError(ProxyErrorKind.ConnectTimeout, ProxyErrorSource.Upstream, !session.RequestBodyStarted, "timed out connecting to upstream", ex);
            }
            if (hre.HttpRequestError == HttpRequestError.InvalidResponse)
            {
                return new ProxyError(ProxyErrorKind.UpstreamInvalidResponse, ProxyErrorSource.Upstream, false, "invalid response from upstream", ex);
            }
            if (hre.InnerException is SocketException && !session.RequestBodyStarted && hre.HttpRequestError == HttpRequestError.Unknown)
            {
                return new ProxyError(ProxyErrorKind.ConnectRefused, ProxyErrorSource.Upstream, true, "could not connect to upstream", ex);
            }
            return new ProxyError(ProxyErrorKind.UpstreamProtocolError, ProxyErrorSource.Upstream, false, "upstream connection failed", ex);
        }
        if (ex is OperationCanceledException { InnerException: TimeoutException })
        {
            // SocketsHttpHandler.ConnectTimeout surfaces as a cancellation wrapping a TimeoutException.
            return new ProxyError(ProxyErrorKind.ConnectTimeout, ProxyErrorSource.Upstream, !session.RequestBodyStarted, "timed out connecting to upstream", ex);
        }
        return new ProxyError(ProxyErrorKind.Internal, ProxyErrorSource.Internal, false, "unexpected error sending upstream", ex);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<ProxyError?> CopyResponseBodyAsync(ProxySession session, HttpResponseMessage response, CancellationTokenSource cts, TimeSpan readTimeout, CancellationToken requestAborted)
    {
        var downstream = session.Response;
        Stream source;
        try
        {
            source = await response.Content.ReadAsStreamAsync(cts.Token);
        }
        catch (Exception ex)
        {
            return BodyError(session, ex, cts, requestAborted, readTimeout, upstreamSide: true);
        }

        var destination = downstream.Body;
        byte[]? buffer = null;
        try
        {
            // The headers leave with the first body bytes when those are ready at once (one write, not two), and on
            // their own as soon as the body is not: a streaming response (gRPC initial metadata, SSE) must not wait
            // for its first message. It may seem enough to call Response.StartAsync, but Kestrel only buffers the
            // headers there (dotnet/aspnetcore#7780); a flush sends them. Never early for a gRPC "Trailers-Only"
            // answer (grpc-status among the headers, gRPC PROTOCOL-HTTP2.md): it has no body, and left alone
            // Kestrel sends it as one HEADERS frame with END_STREAM, which clients read as trailers; flushed early it
            // becomes HEADERS + empty DATA, and clients report UNKNOWN "Stream removed" instead of the status.
            // Cleared once the first body bytes are written: those carry the headers with them.
            var flushHeadersEarly = !response.Headers.NonValidated.Contains("grpc-status");
            // A body with a Content-Length is a finite transfer already under way: read it straight into a buffer.
            // Only an open-ended body (chunked or close-delimited: SSE, gRPC streams, long polls) first waits with a
            // zero-byte read, so an idle stream holds no buffer; for a sized body that read is one more receive call
            // (and often one more epoll round) per response for nothing.
            var contentLength = response.Content.Headers.ContentLength;
            while (true)
            {
                int read;
                try
                {
                    cts.CancelAfter(readTimeout);
                    if (buffer is null)
                    {
                        if (contentLength is null)
                        {
                            // Zero-byte read: wait for data without holding a buffer (idle streams cost no memory).
                            var ready = source.ReadAsync(Memory<byte>.Empty, cts.Token);
                            await (flushHeadersEarly && !ready.IsCompleted ? FlushHeadersWhileWaitingAsync(ready, destination, requestAborted, CancelSource, cts) : ready);
                        }
                        buffer = ArrayPool<byte>.Shared.Rent(contentLength is { } length && length < ResponseBufferSize ? (int)Math.Max(length, 1) : ResponseBufferSize);
                    }
                    var pending = source.ReadAsync(buffer.AsMemory(), cts.Token);
                    read = await (flushHeadersEarly && !pending.IsCompleted ? FlushHeadersWhileWaitingAsync(pending, destination, requestAborted, CancelSource, cts) : pending);
                }
                catch (DownstreamFlushException ex)
                {
                    return BodyError(session, ex.InnerException!, cts, requestAborted, readTimeout, upstreamSide: false);
                }
                catch (Exception ex)
                {
                    return BodyError(session, ex, cts, requestAborted, readTimeout, upstreamSide: true);
                }
                if (read == 0)
                {
                    break;
                }
                try
                {
                    await destination.WriteAsync(buffer.AsMemory(0, read), requestAborted);
                    flushHeadersEarly = false;
                }
                catch (Exception ex)
                {
                    return BodyError(session, ex, cts, requestAborted, readTimeout, upstreamSide: false);
                }
                session.ResponseBodyBytes += read;
            }
            return null;
        }
        catch (Exception ex)
        {
            return BodyError(session, ex, cts, requestAborted, readTimeout, upstreamSide: false);
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            await source.DisposeAsync();
        }
    }

    /// <summary>
    /// Flushes the headers to the client while a read from the upstream that was not ready at once is pending (see
    /// <see cref="CopyResponseBodyAsync"/>), then awaits the read. A failed flush cancels the read and is reported as a
    /// <see cref="DownstreamFlushException"/>, so the caller blames the right side.
    /// </summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<int> FlushHeadersWhileWaitingAsync(ValueTask<int> read, Stream destination, CancellationToken requestAborted, Action<object> cancelRead, object readOwner)
    {
        var waiting = read.AsTask();
        try
        {
            await destination.FlushAsync(requestAborted);
        }
        catch (Exception ex)
        {
            cancelRead(readOwner);
            await ((Task)waiting).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw new DownstreamFlushException(ex);
        }
        return await waiting;
    }

    /// <summary>For <see cref="FlushHeadersWhileWaitingAsync"/>: SocketsHttpHandler's read ends with its request's source.</summary>
    private static readonly Action<object> CancelSource = static cts => ((CancellationTokenSource)cts).Cancel();

    /// <summary>For <see cref="FlushHeadersWhileWaitingAsync"/>: the own client's read ends when its connection closes.</summary>
    private static readonly Action<object> CloseConnection = static connection => ((Portico.Upstreams.UpstreamConnection)connection).Dispose();

    /// <summary>The client side failed while the headers were flushed early.</summary>
    private sealed class DownstreamFlushException(Exception inner) : Exception(inner.Message, inner);

    private static ProxyError BodyError(ProxySession session, Exception ex, CancellationTokenSource cts, CancellationToken requestAborted, TimeSpan readTimeout, bool upstreamSide) =>
        BodyError(session, ex, cts.IsCancellationRequested, requestAborted, readTimeout, upstreamSide);

    private static ProxyError BodyError(ProxySession session, Exception ex, bool timedOut, CancellationToken requestAborted, TimeSpan readTimeout, bool upstreamSide)
    {
        if (requestAborted.IsCancellationRequested || !upstreamSide)
        {
            return new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed the connection during the response", ex);
        }
        if (ex is OperationCanceledException && timedOut)
        {
            return new ProxyError(ProxyErrorKind.UpstreamTimeout, ProxyErrorSource.Upstream, false,
                $"upstream stalled for {readTimeout.TotalMilliseconds:0} ms during the response body", ex);
        }
        return new ProxyError(ProxyErrorKind.UpstreamProtocolError, ProxyErrorSource.Upstream, false, "upstream failed during the response body", ex);
    }

    private static void CopyTrailers(HttpResponseMessage response, HttpContext httpContext)
    {
        var trailers = response.TrailingHeaders.NonValidated;
        if (trailers.Count == 0)
        {
            return;
        }
        var feature = httpContext.Features.Get<IHttpResponseTrailersFeature>();
        if (feature?.Trailers is not { IsReadOnly: false } destination)
        {
            // HTTP/1.1 clients without chunked trailers support: dropping trailers is what nginx does too.
            return;
        }
        foreach (var header in trailers)
        {
            if (!HeaderRules.IsHopByHop(header.Key))
            {
                destination[header.Key] = ToStringValues(header.Value);
            }
        }
    }

    private async ValueTask<ProxyError?> ProxyUpgradeAsync(ProxySession session, HttpResponseMessage response, IHttpExtendedConnectFeature? extendedConnect, IHttpUpgradeFeature? upgradeFeature, CancellationToken requestAborted)
    {
        Stream upstreamStream;
        Stream downstreamStream;
        try
        {
            upstreamStream = await response.Content.ReadAsStreamAsync(requestAborted);
            downstreamStream = extendedConnect is not null
                ? await extendedConnect.AcceptAsync()
                : await upgradeFeature!.UpgradeAsync();
        }
        catch (Exception ex)
        {
            return new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "upgrade failed", ex);
        }

        // An upgraded connection has no read timeout: WebSockets stay open while idle, as nginx with
        // proxy_read_timeout raised. Closing either side ends both. The tunnel follows WebSocket frames so a graceful
        // shutdown can close it between frames (UpgradedTunnels.CloseAllAsync); an HTTP/1.1 upgrade reaches here only
        // for WebSocket (step 1), an extended CONNECT for whatever :protocol the client named.
        var isWebSocket = extendedConnect is null || IsWebSocketUpgrade(extendedConnect.Protocol);
        var tunnel = new WebSocketTunnel(downstreamStream, upstreamStream, isWebSocket, _tunnels.TimeProvider);
        await tunnel.RunAsync(session, _tunnels, requestAborted);
        await upstreamStream.DisposeAsync();
        return null;
    }
}
