using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;

namespace Portico.Server;

/// <summary>
/// One client connection on Portico's HTTP/1.1 server: reads request heads from the connection's input pipe, runs the
/// app for each (with a pooled <see cref="Http1RequestContext"/>), writes the responses, and enforces the keep-alive,
/// request-header and response-rate timeouts through a shared once-a-second heartbeat (as Kestrel's). When a request is
/// not one this server takes, the loop stops with that request unread and the connection goes to Kestrel.
/// </summary>
internal sealed partial class Http1ServerConnection : IDisposable, IHeartbeatMember
{
    private readonly ConnectionContext _connection;
    private readonly PipeReader _input;
    private readonly Func<HttpContext, ValueTask> _app;
    private readonly KestrelServerOptions _options;
    private readonly ILogger _logger;
    private readonly CancellationTokenRegistration _closeRequestedRegistration;
    private IPEndPoint? _remote;
    private IPEndPoint? _local;
    private string? _remoteText;
    private byte[]? _headCopy;
    private readonly FastConnection? _fast;
    private bool _handOver;
    /// <summary>When the request in progress started (<see cref="Environment.TickCount64"/>); 0 = none.</summary>
    private long _requestStart;

    /// <summary><see cref="Environment.TickCount64"/> by which the current wait must end; 0 = none.</summary>
    private long _deadline;
    /// <summary>Deadline of a flush that did not complete at once (the client is not reading); 0 = none.</summary>
    private long _writeDeadline;
    /// <summary>What the current deadline guards: 1 waiting for a request, 2 a request head under way.</summary>
    private volatile int _waiting;
    /// <summary>When a close was requested (<see cref="Environment.TickCount64"/>, at least 1), for <see cref="CloseGraceMs"/>; 0 = none.</summary>
    private long _closeRequestedAt;
    private volatile bool _timedOut;
    internal int HeartbeatSlot = -1;

    int Portico.Threading.ISlotted.Slot { get => HeartbeatSlot; set => HeartbeatSlot = value; }

    public Http1ServerConnection(ConnectionContext connection, Func<HttpContext, ValueTask> app, KestrelServerOptions options, ILogger logger)
    {
        _connection = connection;
        _input = connection.Transport.Input;
        Output = connection.Transport.Output;
        _app = app;
        _options = options;
        _logger = logger;
        if (connection is FastConnection fast)
        {
            // Portico's own accept path: cleartext, and shutdown comes through FastConnection.RequestClose.
            _fast = fast;
            fast.Server = this;
            Interlocked.MemoryBarrier();
            if (fast.CloseRequestedEarly)
            {
                OnCloseRequested();
            }
        }
        else
        {
            IsTls = connection.Features.Get<ITlsConnectionFeature>() is not null;
        }
        if (_fast is null && connection.Features.Get<IConnectionLifetimeNotificationFeature>() is { } lifetime)
        {
            _closeRequestedRegistration = lifetime.ConnectionClosedRequested.UnsafeRegister(static s => ((Http1ServerConnection)s!).OnCloseRequested(), this);
        }
        ConnectionHeartbeat.Add(this);
    }

    public PipeWriter Output { get; }

    public IFeatureCollection Features => _connection.Features;

    public CancellationToken Closed => _connection.ConnectionClosed;

    public string ConnectionId => _connection.ConnectionId;

    /// <summary>Requests served on this connection so far (for trace identifiers).</summary>
    public long RequestCount { get; private set; }

    /// <summary>The server is shutting down: finish the current request, then close.</summary>
    public bool CloseRequested => Volatile.Read(ref _closeRequestedAt) != 0;

    public IPAddress? RemoteIpAddress => (_remote ??= _connection.RemoteEndPoint as IPEndPoint)?.Address;

    /// <summary>The client's address as X-Forwarded-For shows it, formatted once per connection.</summary>
    public string RemoteIpText => _remoteText ??= Proxy.ProxySession.FormatAddress(RemoteIpAddress ?? IPAddress.None);

    /// <summary>True when the connection is TLS (decided once: the TLS middleware runs before this server).</summary>
    public bool IsTls { get; }

    public int RemotePort => (_remote ??= _connection.RemoteEndPoint as IPEndPoint)?.Port ?? 0;

    public IPAddress? LocalIpAddress => (_local ??= _connection.LocalEndPoint as IPEndPoint)?.Address;

    public int LocalPort => (_local ??= _connection.LocalEndPoint as IPEndPoint)?.Port ?? 0;

    /// <summary>False for a connection that negotiated HTTP/2 (ALPN, or the h2c preface seen by H2cPriorKnowledge).</summary>
    public static bool IsHttp1(ConnectionContext connection) =>
        connection is FastConnection { HasExtraFeatures: false } || connection.Features.Get<Microsoft.AspNetCore.Server.Kestrel.Core.Features.ITlsApplicationProtocolFeature>() is not { } alpn
        || !alpn.ApplicationProtocol.Span.SequenceEqual("h2"u8);

    /// <summary>Called when <see cref="RunAsync"/> ends, with its result, before its task completes.</summary>
    public Action<Http1ServerConnection, bool>? Ended { get; set; }

    /// <summary>The connection this server runs on.</summary>
    public ConnectionContext Connection => _connection;

    /// <summary>Serves requests until the connection ends (false) or a request needs Kestrel (true: hand it over).</summary>
    public async Task<bool> RunAsync()
    {
        var limits = _options.Limits;
        var headLimits = new RequestHeadLimits(limits.MaxRequestLineSize, limits.MaxRequestHeadersTotalSize, limits.MaxRequestHeaderCount);
        // A head longer than this cannot be valid; Kestrel reads it again and answers 414 or 431.
        var maxHead = (long)limits.MaxRequestLineSize + limits.MaxRequestHeadersTotalSize + 4;
        try
        {
            while (true)
            {
                // :: wait for a request head
                // A close request (shutdown, reload) does not cut this wait: the heartbeat ends it after CloseGraceMs,
                // so a request already on its way is served (with Connection: close) instead of meeting a reset.
                SetDeadline(limits.KeepAliveTimeout, waiting: 1);
                ReadResult result;
                ReadOnlySequence<byte> buffer;
                long headLength;
                while (true)
                {
                    result = await _input.ReadAsync();
                    buffer = result.Buffer;
                    headLength = FindHeadEnd(buffer);
                    if (result.IsCanceled && _timedOut)
                    {
                        if (headLength < 0)
                        {
                            if (!buffer.IsEmpty)
                            {
                                await SendRequestTimeoutAsync();
                            }
                            return false;
                        }
                        // The whole head arrived as the wait ran out: it is served.
                        _timedOut = false;
                    }
                    if (headLength > 0)
                    {
                        break;
                    }
                    if (buffer.Length > maxHead)
                    {
                        _input.AdvanceTo(buffer.Start);
                        return _handOver = true;
                    }
                    if (result.IsCompleted)
                    {
                        if (!buffer.IsEmpty)
                        {
                            // A partial head and then the end: Kestrel answers that the request is incomplete.
                            _input.AdvanceTo(buffer.Start);
                            return _handOver = true;
                        }
                        return false;
                    }
                    if (!buffer.IsEmpty && _waiting == 1)
                    {
                        SetDeadline(limits.RequestHeadersTimeout, waiting: 2);
                    }
                    _input.AdvanceTo(buffer.Start, buffer.End);
                }
                ClearDeadline();

                // :: parse it; a request this server does not take goes to Kestrel, unread
                var head = buffer.Slice(0, headLength);
                ReadOnlyMemory<byte> headMemory;
                if (head.IsSingleSegment)
                {
                    headMemory = head.First;
                }
                else
                {
                    if (_headCopy is null || _headCopy.Length < headLength)
                    {
                        ReturnHeadCopy();
                        _headCopy = ArrayPool<byte>.Shared.Rent((int)headLength);
                    }
                    head.CopyTo(_headCopy);
                    headMemory = _headCopy.AsMemory(0, (int)headLength);
                }
                var context = Http1RequestContext.Rent();
                context.RequestHeaderTable.Reset(headMemory);
                if (!RequestHeadParser.TryParse(headMemory.Span, context.RequestHeaderTable, headLimits, out var line))
                {
                    context.Return();
                    _input.AdvanceTo(buffer.Start);
                    return _handOver = true;
                }
                RequestCount++;
                context.Start(this, headMemory.Span, line);

                // :: run the app, then end the response (written out here, not in a method: one frame less per request)
                var keepAlive = true;
                Volatile.Write(ref _requestStart, Environment.TickCount64);
                try
                {
                    await _app(context.HttpContext);
                }
                catch (Exception ex)
                {
                    Log.AppFailed(_logger, ConnectionId, ex);
                    if (context.HasStarted)
                    {
                        // Part of a response went out: only a cut tells the client it is not the whole one.
                        Abort("the application failed after the response started");
                        keepAlive = false;
                    }
                    else
                    {
                        context.ResetForError();
                    }
                }
                if (keepAlive)
                {
                    var complete = await context.CompleteResponseAsync();
                    if (!complete)
                    {
                        Abort("the response was shorter than its Content-Length");
                    }
                    // A close requested after the head went out with keep-alive: the client may reuse the connection at
                    // once, so it stays for the grace and that request is answered with Connection: close.
                    keepAlive = complete && context.KeepAlive && !Closed.IsCancellationRequested;
                }
                Volatile.Write(ref _requestStart, 0);
                if (context.HasOnCompleted)
                {
                    await RunOnCompletedAsync(context);
                }
                context.Return();
                _input.AdvanceTo(buffer.GetPosition(headLength));
                if (!keepAlive)
                {
                    return false;
                }
            }
        }
        catch (Exception ex) when (ex is ConnectionResetException or ConnectionAbortedException or IOException or OperationCanceledException)
        {
            // The client went away, or the connection was aborted (a timeout, shutdown): nothing left to answer.
            Log.ConnectionEnded(_logger, ConnectionId, ex.Message);
            return false;
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, ConnectionId, ex);
            return false;
        }
        finally
        {
            if (_fast is not null && CloseRequested)
            {
                // Closed by the server between requests: the client may be sending its next one right now.
                _fast.LingerOnClose = true;
            }
            // The own accept path's end of the connection (FastListener): no awaiting frame of its own.
            Ended?.Invoke(this, _handOver);
        }
    }

    private async ValueTask RunOnCompletedAsync(Http1RequestContext context)
    {
        try
        {
            await context.RunOnCompletedAsync();
        }
        catch (Exception ex)
        {
            Log.AppFailed(_logger, ConnectionId, ex);
        }
    }

    /// <summary>
    /// Flushes the output. A flush that waits means the client is not reading: it gets Kestrel's minimum response data
    /// rate (240 bytes/s after a 5 s grace, <c>Limits.MinResponseDataRate</c>) before the connection is cut.
    /// </summary>
    public ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken)
    {
        var pending = Output.CanGetUnflushedBytes ? Output.UnflushedBytes : 0;
        var flush = Output.FlushAsync(cancellationToken);
        if (flush.IsCompleted || _options.Limits.MinResponseDataRate is not { } rate)
        {
            return flush;
        }
        var seconds = Math.Max(rate.GracePeriod.TotalSeconds, pending / Math.Max(rate.BytesPerSecond, 1));
        Volatile.Write(ref _writeDeadline, Environment.TickCount64 + (long)(seconds * 1000));
        return AwaitFlushAsync(flush);
    }

    private async ValueTask<FlushResult> AwaitFlushAsync(ValueTask<FlushResult> flush)
    {
        try
        {
            return await flush;
        }
        finally
        {
            Volatile.Write(ref _writeDeadline, 0);
        }
    }

    public void Abort(string reason) => _connection.Abort(new ConnectionAbortedException(reason));

    /// <summary>Called by the heartbeat about once a second.</summary>
    public void OnHeartbeat(long now)
    {
        var deadline = Volatile.Read(ref _deadline);
        if ((deadline != 0 && now >= deadline && _waiting != 0)
            || (_waiting == 1 && Volatile.Read(ref _closeRequestedAt) is var closeAt and not 0 && now - closeAt >= CloseGraceMs))
        {
            _timedOut = true;
            _input.CancelPendingRead();
        }
        var started = Volatile.Read(ref _requestStart);
        if (_fast is not null && started != 0 && now - started >= 1000)
        {
            // Nothing reads the socket while a request runs on the own accept path: watch for the client leaving.
            _fast.WatchForClose();
        }
        var writeDeadline = Volatile.Read(ref _writeDeadline);
        if (writeDeadline != 0 && now >= writeDeadline)
        {
            Log.WriteTimedOut(_logger, ConnectionId);
            Abort("the client did not read the response at the minimum data rate");
        }
    }

    /// <summary>
    /// How long a connection asked to close (shutdown, reload) still waits for a request when it has none in progress
    /// (HAProxy's idle-close-on-response, for a second): a client that reuses a keep-alive connection, or one that
    /// connected a moment ago, has its request served with Connection: close instead of a reset it could not retry.
    /// The heartbeat checks it once a second, so the wait is one to two seconds.
    /// </summary>
    internal const long CloseGraceMs = 1000;

    /// <summary>
    /// The server is stopping: the request in progress is finished and answered with Connection: close when its head has
    /// not gone out yet; an idle connection is closed by the heartbeat after <see cref="CloseGraceMs"/> unless a request
    /// arrives first, which is served the same way.
    /// </summary>
    internal void OnCloseRequested()
    {
        Volatile.Write(ref _closeRequestedAt, Math.Max(1, Environment.TickCount64));
    }

    private void SetDeadline(TimeSpan timeout, int waiting)
    {
        Volatile.Write(ref _deadline, timeout == Timeout.InfiniteTimeSpan ? 0 : Environment.TickCount64 + (long)timeout.TotalMilliseconds);
        _waiting = waiting;
    }

    private void ClearDeadline()
    {
        _waiting = 0;
        Volatile.Write(ref _deadline, 0);
    }

    /// <summary>RFC 9110 §15.5.9, as Kestrel answers a head that did not arrive within RequestHeadersTimeout.</summary>
    private async ValueTask SendRequestTimeoutAsync()
    {
        Output.Write("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n"u8);
        Output.Write(DateHeader.Current);
        Output.Write("\r\n"u8);
        await Output.FlushAsync();
    }

    /// <summary>The length of the head up to and including the empty line, or -1 when it has not all arrived.</summary>
    private static long FindHeadEnd(ReadOnlySequence<byte> buffer)
    {
        if (buffer.IsSingleSegment)
        {
            var index = buffer.FirstSpan.IndexOf("\r\n\r\n"u8);
            return index < 0 ? -1 : index + 4;
        }
        var reader = new SequenceReader<byte>(buffer);
        return reader.TryReadTo(out ReadOnlySequence<byte> _, "\r\n\r\n"u8, advancePastDelimiter: true) ? reader.Consumed : -1;
    }

    private void ReturnHeadCopy()
    {
        if (_headCopy is not null)
        {
            ArrayPool<byte>.Shared.Return(_headCopy);
            _headCopy = null;
        }
    }

    public void Dispose()
    {
        ConnectionHeartbeat.Remove(this);
        _closeRequestedRegistration.Dispose();
        if (_fast is not null)
        {
            _fast.Server = null;
        }
        ReturnHeadCopy();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1101, Level = LogLevel.Error, Message = "Connection {ConnectionId}: the application failed")]
        public static partial void AppFailed(ILogger logger, string connectionId, Exception exception);

        [LoggerMessage(EventId = 1102, Level = LogLevel.Debug, Message = "Connection {ConnectionId} ended: {Reason}")]
        public static partial void ConnectionEnded(ILogger logger, string connectionId, string reason);

        [LoggerMessage(EventId = 1104, Level = LogLevel.Error, Message = "Connection {ConnectionId} failed")]
        public static partial void ConnectionFailed(ILogger logger, string connectionId, Exception exception);

        [LoggerMessage(EventId = 1103, Level = LogLevel.Debug, Message = "Connection {ConnectionId}: the client stopped reading the response; closed")]
        public static partial void WriteTimedOut(ILogger logger, string connectionId);
    }
}

/// <summary>A connection the heartbeat visits once a second (<see cref="ConnectionHeartbeat"/>).</summary>
internal interface IHeartbeatMember : Portico.Threading.ISlotted
{
    /// <summary>Checks the connection's deadlines; <paramref name="now"/> is <see cref="Environment.TickCount64"/>.</summary>
    void OnHeartbeat(long now);
}

/// <summary>
/// The once-a-second check of every connection of Portico's own servers, HTTP/1.1 and HTTP/2 (as Kestrel's heartbeat):
/// expired keep-alive, request-header and write deadlines, and the Date header. One timer for all of them: a timer per
/// connection woke a thread-pool worker per connection per second, which then spun on the proxy's core (1 % of the
/// CPU under h2load -c64). Connections join and leave under a lock, once each; the request path only writes its own
/// deadline fields.
/// </summary>
internal static class ConnectionHeartbeat
{
    private static readonly Portico.Threading.SlotSet<IHeartbeatMember> Connections = new();
    private static readonly Lock TimerGate = new();
    private static Timer? _timer;

    public static void Add(IHeartbeatMember connection)
    {
        Connections.Add(connection);
        if (_timer is null)
        {
            lock (TimerGate)
            {
                _timer ??= new Timer(static _ => Tick(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
            }
        }
    }

    public static void Remove(IHeartbeatMember connection) => Connections.Remove(connection);

    private static void Tick()
    {
        DateHeader.Update(DateTimeOffset.UtcNow);
        IdleTrim.OnTick();
        // Outside the set's lock: a cancelled read may run the connection's loop on this thread, which may leave the set.
        Connections.ForEach(static (connection, now) => connection.OnHeartbeat(now), Environment.TickCount64);
    }
}
