using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Portico.Threading;
using BadHttpRequestException = Microsoft.AspNetCore.Http.BadHttpRequestException;

namespace Portico.Server.Http2;

/// <summary>
/// Portico's own HTTP/2 server for cleartext connections with prior knowledge (RFC 9113 §3.3), on the own accept path.
/// One read loop parses frames and starts each request's app inline (so a batch of HEADERS becomes a batch of upstream
/// requests without a thread switch); responses from any thread are framed into one output buffer under the
/// connection's lock, and one flush sends what every stream wrote since the last, so many responses share a send(2).
/// </summary>
/// <remarks>
/// <para>Why own it: on this project's bench (one core, h2load c64 m10) Kestrel's HTTP/2 made about 5 syscalls and 0.56
/// context switches per proxied request against HAProxy's 2.3 and ~0, and Portico's h2c requests per CPU-second were
/// 0.41× HAProxy's. Pingora owns its HTTP/2 for the same reason.</para>
/// <para>What it implements: frames, flow control both ways (windows from Kestrel's <c>Limits.Http2</c>), HPACK
/// (<see cref="HpackDecoder"/>; responses are encoded without Huffman and without the dynamic table: CPU over bytes),
/// request bodies, response trailers, extended CONNECT (RFC 8441, WebSockets), GOAWAY on shutdown and idle timeout,
/// and the abuse limits of a public server: header list and count limits (431), CONTINUATION floods, rapid reset
/// (CVE-2023-44487: streams reset while their app still runs count against the stream limit), PING and SETTINGS
/// floods. TLS connections (ALPN h2) stay on Kestrel. <c>PORTICO_HTTP2_SERVER=kestrel</c> hands h2c to Kestrel too.</para>
/// </remarks>
internal sealed partial class Http2ServerConnection : IThreadPoolWorkItem, IHeartbeatMember
{
    /// <summary>The environment variable that turns this server off ("kestrel").</summary>
    public const string Variable = "PORTICO_HTTP2_SERVER";

    /// <summary>False when <see cref="Variable"/> is "kestrel".</summary>
    public static bool Enabled { get; } = !string.Equals(Environment.GetEnvironmentVariable(Variable), "kestrel", StringComparison.OrdinalIgnoreCase);

    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    private const int DefaultWindow = 65535;
    private const int OutputHighWater = 256 * 1024;
    private const int MaxControlFramesQueued = 10_000;

    private readonly FastConnection _fast;
    private readonly Socket _socket;
    private readonly PipeReader _input;
    private readonly Func<HttpContext, ValueTask> _app;
    private readonly KestrelServerOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<int, Http2Stream> _streams = [];
    private readonly HpackDecoder _decoder;
    private readonly RequestHeadSink _sink = new();

    // Our settings (what the peer must respect).
    private readonly int _maxStreams;
    private readonly int _maxFrameSize;
    private readonly int _initialStreamWindow;
    private readonly int _connectionWindow;
    private readonly int _maxHeaderListSize;

    // The peer's settings and our send windows.
    private int _peerMaxFrameSize = 16384;
    private long _peerInitialWindow = DefaultWindow;
    private long _sendWindow = DefaultWindow;

    // Receive-side connection window.
    private long _receiveWindow = DefaultWindow;
    private int _unackedConnection;

    private int _lastStreamId;
    /// <summary>Highest stream id taken for processing (Gate): what the final GOAWAY announces.</summary>
    private int _lastAcceptedStreamId;
    /// <summary>The final GOAWAY's last stream id (Gate); streams above it are not processed.</summary>
    private int _goAwayLastStreamId = int.MaxValue;
    private int _runningApps;
    private bool _goAwaySent;
    private long _shutdownAt;
    private bool _closing;
    private long _lastActivity = Environment.TickCount64;
    private int _pingsWithoutData;
    private int _settingsWithoutData;

    // A header block that continues in CONTINUATION frames.
    private byte[]? _headerBlock;
    private int _headerBlockLength;
    private int _headerStreamId;
    private bool _headerEndStream;
    private bool _headerIsTrailers;

    // Output: frames waiting to be sent, and the one flush that sends them.
    private byte[] _out = [];
    private int _outLength;
    private bool _flushScheduled;
    private bool _outputFailed;
    private TaskCompletionSource? _drained;
    private Task _flushing = Task.CompletedTask;
    private readonly List<Http2Stream> _blockedOnConnection = [];
    // The connection's place in the heartbeat's set (ConnectionHeartbeat), -1 outside it.
    private int _heartbeatSlot = -1;

    int Portico.Threading.ISlotted.Slot { get => _heartbeatSlot; set => _heartbeatSlot = value; }

    public Http2ServerConnection(FastConnection fast, Func<HttpContext, ValueTask> app, KestrelServerOptions options, ILogger logger)
    {
        _fast = fast;
        _socket = fast.Socket;
        _input = fast.Transport.Input;
        _app = app;
        _options = options;
        _logger = logger;
        var limits = options.Limits;
        _maxStreams = limits.Http2.MaxStreamsPerConnection;
        _maxFrameSize = limits.Http2.MaxFrameSize;
        _initialStreamWindow = limits.Http2.InitialStreamWindowSize;
        _connectionWindow = limits.Http2.InitialConnectionWindowSize;
        _maxHeaderListSize = (int)Math.Min(int.MaxValue, limits.MaxRequestHeadersTotalSize + 32L * limits.MaxRequestHeaderCount);
        _decoder = new HpackDecoder(limits.Http2.HeaderTableSize, Math.Max(_maxHeaderListSize, limits.Http2.MaxRequestHeaderFieldSize));
        ConnectionId = fast.ConnectionId;
        Remote = fast.RemoteEndPoint as IPEndPoint;
        Local = fast.LocalEndPoint as IPEndPoint;
    }

    /// <summary>The connection's lock: windows, the stream table, stream bodies and the output buffer.</summary>
    internal Lock Gate { get; } = new();

    internal string ConnectionId { get; }

    internal IPEndPoint? Remote { get; }

    /// <summary>The peer's address as X-Forwarded-For shows it, formatted once.</summary>
    internal string RemoteIpText => _remoteText ??= Proxy.ProxySession.FormatAddress(Remote?.Address ?? IPAddress.None);

    private string? _remoteText;

    internal IPEndPoint? Local { get; }

    internal IFeatureCollection ConnectionFeatures => _fast.Features;

    /// <summary>Serves the connection until it ends; the preface is the next thing in the input.</summary>
    public async Task RunAsync()
    {
        var limits = _options.Limits;
        ConnectionHeartbeat.Add(this);
        using var closeRequested = _fast.ConnectionClosedRequested.UnsafeRegister(static s => ((Http2ServerConnection)s!).BeginShutdown(), this);
        if (_fast.CloseRequestedEarly)
        {
            BeginShutdown();
        }
        var code = Http2ErrorCode.NoError;
        string? reason = null;
        try
        {
            lock (Gate)
            {
                WriteSettings();
                if (_connectionWindow > DefaultWindow)
                {
                    WriteWindowUpdate(0, _connectionWindow - DefaultWindow);
                    _receiveWindow = _connectionWindow;
                }
            }
            await FlushInlineAsync();
            if (!await ReadPrefaceAsync())
            {
                return;
            }
            while (true)
            {
                var result = await _input.ReadAsync();
                var buffer = result.Buffer;
                var consumed = 0L;
                if (!buffer.IsEmpty)
                {
                    _lastActivity = Environment.TickCount64;
                    if (buffer.IsSingleSegment)
                    {
                        consumed = ProcessFrames(buffer.FirstSpan);
                    }
                    else
                    {
                        var copy = buffer.ToArray();
                        consumed = ProcessFrames(copy);
                    }
                }
                _input.AdvanceTo(buffer.GetPosition(consumed), buffer.End);
                await FlushInlineAsync();
                if (result.IsCompleted || result.IsCanceled || ShouldClose())
                {
                    break;
                }
            }
        }
        catch (Http2ConnectionException ex)
        {
            code = ex.Code;
            reason = ex.Message;
            Log.ProtocolError(_logger, ConnectionId, ex.Code.ToString(), ex.Message);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException or Microsoft.AspNetCore.Connections.ConnectionResetException)
        {
            // The client went away.
            code = Http2ErrorCode.Cancel;
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, ConnectionId, ex);
            code = Http2ErrorCode.InternalError;
        }
        finally
        {
            await EndAsync(code, reason);
            ConnectionHeartbeat.Remove(this);
        }
    }

    private async ValueTask<bool> ReadPrefaceAsync()
    {
        while (true)
        {
            var result = await _input.ReadAsync();
            var buffer = result.Buffer;
            if (buffer.Length >= Preface.Length)
            {
                Span<byte> head = stackalloc byte[24];
                buffer.Slice(0, 24).CopyTo(head);
                if (!head.SequenceEqual(Preface))
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "invalid connection preface");
                }
                _input.AdvanceTo(buffer.GetPosition(24));
                return true;
            }
            if (result.IsCompleted || result.IsCanceled)
            {
                _input.AdvanceTo(buffer.Start, buffer.End);
                return false;
            }
            _input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private bool ShouldClose()
    {
        lock (Gate)
        {
            return _closing && _streams.Count == 0 && _runningApps == 0;
        }
    }

    // ---- frames in ----

    /// <summary>Processes every complete frame in <paramref name="data"/>; returns the bytes consumed.</summary>
    private int ProcessFrames(ReadOnlySpan<byte> data)
    {
        var offset = 0;
        while (data.Length - offset >= FrameHeader.Size)
        {
            var header = FrameHeader.Read(data[offset..]);
            if (header.Length > _maxFrameSize)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, $"a {header.Type} frame of {header.Length} bytes is over SETTINGS_MAX_FRAME_SIZE {_maxFrameSize}");
            }
            if (data.Length - offset - FrameHeader.Size < header.Length)
            {
                break;
            }
            var payload = data.Slice(offset + FrameHeader.Size, header.Length);
            offset += FrameHeader.Size + header.Length;
            if (_headerBlock is not null && header.Type != FrameType.Continuation)
            {
                throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "a header block was interrupted by another frame");
            }
            switch (header.Type)
            {
                case FrameType.Data:
                    OnData(header, payload);
                    break;
                case FrameType.Headers:
                    OnHeaders(header, payload);
                    break;
                case FrameType.Continuation:
                    OnContinuation(header, payload);
                    break;
                case FrameType.Priority:
                    OnPriority(header, payload);
                    break;
                case FrameType.RstStream:
                    OnRstStream(header, payload);
                    break;
                case FrameType.Settings:
                    OnSettings(header, payload);
                    break;
                case FrameType.Ping:
                    OnPing(header, payload);
                    break;
                case FrameType.GoAway:
                    OnGoAway(header, payload);
                    break;
                case FrameType.WindowUpdate:
                    OnWindowUpdate(header, payload);
                    break;
                case FrameType.PushPromise:
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "a client sent PUSH_PROMISE");
                default:
                    // Unknown frame types are ignored (RFC 9113 §4.1).
                    break;
            }
        }
        return offset;
    }

    private static ReadOnlySpan<byte> Unpad(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (!header.Has(FrameFlags.Padded))
        {
            return payload;
        }
        if (payload.IsEmpty)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, $"a padded {header.Type} frame without its pad length");
        }
        var pad = payload[0];
        if (pad >= payload.Length)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"the padding of a {header.Type} frame is longer than the frame");
        }
        return payload.Slice(1, payload.Length - 1 - pad);
    }

    private void OnData(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "DATA on stream 0");
        }
        var data = Unpad(header, payload);
        _pingsWithoutData = 0;
        _settingsWithoutData = 0;
        TaskCompletionSource? wake = null;
        Http2Stream? resetStream = null;
        lock (Gate)
        {
            // The whole frame counts against the connection window (RFC 9113 §6.9.1), padding included.
            if (header.Length > _receiveWindow)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, "DATA beyond the connection's flow-control window");
            }
            _receiveWindow -= header.Length;
            if (!_streams.TryGetValue(header.StreamId, out var stream))
            {
                if (header.StreamId > _lastStreamId || (header.StreamId & 1) == 0)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"DATA on idle stream {header.StreamId}");
                }
                // A stream already closed (or reset): the bytes are dropped and the window given back.
                CreditConnection(header.Length);
                return;
            }
            if (stream.RequestEnded)
            {
                CreditConnection(header.Length);
                WriteRstStream(header.StreamId, Http2ErrorCode.StreamClosed);
                MarkReset(stream);
                resetStream = stream;
            }
            else if (header.Length > stream.ReceiveWindow)
            {
                CreditConnection(header.Length);
                WriteRstStream(header.StreamId, Http2ErrorCode.FlowControlError);
                MarkReset(stream);
                resetStream = stream;
            }
            else
            {
                stream.ReceiveWindow -= header.Length;
                // Padding is consumed at once.
                var padding = header.Length - data.Length;
                if (padding > 0)
                {
                    CreditConnection(padding);
                    stream.ReceiveWindow += padding;
                }
                stream.Received += data.Length;
                if (stream.DeclaredLength >= 0 && stream.Received > stream.DeclaredLength)
                {
                    WriteRstStream(header.StreamId, Http2ErrorCode.ProtocolError);
                    MarkReset(stream);
                    resetStream = stream;
                }
                else if (stream.MaxRequestBodySize is { } max && stream.Received > max)
                {
                    // The app hears 413 at its next read; what else arrives is dropped.
                    CreditConnection(data.Length);
                    wake = stream.EndBody(new BadHttpRequestException($"Request body too large. The max request body size is {max} bytes.", StatusCodes.Status413PayloadTooLarge));
                }
                else
                {
                    wake = stream.AppendBody(data);
                }
                if (resetStream is null && header.Has(FrameFlags.EndStream))
                {
                    if (stream.DeclaredLength >= 0 && stream.Received != stream.DeclaredLength)
                    {
                        WriteRstStream(header.StreamId, Http2ErrorCode.ProtocolError);
                        MarkReset(stream);
                        resetStream = stream;
                    }
                    else
                    {
                        stream.RequestEnded = true;
                        wake = stream.EndBody(null) ?? wake;
                        if (stream.ResponseEnded)
                        {
                            RemoveStream(stream);
                        }
                    }
                }
            }
            if (resetStream is not null)
            {
                wake = resetStream.EndBody(new IOException("the stream was reset")) ?? wake;
            }
        }
        wake?.TrySetResult();
        resetStream?.CancelRequest();
    }

    private void OnHeaders(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        var id = header.StreamId;
        if (id == 0 || (id & 1) == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"HEADERS on stream {id}");
        }
        var block = Unpad(header, payload);
        if (header.Has(FrameFlags.Priority))
        {
            if (block.Length < 5)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "HEADERS with priority shorter than 5 bytes");
            }
            var dependency = (int)(BinaryPrimitives.ReadUInt32BigEndian(block) & 0x7FFF_FFFF);
            if (dependency == id)
            {
                // A stream error (RFC 9113 §5.3.1), but the block must still be decoded for HPACK's sake.
                _sink.SelfDependent = true;
            }
            block = block[5..];
        }
        bool trailers;
        lock (Gate)
        {
            trailers = _streams.TryGetValue(id, out var existing) && !existing.RequestEnded;
            if (!trailers && id <= _lastStreamId)
            {
                if (_streams.ContainsKey(id))
                {
                    throw new Http2ConnectionException(Http2ErrorCode.StreamClosed, $"HEADERS on half-closed stream {id}");
                }
                // A stream we reset or closed: its header block still goes through the decoder below, then is dropped.
                trailers = true;
            }
        }
        _headerStreamId = id;
        _headerEndStream = header.Has(FrameFlags.EndStream);
        _headerIsTrailers = trailers;
        if (header.Has(FrameFlags.EndHeaders))
        {
            HeaderBlockComplete(block);
            return;
        }
        if (block.Length > _maxHeaderListSize * 2)
        {
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "header block too large");
        }
        _headerBlock = ArrayPool<byte>.Shared.Rent(Math.Max(block.Length * 2, 4096));
        block.CopyTo(_headerBlock);
        _headerBlockLength = block.Length;
    }

    private void OnContinuation(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (_headerBlock is null || header.StreamId != _headerStreamId)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "CONTINUATION without a header block in progress on its stream");
        }
        if (_headerBlockLength + payload.Length > _maxHeaderListSize * 2 + 16384)
        {
            // CONTINUATION flood (CVE-2024-27316 and kin): a block no request needs.
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "header block too large");
        }
        if (_headerBlock.Length - _headerBlockLength < payload.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent((_headerBlockLength + payload.Length) * 2);
            Buffer.BlockCopy(_headerBlock, 0, larger, 0, _headerBlockLength);
            ArrayPool<byte>.Shared.Return(_headerBlock);
            _headerBlock = larger;
        }
        payload.CopyTo(_headerBlock.AsSpan(_headerBlockLength));
        _headerBlockLength += payload.Length;
        if (header.Has(FrameFlags.EndHeaders))
        {
            var block = _headerBlock;
            _headerBlock = null;
            try
            {
                HeaderBlockComplete(block.AsSpan(0, _headerBlockLength));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(block);
            }
        }
    }

    private void HeaderBlockComplete(ReadOnlySpan<byte> block)
    {
        var id = _headerStreamId;
        var sink = _sink;
        var selfDependent = sink.SelfDependent;
        sink.SelfDependent = false;
        if (_headerIsTrailers)
        {
            // Request trailers (or a dropped stream's block): decoded for the table's sake, then ended.
            sink.Begin(null, trailers: true);
            DecodeBlock(block, sink);
            if (!_headerEndStream)
            {
                throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "trailers without END_STREAM");
            }
            TaskCompletionSource? wake = null;
            lock (Gate)
            {
                if (_streams.TryGetValue(id, out var stream) && !stream.RequestEnded && !stream.IsReset)
                {
                    if (sink.Error is not null || (stream.DeclaredLength >= 0 && stream.Received != stream.DeclaredLength))
                    {
                        WriteRstStream(id, Http2ErrorCode.ProtocolError);
                        MarkReset(stream);
                        wake = stream.EndBody(new IOException("malformed request trailers"));
                    }
                    else
                    {
                        stream.RequestEnded = true;
                        wake = stream.EndBody(null);
                        if (stream.ResponseEnded)
                        {
                            RemoveStream(stream);
                        }
                    }
                }
            }
            wake?.TrySetResult();
            return;
        }

        if (id <= _lastStreamId)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"stream {id} is not above the last stream {_lastStreamId}");
        }
        _lastStreamId = id;
        var stream2 = Http2Stream.Rent();
        stream2.Initialize(this, id, _peerInitialWindow, _initialStreamWindow, _options.Limits.MaxRequestBodySize);
        sink.Begin(stream2, trailers: false, _options.Limits.MaxRequestHeaderCount);
        var tooLarge = DecodeBlock(block, sink);
        tooLarge |= sink.TooMany;
        if (id > Volatile.Read(ref _goAwayLastStreamId))
        {
            // After our GOAWAY: streams above its last id are not processed (RFC 9113 §6.8).
            stream2.Return();
            return;
        }
        string? refuse = null;
        var code = Http2ErrorCode.ProtocolError;
        lock (Gate)
        {
            if (_streams.Count >= _maxStreams)
            {
                refuse = "too many concurrent streams";
                code = Http2ErrorCode.RefusedStream;
            }
            else if (_runningApps >= _maxStreams * 2)
            {
                // Rapid reset: streams the client reset whose apps still run.
                throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "too many streams reset while their requests were still being served");
            }
        }
        if (refuse is null)
        {
            refuse = selfDependent ? "a stream depends on itself" : sink.Finish(_headerEndStream);
        }
        if (refuse is not null && !tooLarge)
        {
            Log.StreamRefused(_logger, ConnectionId, id, refuse);
            lock (Gate)
            {
                WriteRstStream(id, code);
            }
            RequestFlush();
            stream2.Return();
            return;
        }
        stream2.CanHaveBody = !_headerEndStream;
        lock (Gate)
        {
            if (id > _goAwayLastStreamId)
            {
                // The final GOAWAY went out while the block was decoded, announcing a lower last id: the client
                // retries this request elsewhere, so it must not run here too.
                stream2.Return();
                return;
            }
            _lastAcceptedStreamId = id;
            stream2.RequestEnded = _headerEndStream;
            stream2.InTable = true;
            _streams.Add(id, stream2);
            _runningApps++;
            if (stream2.DeclaredLength > 0 && stream2.MaxRequestBodySize is { } max && stream2.DeclaredLength > max)
            {
                stream2.EndBody(new BadHttpRequestException($"Request body too large. The max request body size is {max} bytes.", StatusCodes.Status413PayloadTooLarge));
            }
        }
        _ = RunStreamAsync(stream2, tooLarge);
    }

    /// <summary>Decodes one block into the sink; true when the header list was over the limit (answered 431).</summary>
    private bool DecodeBlock(ReadOnlySpan<byte> block, RequestHeadSink sink)
    {
        try
        {
            _decoder.Decode(block, ref sink);
            return false;
        }
        catch (HpackException ex) when (ex.Kind == HpackErrorKind.HeaderListTooLarge)
        {
            return true;
        }
        catch (HpackException ex)
        {
            throw new Http2ConnectionException(Http2ErrorCode.CompressionError, ex.Message);
        }
    }

    private void OnPriority(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "PRIORITY on stream 0");
        }
        if (payload.Length != 5)
        {
            lock (Gate)
            {
                WriteRstStream(header.StreamId, Http2ErrorCode.FrameSizeError);
            }
        }
        // Priorities are not acted on (RFC 9113 §5.3.2 deprecates the scheme).
    }

    private void OnRstStream(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId == 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "RST_STREAM on stream 0");
        }
        if (payload.Length != 4)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "RST_STREAM is not 4 bytes");
        }
        Http2Stream? stream;
        TaskCompletionSource? wake;
        lock (Gate)
        {
            if (header.StreamId > _lastStreamId)
            {
                throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"RST_STREAM on idle stream {header.StreamId}");
            }
            if (!_streams.TryGetValue(header.StreamId, out stream))
            {
                return;
            }
            MarkReset(stream);
            wake = stream.EndBody(new IOException("the client reset the stream"));
        }
        wake?.TrySetResult();
        stream.CancelRequest();
    }

    private void OnSettings(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "SETTINGS on a stream");
        }
        if (header.Has(FrameFlags.Ack))
        {
            if (payload.Length != 0)
            {
                throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "SETTINGS ACK with a payload");
            }
            return;
        }
        if (payload.Length % 6 != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "SETTINGS payload not a multiple of 6");
        }
        if (++_settingsWithoutData > 1000)
        {
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "SETTINGS flood");
        }
        List<Http2Stream>? wake = null;
        lock (Gate)
        {
            for (var i = 0; i < payload.Length; i += 6)
            {
                var id = BinaryPrimitives.ReadUInt16BigEndian(payload[i..]);
                var value = BinaryPrimitives.ReadUInt32BigEndian(payload[(i + 2)..]);
                switch (id)
                {
                    case SettingId.EnablePush when value > 1:
                        throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "SETTINGS_ENABLE_PUSH above 1");
                    case SettingId.InitialWindowSize:
                        if (value > int.MaxValue)
                        {
                            throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1");
                        }
                        var delta = value - _peerInitialWindow;
                        _peerInitialWindow = value;
                        foreach (var stream in _streams.Values)
                        {
                            stream.SendWindow += delta;
                            if (stream.SendWindow > int.MaxValue)
                            {
                                throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, "a stream's window went above 2^31-1");
                            }
                            if (delta > 0 && stream.WindowWaiter is not null)
                            {
                                (wake ??= []).Add(stream);
                            }
                        }
                        break;
                    case SettingId.MaxFrameSize:
                        if (value is < 16384 or > 16777215)
                        {
                            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "SETTINGS_MAX_FRAME_SIZE out of range");
                        }
                        _peerMaxFrameSize = (int)value;
                        break;
                    case SettingId.EnableConnectProtocol when value > 1:
                        throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "SETTINGS_ENABLE_CONNECT_PROTOCOL above 1");
                    default:
                        // HEADER_TABLE_SIZE: our encoder uses no dynamic table, so any size fits; the rest are advisory.
                        break;
                }
            }
            WriteFrameHeader(0, FrameType.Settings, FrameFlags.Ack, 0);
        }
        if (wake is not null)
        {
            foreach (var stream in wake)
            {
                WakeWriter(stream);
            }
        }
    }

    private void OnPing(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "PING on a stream");
        }
        if (payload.Length != 8)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "PING is not 8 bytes");
        }
        if (header.Has(FrameFlags.Ack))
        {
            return;
        }
        if (++_pingsWithoutData > 1000)
        {
            // A ping flood (CVE-2019-9512): answering costs more than sending.
            throw new Http2ConnectionException(Http2ErrorCode.EnhanceYourCalm, "PING flood");
        }
        lock (Gate)
        {
            WriteFrameHeader(8, FrameType.Ping, FrameFlags.Ack, 0);
            payload.CopyTo(Reserve(8));
            _outLength += 8;
        }
    }

    private void OnGoAway(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId != 0)
        {
            throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "GOAWAY on a stream");
        }
        if (payload.Length < 8)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "GOAWAY shorter than 8 bytes");
        }
        lock (Gate)
        {
            // The client is leaving: what it started finishes, then the connection closes.
            _closing = true;
        }
    }

    private void OnWindowUpdate(in FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 4)
        {
            throw new Http2ConnectionException(Http2ErrorCode.FrameSizeError, "WINDOW_UPDATE is not 4 bytes");
        }
        var increment = (int)(BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF);
        Http2Stream[]? wake = null;
        var wakeCount = 0;
        Http2Stream? single = null;
        lock (Gate)
        {
            if (header.StreamId == 0)
            {
                if (increment == 0)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, "WINDOW_UPDATE of 0 on the connection");
                }
                _sendWindow += increment;
                if (_sendWindow > int.MaxValue)
                {
                    throw new Http2ConnectionException(Http2ErrorCode.FlowControlError, "the connection's window went above 2^31-1");
                }
                if (_blockedOnConnection.Count > 0)
                {
                    wake = [.. _blockedOnConnection];
                    wakeCount = wake.Length;
                    _blockedOnConnection.Clear();
                }
            }
            else if (_streams.TryGetValue(header.StreamId, out var stream))
            {
                if (increment == 0)
                {
                    WriteRstStream(header.StreamId, Http2ErrorCode.ProtocolError);
                    MarkReset(stream);
                    single = stream;
                }
                else
                {
                    stream.SendWindow += increment;
                    if (stream.SendWindow > int.MaxValue)
                    {
                        WriteRstStream(header.StreamId, Http2ErrorCode.FlowControlError);
                        MarkReset(stream);
                    }
                    single = stream;
                }
            }
            else if (header.StreamId > _lastStreamId)
            {
                throw new Http2ConnectionException(Http2ErrorCode.ProtocolError, $"WINDOW_UPDATE on idle stream {header.StreamId}");
            }
        }
        if (single is not null)
        {
            WakeWriter(single);
            if (single.IsReset)
            {
                single.CancelRequest();
            }
        }
        for (var i = 0; i < wakeCount; i++)
        {
            WakeWriter(wake![i]);
        }
    }

    private void WakeWriter(Http2Stream stream)
    {
        TaskCompletionSource? waiter;
        lock (Gate)
        {
            waiter = stream.WindowWaiter;
            stream.WindowWaiter = null;
        }
        waiter?.TrySetResult();
    }

    // ---- streams ----

    // Detached: its box is pooled and recycled when the stream is done (an `async Task` allocated one per stream).
    private async Detached RunStreamAsync(Http2Stream stream, bool headersTooLarge)
    {
        try
        {
            if (headersTooLarge)
            {
                stream.StatusCode = StatusCodes.Status431RequestHeaderFieldsTooLarge;
                stream.ResponseHeaderTable.ContentLength = 0;
            }
            else
            {
                try
                {
                    await _app(stream.HttpContext);
                }
                catch (Exception ex)
                {
                    Log.AppFailed(_logger, ConnectionId, stream.StreamId, ex);
                    if (stream.HasStarted)
                    {
                        ResetStream(stream, Http2ErrorCode.InternalError, "the application failed after the response started");
                    }
                    else
                    {
                        stream.ResetForError();
                    }
                }
            }
            if (!stream.IsReset)
            {
                if (!await stream.CompleteResponseAsync())
                {
                    ResetStream(stream, Http2ErrorCode.InternalError, "the response was shorter than its Content-Length");
                }
            }
            if (stream.HasOnCompleted)
            {
                try
                {
                    await stream.RunOnCompletedAsync();
                }
                catch (Exception ex)
                {
                    Log.AppFailed(_logger, ConnectionId, stream.StreamId, ex);
                }
            }
        }
        catch (Exception ex)
        {
            // Writing the response failed: the stream was reset or the connection is gone.
            Log.StreamEnded(_logger, ConnectionId, stream.StreamId, ex.Message);
        }
        finally
        {
            bool wakeReader;
            lock (Gate)
            {
                RemoveStream(stream);
                _runningApps--;
                wakeReader = _closing && _streams.Count == 0 && _runningApps == 0;
            }
            stream.Return();
            if (wakeReader)
            {
                _input.CancelPendingRead();
            }
        }
    }

    /// <summary>Resets a stream from our side (the app aborted, or failed mid-response).</summary>
    internal void ResetStream(Http2Stream stream, Http2ErrorCode code, string reason)
    {
        TaskCompletionSource? wake = null;
        lock (Gate)
        {
            if (stream.IsReset || (stream.ResponseEnded && stream.RequestEnded))
            {
                return;
            }
            WriteRstStream(stream.StreamId, code);
            MarkReset(stream);
            wake = stream.EndBody(new IOException(reason));
        }
        Log.StreamReset(_logger, ConnectionId, stream.StreamId, reason);
        wake?.TrySetResult();
        RequestFlush();
        stream.CancelRequest();
    }

    /// <summary>Lock held: the stream takes no more frames; a writer waiting for window wakes (and fails).</summary>
    private void MarkReset(Http2Stream stream)
    {
        stream.IsReset = true;
        RemoveStream(stream);
        var waiter = stream.WindowWaiter;
        stream.WindowWaiter = null;
        if (waiter is not null)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static w => w.TrySetResult(), waiter, preferLocal: true);
        }
    }

    private void RemoveStream(Http2Stream stream)
    {
        if (stream.InTable)
        {
            stream.InTable = false;
            _streams.Remove(stream.StreamId);
            _blockedOnConnection.Remove(stream);
        }
    }

    /// <summary>Lock held: the app read <paramref name="count"/> body bytes; windows are reopened by halves.</summary>
    internal void OnBodyConsumed(Http2Stream stream, int count)
    {
        stream.UnackedConsumed += count;
        if (!stream.RequestEnded && !stream.IsReset && stream.UnackedConsumed >= _initialStreamWindow / 2)
        {
            WriteWindowUpdate(stream.StreamId, stream.UnackedConsumed);
            stream.ReceiveWindow += stream.UnackedConsumed;
            stream.UnackedConsumed = 0;
        }
        CreditConnection(count);
        RequestFlushLocked();
    }

    private void CreditConnection(int count)
    {
        _unackedConnection += count;
        if (_unackedConnection >= _connectionWindow / 2)
        {
            WriteWindowUpdate(0, _unackedConnection);
            _receiveWindow += _unackedConnection;
            _unackedConnection = 0;
        }
    }

    // ---- the response side ----

    internal void WriteResponseHeaders(Http2Stream stream, int status, ResponseHeaders headers, bool endStream)
    {
        var scratch = ArrayPool<byte>.Shared.Rent(ResponseHeadEncoder.MaxLength(headers));
        try
        {
            var length = ResponseHeadEncoder.Encode(scratch, status, headers);
            lock (Gate)
            {
                if (stream.IsReset || _outputFailed)
                {
                    return;
                }
                WriteHeaderBlock(stream.StreamId, scratch.AsSpan(0, length), endStream);
                if (endStream)
                {
                    EndStreamSent(stream);
                }
                RequestFlushLocked();
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    /// <summary>Lock held: HEADERS, then CONTINUATION frames when the block is over the peer's frame size.</summary>
    private void WriteHeaderBlock(int streamId, ReadOnlySpan<byte> block, bool endStream)
    {
        var first = Math.Min(block.Length, _peerMaxFrameSize);
        var flags = (byte)((endStream ? FrameFlags.EndStream : 0) | (first == block.Length ? FrameFlags.EndHeaders : 0));
        WriteFrameHeader(first, FrameType.Headers, flags, streamId);
        block[..first].CopyTo(Reserve(first));
        _outLength += first;
        block = block[first..];
        while (!block.IsEmpty)
        {
            var n = Math.Min(block.Length, _peerMaxFrameSize);
            WriteFrameHeader(n, FrameType.Continuation, n == block.Length ? FrameFlags.EndHeaders : (byte)0, streamId);
            block[..n].CopyTo(Reserve(n));
            _outLength += n;
            block = block[n..];
        }
    }

    private void EndStreamSent(Http2Stream stream)
    {
        stream.ResponseEnded = true;
        if (stream.RequestEnded)
        {
            RemoveStream(stream);
        }
    }

    /// <summary>Sends body bytes as DATA frames within the windows, waiting for WINDOW_UPDATE when they are shut.</summary>
    internal ValueTask WriteDataAsync(Http2Stream stream, ReadOnlyMemory<byte> data, bool endStream, CancellationToken cancellationToken)
    {
        lock (Gate)
        {
            if (TryWriteData(stream, ref data, endStream) && _outLength < OutputHighWater)
            {
                RequestFlushLocked();
                return ValueTask.CompletedTask;
            }
        }
        return WriteDataSlowAsync(stream, data, endStream, cancellationToken);
    }

    private async ValueTask WriteDataSlowAsync(Http2Stream stream, ReadOnlyMemory<byte> data, bool endStream, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task? wait = null;
            lock (Gate)
            {
                if (!data.IsEmpty && !TryWriteData(stream, ref data, endStream))
                {
                    var waiter = stream.WindowWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    if (stream.SendWindow > 0 && _sendWindow <= 0 && !_blockedOnConnection.Contains(stream))
                    {
                        _blockedOnConnection.Add(stream);
                    }
                    wait = waiter.Task;
                }
                RequestFlushLocked();
                if (wait is null && _outLength >= OutputHighWater)
                {
                    wait = (_drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
                }
            }
            if (wait is null)
            {
                return;
            }
            await wait.WaitAsync(cancellationToken);
            if (stream.IsReset || _outputFailed)
            {
                throw new IOException("The stream was reset.");
            }
        }
    }

    /// <summary>Lock held: writes what the windows allow; true when all of <paramref name="data"/> went into the output.</summary>
    private bool TryWriteData(Http2Stream stream, ref ReadOnlyMemory<byte> data, bool endStream)
    {
        if (stream.IsReset || _outputFailed)
        {
            throw new IOException("The stream was reset.");
        }
        while (!data.IsEmpty)
        {
            var allowed = (int)Math.Min(Math.Min(stream.SendWindow, _sendWindow), _peerMaxFrameSize);
            if (allowed <= 0)
            {
                return false;
            }
            var n = Math.Min(allowed, data.Length);
            var last = n == data.Length && endStream;
            WriteFrameHeader(n, FrameType.Data, last ? FrameFlags.EndStream : (byte)0, stream.StreamId);
            data.Span[..n].CopyTo(Reserve(n));
            _outLength += n;
            stream.SendWindow -= n;
            _sendWindow -= n;
            data = data[n..];
            if (last)
            {
                EndStreamSent(stream);
            }
        }
        return true;
    }

    /// <summary>After the app: trailers or an empty END_STREAM DATA; then RST_STREAM(NO_ERROR) if the client is still sending.</summary>
    internal void EndResponse(Http2Stream stream, IHeaderDictionary? trailers)
    {
        byte[]? scratch = null;
        var length = 0;
        if (trailers is not null)
        {
            scratch = ArrayPool<byte>.Shared.Rent(ResponseHeadEncoder.MaxLength(trailers));
            length = ResponseHeadEncoder.EncodeTrailers(scratch, trailers);
        }
        try
        {
            lock (Gate)
            {
                if (stream.IsReset || _outputFailed)
                {
                    return;
                }
                if (!stream.ResponseEnded)
                {
                    if (scratch is not null)
                    {
                        WriteHeaderBlock(stream.StreamId, scratch.AsSpan(0, length), endStream: true);
                    }
                    else
                    {
                        WriteFrameHeader(0, FrameType.Data, FrameFlags.EndStream, stream.StreamId);
                    }
                    EndStreamSent(stream);
                }
                if (!stream.RequestEnded)
                {
                    // RFC 9113 §8.1: the response is complete; the rest of the request is not wanted.
                    WriteRstStream(stream.StreamId, Http2ErrorCode.NoError);
                    MarkReset(stream);
                }
                RequestFlushLocked();
            }
        }
        finally
        {
            if (scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }
    }

    // ---- the output buffer (lock held for all of these) ----

    private Span<byte> Reserve(int count)
    {
        if (_out.Length - _outLength < count)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(Math.Max(_outLength + count, 16 * 1024), _out.Length * 2));
            if (_outLength > 0)
            {
                Buffer.BlockCopy(_out, 0, larger, 0, _outLength);
            }
            if (_out.Length > 0)
            {
                ArrayPool<byte>.Shared.Return(_out);
            }
            _out = larger;
        }
        return _out.AsSpan(_outLength, count);
    }

    private void WriteFrameHeader(int length, FrameType type, byte flags, int streamId)
    {
        FrameHeader.Write(Reserve(FrameHeader.Size), length, type, flags, streamId);
        _outLength += FrameHeader.Size;
    }

    private void WriteRstStream(int streamId, Http2ErrorCode code)
    {
        WriteFrameHeader(4, FrameType.RstStream, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(Reserve(4), (uint)code);
        _outLength += 4;
    }

    private void WriteWindowUpdate(int streamId, int increment)
    {
        WriteFrameHeader(4, FrameType.WindowUpdate, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(Reserve(4), (uint)increment);
        _outLength += 4;
    }

    private void WriteGoAway(int lastStreamId, Http2ErrorCode code)
    {
        WriteFrameHeader(8, FrameType.GoAway, 0, 0);
        var span = Reserve(8);
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)lastStreamId);
        BinaryPrimitives.WriteUInt32BigEndian(span[4..], (uint)code);
        _outLength += 8;
    }

    private void WriteSettings()
    {
        Span<(ushort Id, uint Value)> settings =
        [
            (SettingId.MaxConcurrentStreams, (uint)_maxStreams),
            (SettingId.InitialWindowSize, (uint)_initialStreamWindow),
            (SettingId.MaxFrameSize, (uint)_maxFrameSize),
            (SettingId.MaxHeaderListSize, (uint)_maxHeaderListSize),
            (SettingId.EnableConnectProtocol, 1u),
        ];
        WriteFrameHeader(settings.Length * 6, FrameType.Settings, 0, 0);
        var span = Reserve(settings.Length * 6);
        for (var i = 0; i < settings.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(span[(i * 6)..], settings[i].Id);
            BinaryPrimitives.WriteUInt32BigEndian(span[(i * 6 + 2)..], settings[i].Value);
        }
        _outLength += settings.Length * 6;
    }

    // ---- flushing ----

    /// <summary>
    /// Sends what is buffered soon: one flush sends what every stream wrote until it runs. On an epoll loop thread (where
    /// upstream responses complete) the flush runs on that thread after the current batch of events; elsewhere on the
    /// thread pool.
    /// </summary>
    private void RequestFlush()
    {
        lock (Gate)
        {
            RequestFlushLocked();
        }
    }

    private void RequestFlushLocked()
    {
        if (_flushScheduled || _outLength == 0)
        {
            return;
        }
        _flushScheduled = true;
        if (!Epoll.EpollLoop.Defer(this))
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
    }

    void IThreadPoolWorkItem.Execute() => _flushing = FlushLoopAsync();

    /// <summary>From the read loop after a batch of frames: send now, on this thread, unless a flush is under way.</summary>
    private Task FlushInlineAsync()
    {
        lock (Gate)
        {
            if (_flushScheduled || _outLength == 0)
            {
                return Task.CompletedTask;
            }
            _flushScheduled = true;
        }
        return _flushing = FlushLoopAsync();
    }

    private async Task FlushLoopAsync()
    {
        byte[]? sending = null;
        try
        {
            while (true)
            {
                int length;
                TaskCompletionSource? drained;
                lock (Gate)
                {
                    if (sending is not null)
                    {
                        // Give the sent buffer back unless the output needs one.
                        if (_out.Length == 0)
                        {
                            _out = sending;
                        }
                        else
                        {
                            ArrayPool<byte>.Shared.Return(sending);
                        }
                        sending = null;
                    }
                    drained = _drained;
                    _drained = null;
                    if (_outLength == 0 || _outputFailed)
                    {
                        _flushScheduled = false;
                        if (_out.Length > 0 && _streams.Count == 0)
                        {
                            // Idle: the connection holds no buffer.
                            ArrayPool<byte>.Shared.Return(_out);
                            _out = [];
                        }
                        drained?.TrySetResult();
                        return;
                    }
                    sending = _out;
                    length = _outLength;
                    _out = [];
                    _outLength = 0;
                }
                drained?.TrySetResult();
                if (_fast.Io is { } io)
                {
                    await io.SendAsync(sending.AsMemory(0, length));
                    continue;
                }
                var offset = 0;
                while (offset < length)
                {
                    var sent = _socket.Send(sending, offset, length - offset, SocketFlags.None, out var error);
                    if (error is SocketError.Success or SocketError.WouldBlock)
                    {
                        offset += sent;
                        if (offset < length && error == SocketError.WouldBlock)
                        {
                            offset += await _socket.SendAsync(sending.AsMemory(offset, length - offset), SocketFlags.None);
                        }
                        continue;
                    }
                    throw new SocketException((int)error);
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            FailOutput();
        }
        finally
        {
            if (sending is not null)
            {
                ArrayPool<byte>.Shared.Return(sending);
            }
        }
    }

    /// <summary>The client is not reading or is gone: every writer fails, the read loop ends.</summary>
    private void FailOutput()
    {
        List<TaskCompletionSource> waiters = [];
        lock (Gate)
        {
            _outputFailed = true;
            _flushScheduled = false;
            _outLength = 0;
            if (_drained is { } drained)
            {
                waiters.Add(drained);
                _drained = null;
            }
            foreach (var stream in _streams.Values)
            {
                if (stream.WindowWaiter is { } waiter)
                {
                    waiters.Add(waiter);
                    stream.WindowWaiter = null;
                }
            }
        }
        foreach (var waiter in waiters)
        {
            waiter.TrySetResult();
        }
        _fast.Abort(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("the client stopped reading"));
    }

    // ---- the end ----

    /// <summary>
    /// Shutdown or reload, in two steps as nginx and Envoy do: GOAWAY with the largest stream id at once (start no new
    /// requests here), and after a second the real last stream id (requests already on their way were still served);
    /// streams in progress finish, then the connection closes.
    /// </summary>
    private void BeginShutdown()
    {
        lock (Gate)
        {
            if (_shutdownAt != 0 || _goAwaySent)
            {
                return;
            }
            _shutdownAt = Environment.TickCount64;
            WriteGoAway(int.MaxValue, Http2ErrorCode.NoError);
            RequestFlushLocked();
        }
    }

    /// <summary>The final GOAWAY: no stream above the last one is served; the connection closes when its streams are done.</summary>
    private void GoAway()
    {
        bool idle;
        lock (Gate)
        {
            if (!_goAwaySent)
            {
                _goAwaySent = true;
                _goAwayLastStreamId = _lastAcceptedStreamId;
                WriteGoAway(_goAwayLastStreamId, Http2ErrorCode.NoError);
                RequestFlushLocked();
            }
            _closing = true;
            idle = _streams.Count == 0 && _runningApps == 0;
        }
        if (idle)
        {
            _input.CancelPendingRead();
        }
    }

    /// <summary>The heartbeat's visit, once a second: the keep-alive timeout of an idle connection, and the end of a shutdown.</summary>
    public void OnHeartbeat(long now)
    {
        var keepAlive = _options.Limits.KeepAliveTimeout;
        bool idle;
        long shutdownAt;
        lock (Gate)
        {
            idle = _streams.Count == 0 && _runningApps == 0 && !_closing;
            shutdownAt = _shutdownAt;
        }
        if (shutdownAt != 0 ? now - shutdownAt >= 1000 : idle && now - Volatile.Read(ref _lastActivity) > keepAlive.TotalMilliseconds)
        {
            GoAway();
        }
    }

    private async Task EndAsync(Http2ErrorCode code, string? reason)
    {
        List<Http2Stream> streams;
        List<TaskCompletionSource> wake = [];
        lock (Gate)
        {
            if (!_goAwaySent && !_outputFailed)
            {
                _goAwaySent = true;
                _goAwayLastStreamId = _lastAcceptedStreamId;
                WriteGoAway(_goAwayLastStreamId, code);
            }
            _closing = true;
            streams = [.. _streams.Values];
            foreach (var stream in streams)
            {
                if (stream.EndBody(new IOException(reason ?? "the connection closed")) is { } reader)
                {
                    wake.Add(reader);
                }
                MarkReset(stream);
            }
        }
        foreach (var waiter in wake)
        {
            waiter.TrySetResult();
        }
        foreach (var stream in streams)
        {
            stream.CancelRequest();
        }
        if (_headerBlock is { } block)
        {
            _headerBlock = null;
            ArrayPool<byte>.Shared.Return(block);
        }
        try
        {
            await FlushInlineAsync();
            await _flushing;
            // A flush scheduled on the thread pool (after an RST_STREAM, say) that had not started yet made both of the
            // above return at once: the GOAWAY is sent only when it has run. It clears the flag once everything
            // buffered is in the socket; a client that does not read is given up on after 5 s.
            for (var waited = 0; waited < 5000; waited += 5)
            {
                lock (Gate)
                {
                    if (!_flushScheduled || _outputFailed)
                    {
                        break;
                    }
                }
                await Task.Delay(5);
            }
        }
        catch (Exception)
        {
            // The client is gone (or is not reading).
        }
        // Unread bytes at close would make the kernel reset the connection, which can discard the GOAWAY.
        if (code != Http2ErrorCode.Cancel)
        {
            _fast.LingerOnClose = true;
        }
        lock (Gate)
        {
            if (_out.Length > 0 && !_flushScheduled)
            {
                ArrayPool<byte>.Shared.Return(_out);
                _out = [];
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1130, Level = LogLevel.Debug, Message = "HTTP/2 connection {ConnectionId}: {Code}: {Reason}")]
        public static partial void ProtocolError(ILogger logger, string connectionId, string code, string reason);

        [LoggerMessage(EventId = 1131, Level = LogLevel.Error, Message = "HTTP/2 connection {ConnectionId} failed")]
        public static partial void ConnectionFailed(ILogger logger, string connectionId, Exception exception);

        [LoggerMessage(EventId = 1132, Level = LogLevel.Error, Message = "Connection {ConnectionId} stream {StreamId}: the application failed")]
        public static partial void AppFailed(ILogger logger, string connectionId, int streamId, Exception exception);

        [LoggerMessage(EventId = 1133, Level = LogLevel.Debug, Message = "Connection {ConnectionId} stream {StreamId} refused: {Reason}")]
        public static partial void StreamRefused(ILogger logger, string connectionId, int streamId, string reason);

        [LoggerMessage(EventId = 1134, Level = LogLevel.Debug, Message = "Connection {ConnectionId} stream {StreamId} reset: {Reason}")]
        public static partial void StreamReset(ILogger logger, string connectionId, int streamId, string reason);

        [LoggerMessage(EventId = 1135, Level = LogLevel.Debug, Message = "Connection {ConnectionId} stream {StreamId} ended: {Reason}")]
        public static partial void StreamEnded(ILogger logger, string connectionId, int streamId, string reason);
    }
}
