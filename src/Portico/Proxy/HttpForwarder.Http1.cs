using System.Buffers;
using System.Buffers.Text;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Portico.Proxy.Http1;
using Portico.Threading;
using Portico.Upstreams;

namespace Portico.Proxy;

/// <summary>
/// Portico's own HTTP/1.1 client: one attempt of a bodiless request over a pooled connection, without
/// HttpRequestMessage, HttpResponseMessage, Uri or header stores (docs/phases.md, "The two upstream clients").
/// </summary>
/// <remarks>
/// The steps match <see cref="ForwardAsync"/>'s:
/// 2. The request head (request line, then the same headers as <see cref="CopyRequestHeaders{TSink}"/> gives
///    SocketsHttpHandler) is written into one pooled buffer and sent with one send.
/// 4. The response head is read into a pooled buffer (up to 64 KiB) and checked in one pass without allocating
///    (<see cref="ResponseHead"/>); 1xx interim answers are skipped. A kept-alive connection that fails before the
///    first response byte (the server closed it while idle) is replaced by a new one, once.
/// 5. Status and headers go straight into the client's response (hop-by-hop and Connection-named ones dropped;
///    Content-Length as a number); repeated values of common headers reuse their strings.
/// 7. The body is copied as it arrives, by its framing (Content-Length, chunked, until close); chunked trailers go
///    to clients that take them. The connection goes back to the pool only when the response was read exactly to
///    its end and the upstream allows reuse.
/// The read timeout (renewed per read) and the client's abort close the socket, which ends any pending I/O.
/// </remarks>
internal sealed partial class HttpForwarder
{
    /// <summary>
    /// The upstream response-head buffers (16 KiB). The shared pool keeps only a few dozen arrays of a size per core, so
    /// with hundreds of requests in flight (h2c: 64 connections × 10 streams) nearly every request allocated and
    /// zeroed a new one (3.5 % of the CPU in memset in a profile, plus the garbage).
    /// </summary>
    private static readonly BufferPool HeadBuffers = BufferPool.UpstreamResponseHead;
    private static readonly int HeadBufferSize = HeadBuffers.Size;
    private const int MaxResponseHeadSize = 64 * 1024;

    /// <summary>A sized body with at least this much left is read straight into Kestrel's output pipe.</summary>
    private const int DirectReadThreshold = 16 * 1024;

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<ProxyError?> ForwardHttp1Async<TContext>(ProxySession session, Http1Pool pool, ProxyApp<TContext> app, TContext ctx, TimeSpan readTimeout, CancellationToken requestAborted)
    {
        var request = session.Request;
        var isHead = HttpMethods.IsHead(request.Method);
        var head = new RequestHeadWriter(pool.Authority);
        byte[]? buffer = null;   // taken once the answer may be there (below)
        byte[]? bodyBuffer = null;
        UpstreamConnection? connection = null;
        var timeoutMs = (long)readTimeout.TotalMilliseconds;
        // The wait for the response head counts from here, a connect included (as for SocketsHttpHandler's requests).
        var headDeadline = Environment.TickCount64 + timeoutMs;
        try
        {
            // :: Step 2
            var own = session.Own is { Plain: true } plain ? plain : null;
            try
            {
                if (own is not null)
                {
                    head.RequestLine(own.Method, session.UpstreamPathAndQuery ?? own.RawTarget);
                    CopyRequestHeadersRaw(session, own, ref head);
                }
                else
                {
                    head.RequestLine(request.Method, UpstreamTarget(session));
                    CopyRequestHeaders(session, ref head, keepUpgrade: false);
                }
                head.End(request.Method);
            }
            catch (InvalidHeaderValueException ex)
            {
                return new ProxyError(ProxyErrorKind.Internal, ProxyErrorSource.Internal, false, ex.Message, ex);
            }

            // :: Step 4
            var sendStarted = LoopClock.Timestamp;
            ResponseHead parsed = default;
            var filled = 0;
            var forceNew = false;
            while (true)
            {
                try
                {
                    connection = await pool.RentOrReserveAsync(fresh: forceNew, requestAborted);
                }
                catch (OperationCanceledException ex)
                {
                    return new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed the request", ex);
                }
                // Only a connection taken from the pool, and only once per attempt, is replaced when it fails unanswered.
                var reused = connection is not null && !forceNew;
                if (connection is null)
                {
                    try
                    {
                        connection = await pool.ConnectAsync(requestAborted);
                    }
                    catch (Exception ex)
                    {
                        return ConnectFailure(ex, requestAborted);
                    }
                }
                // The watchdog closes the socket when the read timeout passes or the client goes away.
                connection!.Watch(headDeadline, timeoutMs, requestAborted);
                filled = 0;
                string? failure = null;
                Exception? failureException = null;
                var replace = false;
                var malformed = false;
                try
                {
                    await connection!.SendAsync(head.Written);
                    if (buffer is null)
                    {
                        // The head's buffer is taken when the response may have come, not for the whole wait: of a
                        // thousand requests in flight only those being answered hold one (as HAProxy allocates a
                        // buffer when data arrives), so the few in use stay warm in the cache and the pool.
                        if (connection.Io is { } io)
                        {
                            await io.WaitReadableAsync();
                        }
                        buffer = HeadBuffers.Rent();
                    }
                    while (true)
                    {
                        var end = filled > 0 ? ResponseHead.FindEnd(buffer.AsSpan(0, filled)) : -1;
                        if (end > 0)
                        {
                            failure = ResponseHead.TryParse(buffer.AsSpan(0, end), isHead, out parsed);
                            malformed = failure is not null;
                            if (failure is null && parsed.Status < 200)
                            {
                                if (parsed.Status == 101)
                                {
                                    failure = "upstream switched protocols on a request that asked for no upgrade";
                                    malformed = true;
                                    break;
                                }
                                // An interim answer (100 Continue, 103 Early Hints): dropped, as SocketsHttpHandler does.
                                buffer.AsSpan(end, filled - end).CopyTo(buffer);
                                filled -= end;
                                continue;
                            }
                            break;
                        }
                        if (filled == buffer.Length)
                        {
                            if (buffer.Length >= MaxResponseHeadSize)
                            {
                                failure = "upstream response head is larger than 64 KiB";
                                malformed = true;
                                break;
                            }
                            buffer = Grow(buffer, filled, buffer.Length * 2);
                        }
                        var read = await connection!.ReceiveAsync(buffer.AsMemory(filled));
                        if (read == 0)
                        {
                            replace = reused && filled == 0;
                            failure = filled == 0 ? "upstream closed the connection before answering" : "upstream closed the connection during the response head";
                            break;
                        }
                        filled += read;
                    }
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
                {
                    replace = reused && filled == 0 && !connection!.Expired;
                    failureException = ex;
                    failure = "upstream connection failed";
                }
                if (failure is null)
                {
                    break;
                }
                var timedOut = connection!.TimedOut;
                connection.Dispose();
                connection = null;
                if (replace)
                {
                    // The server closed this kept-alive connection while it sat in the pool; nothing was processed.
                    forceNew = true;
                    continue;
                }
                return malformed
                    ? new ProxyError(ProxyErrorKind.UpstreamInvalidResponse, ProxyErrorSource.Upstream, false, "invalid response from upstream: " + failure)
                    : HeadFailure(failure, failureException, timedOut, requestAborted, readTimeout);
            }
            Debug.Assert(buffer is not null, "the loop above ends with a response head in the buffer");
            session.UpstreamHeaderTime = LoopClock.Elapsed(sendStarted);
            session.UpstreamStatus = parsed.Status;

            // :: Step 5
            if (app.ShouldRetryResponse(session, ctx))
            {
                return new ProxyError(ProxyErrorKind.UpstreamRetryStatus, ProxyErrorSource.Upstream, true,
                    $"upstream answered {session.UpstreamStatus}; retrying on another server");
            }
            var downstream = session.Response;
            downstream.StatusCode = parsed.Status;
            try
            {
                if (own is not null)
                {
                    // The upstream's lines go into the client's response as they are (no strings); the request id the
                    // runner set stays unless the upstream sent its own, which is then replaced.
                    if (CopyResponseHeadRaw(buffer.AsSpan(0, parsed.Length), ref parsed, own.ResponseHeaderTable))
                    {
                        downstream.Headers["X-Request-ID"] = session.RequestId;
                    }
                }
                else
                {
                    CopyResponseHead(buffer.AsSpan(0, parsed.Length), ref parsed, downstream.Headers, pool.ValueCache);
                    downstream.Headers["X-Request-ID"] = session.RequestId;
                }
            }
            catch (InvalidOperationException ex)
            {
                // Kestrel refuses a value it cannot send (e.g. a control character): the upstream's answer is malformed.
                return new ProxyError(ProxyErrorKind.UpstreamInvalidResponse, ProxyErrorSource.Upstream, false, "upstream sent an invalid response header: " + ex.Message, ex);
            }
            await app.ResponseFilterAsync(session, ctx);
            if (own is not null)
            {
                // The head goes into the client's pipe now (sent with the first body bytes): from here on the upstream
                // head's buffer is free for the body.
                await own.StartResponseAsync(appCompleted: false);
            }

            // :: Step 7
            var destination = downstream.Body;
            var flushHeadersEarly = !parsed.HasGrpcStatus;
            var pos = parsed.Length;
            var reusable = parsed.KeepAlive;
            List<KeyValuePair<string, string>>? trailers = null;
            try
            {
                switch (parsed.Framing)
                {
                    case BodyFraming.ContentLength:
                    {
                        var remaining = parsed.ContentLength;
                        var inBuffer = filled - pos;
                        if (inBuffer > remaining)
                        {
                            // Bytes beyond the body: the upstream pipelined or misframed; the connection is not reused.
                            reusable = false;
                            inBuffer = (int)remaining;
                        }
                        if (inBuffer > 0)
                        {
                            await WriteDownstreamAsync(destination, buffer.AsMemory(pos, inBuffer), requestAborted);
                            flushHeadersEarly = false;
                            session.ResponseBodyBytes += inBuffer;
                            remaining -= inBuffer;
                        }
                        while (remaining > 0)
                        {
                            connection!.Rearm(timeoutMs);
                            if (!flushHeadersEarly && remaining >= DirectReadThreshold)
                            {
                                // The headers are out: a large body is read straight into the client's output pipe
                                // (Kestrel gives a segment of the size asked), one copy of each byte less.
                                var writer = downstream.BodyWriter;
                                var memory = writer.GetMemory((int)Math.Min(remaining, ResponseBufferSize));
                                var direct = await connection!.ReceiveAsync(memory[..(int)Math.Min(remaining, memory.Length)]);
                                if (direct == 0)
                                {
                                    return new ProxyError(ProxyErrorKind.UpstreamProtocolError, ProxyErrorSource.Upstream, false,
                                        $"upstream closed the connection {remaining} bytes before the end of the body");
                                }
                                writer.Advance(direct);
                                await FlushDownstreamAsync(writer, requestAborted);
                                session.ResponseBodyBytes += direct;
                                remaining -= direct;
                                continue;
                            }
                            var target = remaining > buffer.Length
                                ? bodyBuffer ??= ArrayPool<byte>.Shared.Rent((int)Math.Min(remaining, ResponseBufferSize))
                                : buffer;
                            var pending = connection!.ReceiveAsync(target.AsMemory(0, (int)Math.Min(remaining, target.Length)));
                            var read = await (flushHeadersEarly && !pending.IsCompleted ? FlushHeadersWhileWaitingAsync(pending, destination, requestAborted, CloseConnection, connection!) : pending);
                            if (read == 0)
                            {
                                return new ProxyError(ProxyErrorKind.UpstreamProtocolError, ProxyErrorSource.Upstream, false,
                                    $"upstream closed the connection {remaining} bytes before the end of the body");
                            }
                            await WriteDownstreamAsync(destination, target.AsMemory(0, read), requestAborted);
                            flushHeadersEarly = false;
                            session.ResponseBodyBytes += read;
                            remaining -= read;
                        }
                        break;
                    }
                    case BodyFraming.UntilClose:
                    {
                        if (filled > pos)
                        {
                            await WriteDownstreamAsync(destination, buffer.AsMemory(pos, filled - pos), requestAborted);
                            flushHeadersEarly = false;
                            session.ResponseBodyBytes += filled - pos;
                        }
                        while (true)
                        {
                            connection!.Rearm(timeoutMs);
                            var pending = connection!.ReceiveAsync(buffer.AsMemory());
                            var read = await (flushHeadersEarly && !pending.IsCompleted ? FlushHeadersWhileWaitingAsync(pending, destination, requestAborted, CloseConnection, connection!) : pending);
                            if (read == 0)
                            {
                                break;
                            }
                            await WriteDownstreamAsync(destination, buffer.AsMemory(0, read), requestAborted);
                            flushHeadersEarly = false;
                            session.ResponseBodyBytes += read;
                        }
                        reusable = false;
                        break;
                    }
                    case BodyFraming.Chunked:
                    {
                        while (true)
                        {
                            // The chunk-size line: hex size, optional extensions (ignored), CRLF.
                            int lineEnd;
                            while ((lineEnd = buffer.AsSpan(pos, filled - pos).IndexOf((byte)'\n')) < 0)
                            {
                                (pos, filled) = Compact(buffer, pos, filled);
                                if (filled == buffer.Length)
                                {
                                    return ChunkError("chunk-size line too long");
                                }
                                connection!.Rearm(timeoutMs);
                                var pending = connection!.ReceiveAsync(buffer.AsMemory(filled));
                                var read = await (flushHeadersEarly && !pending.IsCompleted ? FlushHeadersWhileWaitingAsync(pending, destination, requestAborted, CloseConnection, connection!) : pending);
                                if (read == 0)
                                {
                                    return ChunkError("upstream closed the connection inside a chunked body");
                                }
                                filled += read;
                            }
                            var sizeLine = ResponseHead.TrimCr(buffer.AsSpan(pos, lineEnd));
                            pos += lineEnd + 1;
                            if (!TryParseChunkSize(sizeLine, out var size))
                            {
                                return ChunkError("invalid chunk size");
                            }
                            if (size == 0)
                            {
                                // The trailer section: header lines up to an empty line.
                                while (true)
                                {
                                    while ((lineEnd = buffer.AsSpan(pos, filled - pos).IndexOf((byte)'\n')) < 0)
                                    {
                                        (pos, filled) = Compact(buffer, pos, filled);
                                        if (filled == buffer.Length)
                                        {
                                            return ChunkError("trailer section too large");
                                        }
                                        connection!.Rearm(timeoutMs);
                                        var read = await connection!.ReceiveAsync(buffer.AsMemory(filled));
                                        if (read == 0)
                                        {
                                            return ChunkError("upstream closed the connection inside the trailers");
                                        }
                                        filled += read;
                                    }
                                    var line = ResponseHead.TrimCr(buffer.AsSpan(pos, lineEnd));
                                    pos += lineEnd + 1;
                                    if (line.IsEmpty)
                                    {
                                        break;
                                    }
                                    if (!ResponseHead.TrySplit(line, out var name, out var value))
                                    {
                                        return ChunkError("malformed trailer line");
                                    }
                                    (trailers ??= []).Add(new(HeaderStrings.Name(name, out _), Encoding.Latin1.GetString(value)));
                                }
                                break;
                            }
                            var left = size;
                            while (left > 0)
                            {
                                if (pos == filled)
                                {
                                    pos = filled = 0;
                                    connection!.Rearm(timeoutMs);
                                    var pending = connection!.ReceiveAsync(buffer.AsMemory());
                                    var read = await (flushHeadersEarly && !pending.IsCompleted ? FlushHeadersWhileWaitingAsync(pending, destination, requestAborted, CloseConnection, connection!) : pending);
                                    if (read == 0)
                                    {
                                        return ChunkError("upstream closed the connection inside a chunk");
                                    }
                                    filled = read;
                                }
                                var take = (int)Math.Min(left, filled - pos);
                                await WriteDownstreamAsync(destination, buffer.AsMemory(pos, take), requestAborted);
                                flushHeadersEarly = false;
                                session.ResponseBodyBytes += take;
                                pos += take;
                                left -= take;
                            }
                            // The CRLF that ends the chunk's data.
                            while (filled - pos < 2 && !(filled - pos == 1 && buffer[pos] == '\n'))
                            {
                                (pos, filled) = Compact(buffer, pos, filled);
                                connection!.Rearm(timeoutMs);
                                var read = await connection!.ReceiveAsync(buffer.AsMemory(filled));
                                if (read == 0)
                                {
                                    return ChunkError("upstream closed the connection after a chunk");
                                }
                                filled += read;
                            }
                            if (buffer[pos] == '\n')
                            {
                                pos += 1;
                            }
                            else if (buffer[pos] == '\r' && buffer[pos + 1] == '\n')
                            {
                                pos += 2;
                            }
                            else
                            {
                                return ChunkError("chunk data not followed by CRLF");
                            }
                        }
                        if (pos != filled)
                        {
                            reusable = false;
                        }
                        break;
                    }
                    default:
                        // No body (HEAD, 1xx, 204, 304); anything already here would be a framing error.
                        if (filled != pos)
                        {
                            reusable = false;
                        }
                        break;
                }
            }
            catch (DownstreamFlushException ex)
            {
                return BodyError(session, ex.InnerException!, timedOut: false, requestAborted, readTimeout, upstreamSide: false);
            }
            catch (Exception ex)
            {
                // A read from the upstream failed. A timeout shows as the closed socket's error: the source says which.
                if (connection!.TimedOut && !requestAborted.IsCancellationRequested)
                {
                    return new ProxyError(ProxyErrorKind.UpstreamTimeout, ProxyErrorSource.Upstream, false,
                        $"upstream stalled for {readTimeout.TotalMilliseconds:0} ms during the response body", ex);
                }
                return BodyError(session, ex, timedOut: false, requestAborted, readTimeout, upstreamSide: true);
            }

            if (trailers is not null)
            {
                CopyTrailers(trailers, session.HttpContext);
            }
            // Unhook the watch before the connection can serve another request; if it fired meanwhile, the socket is gone.
            if (connection!.EndWatch() && reusable)
            {
                pool.Return(connection!);
                connection = null;
            }
            return null;
        }
        finally
        {
            connection?.Dispose();
            head.Dispose();
            // A buffer grown past 16 KiB (Grow) is not this pool's size: it goes to the shared pool.
            if (buffer is not null)
            {
                HeadBuffers.Return(buffer);
            }
            if (bodyBuffer is not null)
            {
                ArrayPool<byte>.Shared.Return(bodyBuffer);
            }
        }
    }

    /// <summary>Writes to the client; a failure is reported as a <see cref="DownstreamFlushException"/>, so the caller blames the client side.</summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask WriteDownstreamAsync(Stream destination, ReadOnlyMemory<byte> data, CancellationToken requestAborted)
    {
        try
        {
            await destination.WriteAsync(data, requestAborted);
        }
        catch (Exception ex)
        {
            throw new DownstreamFlushException(ex);
        }
    }

    /// <summary>Flushes what was written into the client's pipe; a failure is a <see cref="DownstreamFlushException"/>.</summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask FlushDownstreamAsync(System.IO.Pipelines.PipeWriter writer, CancellationToken requestAborted)
    {
        System.IO.Pipelines.FlushResult result;
        try
        {
            result = await writer.FlushAsync(requestAborted);
        }
        catch (Exception ex)
        {
            throw new DownstreamFlushException(ex);
        }
        if (result.IsCanceled)
        {
            // A client that went away also cancels the request, which closes the upstream socket and ends the copy.
            throw new DownstreamFlushException(new OperationCanceledException("the flush to the client was cancelled"));
        }
    }

    private static ProxyError ChunkError(string message) =>
        new(ProxyErrorKind.UpstreamProtocolError, ProxyErrorSource.Upstream, false, "upstream sent a malformed chunked body: " + message);

    /// <summary>Moves the unread bytes to the front of the buffer.</summary>
    private static (int Pos, int Filled) Compact(byte[] buffer, int pos, int filled)
    {
        if (pos == 0)
        {
            return (pos, filled);
        }
        buffer.AsSpan(pos, filled - pos).CopyTo(buffer);
        return (0, filled - pos);
    }

    private static byte[] Grow(byte[] buffer, int filled, int size)
    {
        var bigger = ArrayPool<byte>.Shared.Rent(size);
        buffer.AsSpan(0, filled).CopyTo(bigger);
        HeadBuffers.Return(buffer);   // by its size: to this pool or the shared one
        return bigger;
    }

    /// <summary>chunk-size [; extensions]: 1–15 hex digits (RFC 9112 §7.1), extensions ignored.</summary>
    internal static bool TryParseChunkSize(ReadOnlySpan<byte> line, out long size)
    {
        var semicolon = line.IndexOf((byte)';');
        var digits = ResponseHead.Trim(semicolon < 0 ? line : line[..semicolon]);
        size = 0;
        if (digits.IsEmpty || digits.Length > 15)
        {
            return false;
        }
        return Utf8Parser.TryParse(digits, out size, out var consumed, 'x') && consumed == digits.Length;
    }

    /// <summary>
    /// Copies the response head's headers into the client's response: hop-by-hop ones and the ones Connection names
    /// are dropped, Content-Length becomes the number (not when Transfer-Encoding framed the body), repeated names
    /// keep every value.
    /// </summary>
    private static void CopyResponseHead(ReadOnlySpan<byte> head, ref ResponseHead parsed, IHeaderDictionary destination, ResponseHeaderValueCache cache)
    {
        // Before the copy the client's response holds only what the phases set (the request id, normally): the
        // upstream's headers replace those, and a name the upstream repeats keeps all its values. Known names are
        // tracked in a bit mask; unknown ones, when the phases set headers of their own, in a list.
        var seenKnown = 0UL;
        var replacing = destination.Count > 1 ? new List<string>() : null;
        StringValues connection = default;
        if (parsed.ConnectionNamesHeaders)
        {
            connection = CollectConnection(head[parsed.HeadersStart..]);
        }
        long contentLength = -1;
        var pos = parsed.HeadersStart;
        while (pos < head.Length)
        {
            var rest = head[pos..];
            var end = rest.IndexOf((byte)'\n');
            var line = ResponseHead.TrimCr(rest[..end]);
            pos += end + 1;
            if (line.IsEmpty)
            {
                break;
            }
            ResponseHead.SplitValid(line, out var nameBytes, out var valueBytes);
            var name = HeaderStrings.Name(nameBytes, out var known);
            if (HeaderStrings.IsHopByHop(known) || (parsed.ConnectionNamesHeaders && HeaderRules.ConnectionNames(connection, name)))
            {
                continue;
            }
            if (known == HeaderStrings.ContentLength)
            {
                // Validated by ResponseHead (equal values); passed on as a number unless chunked framing overrides it.
                if (parsed.Framing != BodyFraming.Chunked && parsed.Framing != BodyFraming.UntilClose && contentLength < 0)
                {
                    var item = ResponseHead.Trim(valueBytes);
                    var comma = item.IndexOf((byte)',');
                    Utf8Parser.TryParse(ResponseHead.Trim(comma < 0 ? item : item[..comma]), out contentLength, out _);
                }
                continue;
            }
            var value = cache.Value(known, valueBytes);
            bool repeat;
            if (known >= 0)
            {
                var bit = 1UL << known;
                repeat = (seenKnown & bit) != 0;
                seenKnown |= bit;
            }
            else if (replacing is not null)
            {
                repeat = false;
                foreach (var seen in replacing)
                {
                    repeat |= string.Equals(seen, name, StringComparison.OrdinalIgnoreCase);
                }
                if (!repeat)
                {
                    replacing.Add(name);
                }
            }
            else
            {
                repeat = destination.ContainsKey(name);
            }
            destination[name] = repeat ? StringValues.Concat(destination[name], value) : value;
        }
        if (contentLength >= 0)
        {
            destination.ContentLength = contentLength;
        }
    }

    /// <summary>
    /// <see cref="CopyResponseHead"/> for Portico's own server: the same rules (hop-by-hop and Connection-named lines
    /// dropped, Content-Length as a number unless the body is re-framed, the upstream's names replacing what the phases
    /// set, repeated names kept), but each line is kept as bytes in <paramref name="destination"/>. Returns true when the
    /// upstream sent an X-Request-ID (the caller puts the request's own back).
    /// </summary>
    private static bool CopyResponseHeadRaw(ReadOnlySpan<byte> head, ref ResponseHead parsed, Server.ResponseHeaders destination)
    {
        var sourceOffset = destination.AttachSource(head);
        var phasesSetUnknown = destination.EntryCount > 1;
        var seenKnown = 0UL;
        StringValues connection = default;
        if (parsed.ConnectionNamesHeaders)
        {
            connection = CollectConnection(head[parsed.HeadersStart..]);
        }
        var sawRequestId = false;
        var pos = parsed.HeadersStart;
        while (pos < head.Length)
        {
            var rest = head[pos..];
            var end = rest.IndexOf((byte)'\n');
            var lineStart = pos;
            var line = ResponseHead.TrimCr(rest[..end]);
            pos += end + 1;
            if (line.IsEmpty)
            {
                break;
            }
            ResponseHead.SplitValid(line, out var nameBytes, out var valueBytes);
            var known = HeaderStrings.Find(nameBytes);
            if (HeaderStrings.IsHopByHop(known)
                || (parsed.ConnectionNamesHeaders && HeaderRules.ConnectionNames(connection, HeaderStrings.Name(nameBytes, out _))))
            {
                continue;
            }
            if (known == HeaderStrings.ContentLength)
            {
                if (parsed.Framing != BodyFraming.Chunked && parsed.Framing != BodyFraming.UntilClose && destination.ContentLength is null)
                {
                    var item = ResponseHead.Trim(valueBytes);
                    var comma = item.IndexOf((byte)',');
                    Utf8Parser.TryParse(ResponseHead.Trim(comma < 0 ? item : item[..comma]), out long length, out _);
                    destination.ContentLength = length;
                }
                continue;
            }
            if (known >= 0)
            {
                var bit = 1UL << known;
                if ((seenKnown & bit) == 0)
                {
                    seenKnown |= bit;
                    destination.RemoveKnown(known);
                    sawRequestId |= known == HeaderStrings.XRequestId;
                }
            }
            else if (phasesSetUnknown)
            {
                destination.RemoveUnknown(nameBytes);
            }
            // The value's offset in the head (an empty value may be a default span: it then sits at the line's end).
            var valueStart = valueBytes.IsEmpty
                ? lineStart + line.Length
                : (int)Unsafe.ByteOffset(ref MemoryMarshal.GetReference(head), ref MemoryMarshal.GetReference(valueBytes));
            destination.AddRaw(known, sourceOffset + lineStart, line.Length, nameBytes.Length, sourceOffset + valueStart, valueBytes.Length);
        }
        return sawRequestId;
    }

    /// <summary>
    /// <see cref="CopyRequestHeaders{TSink}"/> for a request on Portico's own server: lines no phase changed are written
    /// upstream as the bytes they arrived as; known names are classified by index, not by string.
    /// </summary>
    private static void CopyRequestHeadersRaw(ProxySession session, Server.OwnRequest own, ref RequestHeadWriter sink)
    {
        var headers = own.RequestHeaderTable;
        var raw = headers.Head;
        var traced = session.Activity is not null;
        StringValues connection = default;
        if (own.ConnectionNamesHeaders)
        {
            connection = headers["Connection"];
        }
        string? forwardedFor = null;
        StringValues via = default;
        for (var i = 0; i < headers.EntryCount; i++)
        {
            ref var entry = ref headers.EntryAt(i);
            if (entry.Removed)
            {
                continue;
            }
            var known = entry.Known;
            if (known >= 0)
            {
                var bit = 1UL << known;
                if ((Server.RequestHeaderNames.HopByHopMask & bit) != 0)
                {
                    if (known == Server.RequestHeaderNames.TE && HeaderRules.IsTrailersOnlyTe(headers.ValueOf(ref entry)))
                    {
                        sink.Add("TE", "trailers");
                    }
                    continue;
                }
                if (known == Server.RequestHeaderNames.XForwardedFor)
                {
                    var value = headers.ValueOf(ref entry).ToString();
                    forwardedFor = forwardedFor is null ? value : forwardedFor + ", " + value;
                    continue;
                }
                if (known == Server.RequestHeaderNames.Via)
                {
                    via = StringValues.Concat(via, headers.ValueOf(ref entry));
                    continue;
                }
                if ((Server.RequestHeaderNames.SetByProxyMask & bit) != 0
                    || (traced && known is Server.RequestHeaderNames.TraceParent or Server.RequestHeaderNames.TraceState))
                {
                    continue;
                }
            }
            if (own.ConnectionNamesHeaders && HeaderRules.ConnectionNames(connection, headers.NameOf(ref entry)))
            {
                continue;
            }
            if (entry.Raw)
            {
                sink.AddRaw(raw.Slice(entry.LineStart, entry.NameLength), raw.Slice(entry.ValueStart, entry.ValueLength),
                    known == Server.RequestHeaderNames.ContentLength);
            }
            else
            {
                sink.Add(headers.NameOf(ref entry), headers.ValueOf(ref entry));
            }
        }
        var host = headers.Has(Server.RequestHeaderNames.Host)
            ? headers.SingleValue(Server.RequestHeaderNames.Host) ?? headers["Host"].ToString()
            : null;
        AddProxyHeaders(session, ref sink, host, forwardedFor, via, own.Protocol, own.IsTls ? "https" : "http");
    }

    private static StringValues CollectConnection(ReadOnlySpan<byte> headers)
    {
        var values = StringValues.Empty;
        while (!headers.IsEmpty)
        {
            var end = headers.IndexOf((byte)'\n');
            var line = ResponseHead.TrimCr(end < 0 ? headers : headers[..end]);
            headers = end < 0 ? default : headers[(end + 1)..];
            if (ResponseHead.TrySplit(line, out var name, out var value) && Ascii.EqualsIgnoreCase(name, "Connection"u8))
            {
                values = StringValues.Concat(values, Encoding.Latin1.GetString(value));
            }
        }
        return values;
    }

    private static void CopyTrailers(List<KeyValuePair<string, string>> trailers, HttpContext httpContext)
    {
        var feature = httpContext.Features.Get<IHttpResponseTrailersFeature>();
        if (feature?.Trailers is not { IsReadOnly: false } destination)
        {
            // HTTP/1.1 clients without chunked trailers support: dropping trailers is what nginx does too.
            return;
        }
        foreach (var (name, value) in trailers)
        {
            if (!HeaderRules.IsHopByHop(name))
            {
                destination[name] = destination.TryGetValue(name, out var prior) ? StringValues.Concat(prior, value) : value;
            }
        }
    }

    private static ProxyError ConnectFailure(Exception ex, CancellationToken requestAborted)
    {
        if (requestAborted.IsCancellationRequested)
        {
            return new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed the request", ex);
        }
        if (ex is OperationCanceledException { InnerException: TimeoutException })
        {
            return new ProxyError(ProxyErrorKind.ConnectTimeout, ProxyErrorSource.Upstream, true, "timed out connecting to upstream", ex);
        }
        return new ProxyError(ProxyErrorKind.ConnectRefused, ProxyErrorSource.Upstream, true, "could not connect to upstream", ex);
    }

    private static ProxyError HeadFailure(string message, Exception? ex, bool timedOut, CancellationToken requestAborted, TimeSpan readTimeout)
    {
        if (requestAborted.IsCancellationRequested)
        {
            return new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed the request", ex);
        }
        if (timedOut)
        {
            return new ProxyError(ProxyErrorKind.UpstreamTimeout, ProxyErrorSource.Upstream, false,
                $"upstream did not answer within {readTimeout.TotalMilliseconds:0} ms", ex);
        }
        return new ProxyError(ProxyErrorKind.UpstreamProtocolError, ProxyErrorSource.Upstream, false, message, ex);
    }

    /// <summary>A header value that would break the request head (a line break or NUL), e.g. set by a phase.</summary>
    internal sealed class InvalidHeaderValueException(string name)
        : Exception($"the {name} header for the upstream contains a line break or NUL");

    /// <summary>
    /// The upstream request head, written into one pooled buffer: "METHOD target HTTP/1.1", the headers
    /// (<see cref="CopyRequestHeaders{TSink}"/>), then Host when the client sent none and Content-Length: 0 for a
    /// bodiless POST, PUT or PATCH (as SocketsHttpHandler does). Names are ASCII tokens; values are written as UTF-8,
    /// which gives back the bytes Kestrel decoded (it reads header values as ASCII or UTF-8).
    /// </summary>
    internal struct RequestHeadWriter(string authority) : IUpstreamHeaderSink, IDisposable
    {
        private byte[] _buffer = BufferPool.UpstreamRequestHead.Rent();
        private int _length;
        private bool _hasHost;
        private bool _hasContentLength;

        public readonly ReadOnlyMemory<byte> Written => _buffer.AsMemory(0, _length);

        public void RequestLine(string method, string target)
        {
            Ascii(method);
            Byte((byte)' ');
            Utf8("request target", target);
            Ascii(" HTTP/1.1\r\n");
        }

        public void Add(string name, string value)
        {
            if (!_hasContentLength && name.Length == 14 && name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                _hasContentLength = true;
            }
            // The usual line (the proxy's own headers: a token name, an ASCII value): one bounds check and two
            // vectorised copies; anything else (non-ASCII, a forbidden character) takes the checked path below.
            Ensure(name.Length + value.Length + 4);
            var span = _buffer.AsSpan(_length);
            if (System.Text.Ascii.FromUtf16(name, span, out var nameBytes) == System.Buffers.OperationStatus.Done
                && System.Text.Ascii.FromUtf16(value, span[(nameBytes + 2)..], out var valueBytes) == System.Buffers.OperationStatus.Done
                && span.Slice(nameBytes + 2, valueBytes).IndexOfAny((byte)'\r', (byte)'\n', (byte)0) < 0)
            {
                span[nameBytes] = (byte)':';
                span[nameBytes + 1] = (byte)' ';
                span[nameBytes + 2 + valueBytes] = (byte)'\r';
                span[nameBytes + 3 + valueBytes] = (byte)'\n';
                _length += nameBytes + valueBytes + 4;
                return;
            }
            Ascii(name);
            Ascii(": ");
            Utf8(name, value);
            Ascii("\r\n");
        }

        /// <summary>A line as the client sent it (checked by the server's parser: a token name, a printable ASCII value).</summary>
        public void AddRaw(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, bool isContentLength)
        {
            _hasContentLength |= isContentLength;
            Ensure(name.Length + value.Length + 4);
            var span = _buffer.AsSpan(_length);
            name.CopyTo(span);
            span[name.Length] = (byte)':';
            span[name.Length + 1] = (byte)' ';
            value.CopyTo(span[(name.Length + 2)..]);
            span[name.Length + 2 + value.Length] = (byte)'\r';
            span[name.Length + 3 + value.Length] = (byte)'\n';
            _length += name.Length + value.Length + 4;
        }

        public void Add(string name, StringValues values)
        {
            if (values.Count == 1)
            {
                Add(name, values[0] ?? string.Empty);
                return;
            }
            // Repeated request headers travel as one line, joined as SocketsHttpHandler joins them ("; " for Cookie,
            // which HTTP/1.1 allows only once per request).
            var separator = name.Equals("Cookie", StringComparison.OrdinalIgnoreCase) ? "; " : ", ";
            Ascii(name);
            Ascii(": ");
            for (var i = 0; i < values.Count; i++)
            {
                if (i > 0)
                {
                    Ascii(separator);
                }
                Utf8(name, values[i] ?? string.Empty);
            }
            Ascii("\r\n");
        }

        public void Host(string host)
        {
            _hasHost = true;
            Add("Host", host);
        }

        public void RequestId(ProxySession session)
        {
            var generated = session.GeneratedRequestId;
            if (generated.IsEmpty)
            {
                Add("X-Request-ID", session.RequestId);
            }
            else
            {
                AddRaw("X-Request-ID"u8, generated, isContentLength: false);
            }
        }

        public void End(string method)
        {
            if (!_hasHost)
            {
                Add("Host", authority);
            }
            if (!_hasContentLength && (HttpMethods.IsPost(method) || HttpMethods.IsPut(method) || HttpMethods.IsPatch(method)))
            {
                Add("Content-Length", "0");
            }
            Ascii("\r\n");
        }

        public readonly void Dispose() => BufferPool.UpstreamRequestHead.Return(_buffer);

        private void Ascii(string text)
        {
            Ensure(text.Length);
            _length += Encoding.Latin1.GetBytes(text, _buffer.AsSpan(_length));
        }

        private void Utf8(string name, string value)
        {
            if (value.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0)
            {
                throw new InvalidHeaderValueException(name);
            }
            Ensure(Encoding.UTF8.GetMaxByteCount(value.Length));
            _length += Encoding.UTF8.GetBytes(value, _buffer.AsSpan(_length));
        }

        private void Byte(byte b)
        {
            Ensure(1);
            _buffer[_length++] = b;
        }

        private void Ensure(int count)
        {
            if (_buffer.Length - _length >= count)
            {
                return;
            }
            var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _length + count));
            _buffer.AsSpan(0, _length).CopyTo(bigger);
            BufferPool.UpstreamRequestHead.Return(_buffer);
            _buffer = bigger;
        }
    }
}
