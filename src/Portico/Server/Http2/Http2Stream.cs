using System.Buffers;
using System.Collections;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Portico.Server.Http2;

/// <summary>
/// One request of Portico's HTTP/2 server: the HttpContext's features (as <see cref="Http1RequestContext"/> is for
/// HTTP/1.1), the request body as it arrives in DATA frames, and the response as HEADERS and DATA frames within the
/// peer's flow-control windows. Pooled: a stream's objects serve request after request.
/// </summary>
/// <remarks>
/// Thread model: the connection's read loop creates the stream and feeds its body; the app runs on whatever thread its
/// awaits resume on and writes the response. Everything both sides touch (windows, the body buffer, the state flags)
/// is guarded by the connection's lock, held only to copy bytes and flip flags.
/// </remarks>
internal sealed class Http2Stream : OwnRequest, IFeatureCollection, IHttpRequestFeature, IHttpRequestBodyDetectionFeature,
    IHttpResponseFeature, IHttpResponseBodyFeature, IHttpRequestLifetimeFeature, IHttpConnectionFeature,
    IHttpRequestIdentifierFeature, IHttpResponseTrailersFeature, IHttpExtendedConnectFeature, IHttpBodyControlFeature,
    IHttpMaxRequestBodySizeFeature, IHttpResetFeature, IHttpUpgradeFeature
{
    // A LIFO per core (the most recently used object, warm in the cache, is the next one handed out), 2,048 in all:
    // a linear scan of one shared array cost a probe per object in use at every rent and return.
    private static readonly Threading.PerCorePool<Http2Stream> Pool = new(Threading.PerCorePool<Http2Stream>.PerCoreFor(2048));

    private readonly DefaultHttpContext _httpContext;
    private readonly Http2ResponseBodyWriter _bodyWriter;
    private readonly Http2ResponseBodyStream _bodyStream;
    private readonly Http2RequestBodyStream _requestBody;
    private Http2ServerConnection _connection = null!;
    private int _revision;
    private List<KeyValuePair<Type, object>>? _extraFeatures;
    private CancellationTokenSource? _abortSource;
    private List<(Func<object, Task> Callback, object State)>? _onStarting;
    private List<(Func<object, Task> Callback, object State)>? _onCompleted;
    private string? _traceIdentifier;
    private int _statusCode;
    private string? _reasonPhrase;
    private HeaderDictionary? _trailers;
    private long? _maxRequestBodySize;

    // The request head as "name: value\r\n" lines (RequestHeaders' raw entries point into it).
    private byte[] _head = new byte[1024];
    private int _headLength;

    // The last :path seen and its strings (SetTarget).
    private byte[] _lastTarget = [];
    private string _lastRawTarget = "/";
    private string _lastPath = "/";
    private string _lastQuery = string.Empty;

    // The request body as it arrived, not yet read by the app (guarded by the connection's lock).
    private byte[]? _body;
    private int _bodyStart;
    private int _bodyEnd;
    private TaskCompletionSource? _readWaiter;
    private Exception? _bodyError;

    private Http2Stream()
    {
        _httpContext = new DefaultHttpContext(this);
        _bodyWriter = new Http2ResponseBodyWriter(this);
        _bodyStream = new Http2ResponseBodyStream(this);
        _requestBody = new Http2RequestBodyStream(this);
    }

    public HttpContext HttpContext => _httpContext;

    public int StreamId { get; private set; }

    // ---- state the connection keeps (under its lock) ----

    /// <summary>What the peer lets this stream send (its SETTINGS_INITIAL_WINDOW_SIZE plus its WINDOW_UPDATEs, minus what was sent).</summary>
    internal long SendWindow;

    /// <summary>DATA bytes the app has read that were not yet given back with a WINDOW_UPDATE.</summary>
    internal int UnackedConsumed;

    /// <summary>DATA bytes received (for the Content-Length check and the body size limit).</summary>
    internal long Received;

    /// <summary>What the peer may still send on this stream before a WINDOW_UPDATE from us.</summary>
    internal long ReceiveWindow;

    /// <summary>The request's Content-Length, or -1.</summary>
    internal long DeclaredLength = -1;

    /// <summary>The peer ended its side (END_STREAM received).</summary>
    internal bool RequestEnded;

    /// <summary>Our side is ended (END_STREAM sent).</summary>
    internal bool ResponseEnded;

    /// <summary>Reset by either side: nothing more is sent on it.</summary>
    internal bool IsReset;

    /// <summary>In the connection's table of open streams.</summary>
    internal bool InTable;

    /// <summary>A writer waiting for window (stream or connection), completed by WINDOW_UPDATE, reset or the end.</summary>
    internal TaskCompletionSource? WindowWaiter;

    /// <summary>True once the response HEADERS frame is written.</summary>
    public bool HasStarted { get; private set; }

    /// <summary>Body bytes the app wrote.</summary>
    public long BodyWritten { get; private set; }

    public bool IsHead { get; private set; }

    public static Http2Stream Rent()
    {
        return Pool.Rent() ?? new Http2Stream();
    }

    public void Initialize(Http2ServerConnection connection, int streamId, long sendWindow, long receiveWindow, long? maxRequestBodySize)
    {
        _connection = connection;
        StreamId = streamId;
        _revision++;
        SendWindow = sendWindow;
        ReceiveWindow = receiveWindow;
        UnackedConsumed = 0;
        Received = 0;
        DeclaredLength = -1;
        RequestEnded = ResponseEnded = IsReset = InTable = false;
        WindowWaiter = null;
        HasStarted = false;
        BodyWritten = 0;
        _statusCode = 200;
        _reasonPhrase = null;
        _maxRequestBodySize = maxRequestBodySize;
        _headLength = 0;
        Method = HttpMethods.Get;
        RawTarget = Path = "/";
        QueryString = string.Empty;
        Protocol = "HTTP/2";
        Scheme = "http";
        IsTls = false;
        Plain = false;
        IsExtendedConnect = false;
        ExtendedProtocol = null;
        AllowSynchronousIO = false;
        if (_abortSource is null || _abortSource.IsCancellationRequested)
        {
            _abortSource?.Dispose();
            _abortSource = new CancellationTokenSource();
        }
        RequestHeaderTable.Reset(default);
    }

    /// <summary>Ends the request and returns the stream to the pool (the connection no longer refers to it).</summary>
    public void Return()
    {
        RequestHeaderTable.Release();
        ResponseHeaderTable.Reset();
        _extraFeatures?.Clear();
        _onStarting?.Clear();
        _onCompleted?.Clear();
        _trailers = null;
        _traceIdentifier = null;
        _bodyWriter.Reset();
        ReleaseBody();
        _readWaiter = null;
        _bodyError = null;
        WindowWaiter = null;
        _connection = null!;
        Pool.Return(this);
    }

    // ---- the request head, from the HPACK decoder ----

    /// <summary>Appends one header line to the head buffer and the header table.</summary>
    internal void AddHeader(int known, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        var needed = name.Length + value.Length + 4;
        if (_headLength + needed > _head.Length)
        {
            Array.Resize(ref _head, Math.Max(_head.Length * 2, _headLength + needed));
            // The table's raw entries are offsets: only the memory it reads them from changes.
        }
        var start = _headLength;
        name.CopyTo(_head.AsSpan(start));
        ": "u8.CopyTo(_head.AsSpan(start + name.Length));
        value.CopyTo(_head.AsSpan(start + name.Length + 2));
        "\r\n"u8.CopyTo(_head.AsSpan(start + name.Length + 2 + value.Length));
        _headLength += needed;
        RequestHeaderTable.Reattach(_head);
        RequestHeaderTable.AddRaw(known, start, name.Length, start + name.Length + 2, value.Length);
    }

    internal void SetTarget(ReadOnlySpan<byte> target)
    {
        // A client asks for the same :path again and again (streams are pooled, so this is the last target of
        // whichever connection used the stream): the strings of the last one are kept, as HTTP/1.1 does.
        if (target.SequenceEqual(_lastTarget))
        {
            RawTarget = _lastRawTarget;
            Path = _lastPath;
            QueryString = _lastQuery;
            return;
        }
        var raw = Encoding.ASCII.GetString(target);
        RawTarget = raw;
        var query = raw.IndexOf('?');
        var path = query < 0 ? raw : raw[..query];
        QueryString = query < 0 ? string.Empty : raw[query..];
        if (path.Contains('%'))
        {
            path = PathString.FromUriComponent(path).Value ?? "/";
        }
        if (path.Contains("/.", StringComparison.Ordinal))
        {
            path = RemoveDotSegments(path);
        }
        Path = path;
        if (target.Length <= 256)
        {
            _lastTarget = target.ToArray();
            _lastRawTarget = raw;
            _lastPath = path;
            _lastQuery = QueryString;
        }
    }

    /// <summary>RFC 3986 §5.2.4 for the routed path, as Kestrel does: "/a/../b" is routed as "/b".</summary>
    private static string RemoveDotSegments(string path)
    {
        var segments = new List<string>();
        foreach (var segment in path.Split('/'))
        {
            if (segment == ".")
            {
                continue;
            }
            if (segment == "..")
            {
                if (segments.Count > 1)
                {
                    segments.RemoveAt(segments.Count - 1);
                }
                continue;
            }
            segments.Add(segment);
        }
        var result = string.Join('/', segments);
        if (path.EndsWith("/.", StringComparison.Ordinal) || path.EndsWith("/..", StringComparison.Ordinal))
        {
            result += "/";
        }
        return result.Length == 0 ? "/" : result;
    }

    internal void SetMethod(ReadOnlySpan<byte> method)
    {
        Method = RequestHeadParser.Method(method);
        IsHead = ReferenceEquals(Method, HttpMethods.Head);
    }

    internal void SetExtendedConnect(ReadOnlySpan<byte> protocol)
    {
        IsExtendedConnect = true;
        ExtendedProtocol = Encoding.ASCII.GetString(protocol);
    }

    // ---- the request body (called by the connection under its lock) ----

    /// <summary>Appends DATA payload; wakes a reader. Lock held.</summary>
    internal TaskCompletionSource? AppendBody(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return TakeReader();
        }
        if (_body is null)
        {
            _body = ArrayPool<byte>.Shared.Rent(Math.Max(data.Length, 4096));
        }
        else if (_body.Length - _bodyEnd < data.Length)
        {
            var live = _bodyEnd - _bodyStart;
            if (_body.Length - live >= data.Length && _bodyStart > 0)
            {
                Buffer.BlockCopy(_body, _bodyStart, _body, 0, live);
            }
            else
            {
                var larger = ArrayPool<byte>.Shared.Rent(Math.Max(live + data.Length, _body.Length * 2));
                Buffer.BlockCopy(_body, _bodyStart, larger, 0, live);
                ArrayPool<byte>.Shared.Return(_body);
                _body = larger;
            }
            _bodyStart = 0;
            _bodyEnd = live;
        }
        data.CopyTo(_body.AsSpan(_bodyEnd));
        _bodyEnd += data.Length;
        return TakeReader();
    }

    /// <summary>The body ends (END_STREAM, or with <paramref name="error"/>); wakes a reader. Lock held.</summary>
    internal TaskCompletionSource? EndBody(Exception? error)
    {
        if (error is not null && _bodyError is null && !RequestEnded)
        {
            _bodyError = error;
        }
        return TakeReader();
    }

    private TaskCompletionSource? TakeReader()
    {
        var waiter = _readWaiter;
        _readWaiter = null;
        return waiter;
    }

    private void ReleaseBody()
    {
        if (_body is { } body)
        {
            _body = null;
            ArrayPool<byte>.Shared.Return(body);
        }
        _bodyStart = _bodyEnd = 0;
    }

    /// <summary>Reads body bytes; a zero-length read waits until there are some (or the end), as Kestrel's.</summary>
    internal async ValueTask<int> ReadBodyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_connection.Gate)
            {
                var available = _bodyEnd - _bodyStart;
                if (available > 0)
                {
                    if (destination.IsEmpty)
                    {
                        return 0;
                    }
                    var n = Math.Min(available, destination.Length);
                    _body.AsSpan(_bodyStart, n).CopyTo(destination.Span);
                    _bodyStart += n;
                    if (_bodyStart == _bodyEnd)
                    {
                        ReleaseBody();
                    }
                    _connection.OnBodyConsumed(this, n);
                    return n;
                }
                if (_bodyError is { } error)
                {
                    throw error is BadHttpRequestException bad
                        ? new BadHttpRequestException(bad.Message, bad.StatusCode, bad)
                        : new IOException(error.Message, error);
                }
                if (RequestEnded)
                {
                    return 0;
                }
                if (IsReset)
                {
                    throw new IOException("The request was reset.");
                }
                _readWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _readWaiter.Task;
            }
            await wait.WaitAsync(cancellationToken);
        }
    }

    // ---- IFeatureCollection ----

    public bool IsReadOnly => false;

    public int Revision => _revision;

    public object? this[Type key]
    {
        get
        {
            if (key == typeof(IHttpRequestFeature) || key == typeof(IHttpResponseFeature) || key == typeof(IHttpResponseBodyFeature)
                || key == typeof(IHttpRequestLifetimeFeature) || key == typeof(IHttpConnectionFeature)
                || key == typeof(IHttpRequestBodyDetectionFeature) || key == typeof(IHttpRequestIdentifierFeature)
                || key == typeof(IHttpResponseTrailersFeature) || key == typeof(IHttpExtendedConnectFeature)
                || key == typeof(IHttpBodyControlFeature) || key == typeof(IHttpMaxRequestBodySizeFeature)
                || key == typeof(IHttpResetFeature) || key == typeof(IHttpUpgradeFeature))
            {
                return this;
            }
            if (_extraFeatures is { } extras)
            {
                foreach (var pair in extras)
                {
                    if (pair.Key == key)
                    {
                        return pair.Value;
                    }
                }
            }
            return _connection?.ConnectionFeatures[key];
        }
        set
        {
            _revision++;
            _extraFeatures ??= [];
            for (var i = 0; i < _extraFeatures.Count; i++)
            {
                if (_extraFeatures[i].Key == key)
                {
                    if (value is null)
                    {
                        _extraFeatures.RemoveAt(i);
                    }
                    else
                    {
                        _extraFeatures[i] = new(key, value);
                    }
                    return;
                }
            }
            if (value is not null)
            {
                _extraFeatures.Add(new(key, value));
            }
        }
    }

    public TFeature? Get<TFeature>() => (TFeature?)this[typeof(TFeature)];

    public void Set<TFeature>(TFeature? instance) => this[typeof(TFeature)] = instance;

    public IEnumerator<KeyValuePair<Type, object>> GetEnumerator()
    {
        yield return new(typeof(IHttpRequestFeature), this);
        yield return new(typeof(IHttpResponseFeature), this);
        yield return new(typeof(IHttpResponseBodyFeature), this);
        yield return new(typeof(IHttpRequestLifetimeFeature), this);
        yield return new(typeof(IHttpConnectionFeature), this);
        yield return new(typeof(IHttpRequestBodyDetectionFeature), this);
        yield return new(typeof(IHttpRequestIdentifierFeature), this);
        yield return new(typeof(IHttpResponseTrailersFeature), this);
        yield return new(typeof(IHttpExtendedConnectFeature), this);
        yield return new(typeof(IHttpBodyControlFeature), this);
        yield return new(typeof(IHttpMaxRequestBodySizeFeature), this);
        yield return new(typeof(IHttpResetFeature), this);
        yield return new(typeof(IHttpUpgradeFeature), this);
        if (_extraFeatures is { } extras)
        {
            foreach (var pair in extras)
            {
                yield return pair;
            }
        }
        if (_connection is { } connection)
        {
            foreach (var pair in connection.ConnectionFeatures)
            {
                yield return pair;
            }
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    // ---- IHttpRequestFeature ----

    public string Scheme { get; set; } = "http";

    public string PathBase { get; set; } = string.Empty;

    public string Path { get; set; } = "/";

    public string QueryString { get; set; } = string.Empty;

    IHeaderDictionary IHttpRequestFeature.Headers
    {
        get => RequestHeaderTable;
        set => throw new NotSupportedException("the request headers of Portico's HTTP/2 server cannot be replaced; change them in place");
    }

    private Stream? _replacedBody;

    Stream IHttpRequestFeature.Body
    {
        get => _replacedBody ?? (CanHaveBody ? _requestBody : Stream.Null);
        set => _replacedBody = value;
    }

    // ---- IHttpRequestBodyDetectionFeature ----

    /// <summary>False when HEADERS carried END_STREAM (no DATA can follow).</summary>
    public bool CanHaveBody
    {
        get => _canHaveBody;
        internal set
        {
            _canHaveBody = value;
            Plain = !value && !IsExtendedConnect;
        }
    }

    private bool _canHaveBody;

    // ---- IHttpResponseFeature ----

    public int StatusCode
    {
        get => _statusCode;
        set
        {
            if (HasStarted)
            {
                throw new InvalidOperationException("StatusCode cannot be set because the response has already started.");
            }
            if (value < 100 || value > 999)
            {
                throw new ArgumentOutOfRangeException(nameof(value), $"invalid status code {value}");
            }
            _statusCode = value;
        }
    }

    public string? ReasonPhrase
    {
        get => _reasonPhrase;
        set
        {
            if (HasStarted)
            {
                throw new InvalidOperationException("ReasonPhrase cannot be set because the response has already started.");
            }
            // HTTP/2 has no reason phrase (RFC 9113 §8.3.2); kept for the app's sake only.
            _reasonPhrase = value;
        }
    }

    IHeaderDictionary IHttpResponseFeature.Headers
    {
        get => ResponseHeaderTable;
        set => throw new NotSupportedException("the response headers of Portico's HTTP/2 server cannot be replaced; change them in place");
    }

    [Obsolete("Use IHttpResponseBodyFeature.Stream")]
    Stream IHttpResponseFeature.Body
    {
        get => _bodyStream;
        set => throw new NotSupportedException("the response body stream of Portico's HTTP/2 server cannot be replaced");
    }

    bool IHttpResponseFeature.HasStarted => HasStarted;

    public void OnStarting(Func<object, Task> callback, object state)
    {
        if (HasStarted)
        {
            throw new InvalidOperationException("OnStarting cannot be set because the response has already started.");
        }
        (_onStarting ??= []).Add((callback, state));
    }

    public void OnCompleted(Func<object, Task> callback, object state) => (_onCompleted ??= []).Add((callback, state));

    // ---- IHttpResponseTrailersFeature ----

    public IHeaderDictionary Trailers
    {
        get => _trailers ??= new HeaderDictionary();
        set => _trailers = value as HeaderDictionary ?? throw new NotSupportedException("trailers must be a HeaderDictionary");
    }

    internal bool HasTrailers => _trailers is { Count: > 0 };

    // ---- IHttpExtendedConnectFeature ----

    public bool IsExtendedConnect { get; private set; }

    public string? ExtendedProtocol { get; private set; }

    string? IHttpExtendedConnectFeature.Protocol => ExtendedProtocol;

    public async ValueTask<Stream> AcceptAsync()
    {
        if (!IsExtendedConnect)
        {
            throw new InvalidOperationException("This is not an extended CONNECT request.");
        }
        if (!HasStarted)
        {
            _statusCode = 200;
            await StartResponseAsync(appCompleted: false);
            await FlushAsync(default);
        }
        return new Http2DuplexStream(this);
    }

    // ---- IHttpResponseBodyFeature ----

    public Stream Stream => _bodyStream;

    public PipeWriter Writer => _bodyWriter;

    public void DisableBuffering()
    {
    }

    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        var starting = StartResponseAsync(appCompleted: false);
        return starting.IsCompletedSuccessfully ? Task.CompletedTask : starting.AsTask();
    }

    public async Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.Asynchronous | FileOptions.SequentialScan);
        file.Seek(offset, SeekOrigin.Begin);
        var remaining = count ?? file.Length - offset;
        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            while (remaining > 0)
            {
                var read = await file.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, remaining)), cancellationToken);
                if (read == 0)
                {
                    break;
                }
                await WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                remaining -= read;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public Task CompleteAsync() => FlushAsync(default).AsTask();

    // ---- IHttpRequestLifetimeFeature ----

    public override CancellationToken RequestAborted
    {
        get => _abortSource!.Token;
        set => throw new NotSupportedException("RequestAborted cannot be replaced on Portico's HTTP/2 server");
    }

    /// <summary>The app aborts the request: the stream is reset (CANCEL); the connection goes on.</summary>
    public void Abort() => _connection?.ResetStream(this, Http2ErrorCode.Cancel, "the application aborted the request");

    // ---- IHttpResetFeature ----

    public void Reset(int errorCode) => _connection?.ResetStream(this, (Http2ErrorCode)(uint)errorCode, "the application reset the stream");

    /// <summary>Fires RequestAborted (the peer reset the stream, or the connection ended).</summary>
    internal void CancelRequest()
    {
        try
        {
            _abortSource?.Cancel();
        }
        catch (AggregateException)
        {
            // A callback of the app's failed; the request is over either way.
        }
    }

    // ---- IHttpConnectionFeature ----

    public string ConnectionId
    {
        get => _connection.ConnectionId;
        set => throw new NotSupportedException();
    }

    public IPAddress? RemoteIpAddress
    {
        get => _connection?.Remote?.Address;
        set => throw new NotSupportedException();
    }

    public override IPAddress? ClientIp => _connection.Remote?.Address;

    public override string ClientIpText => _connection.RemoteIpText;

    public IPAddress? LocalIpAddress
    {
        get => _connection?.Local?.Address;
        set => throw new NotSupportedException();
    }

    public int RemotePort
    {
        get => _connection?.Remote?.Port ?? 0;
        set => throw new NotSupportedException();
    }

    public int LocalPort
    {
        get => _connection?.Local?.Port ?? 0;
        set => throw new NotSupportedException();
    }

    // ---- IHttpRequestIdentifierFeature ----

    public string TraceIdentifier
    {
        get => _traceIdentifier ??= _connection.ConnectionId + ":" + StreamId.ToString("X8", CultureInfo.InvariantCulture);
        set => _traceIdentifier = value;
    }

    // ---- IHttpUpgradeFeature: HTTP/2 has no Upgrade (RFC 9113 §8.6) ----

    public bool IsUpgradableRequest => false;

    public Task<Stream> UpgradeAsync() => throw new InvalidOperationException("HTTP/2 requests cannot be upgraded.");

    // ---- IHttpBodyControlFeature, IHttpMaxRequestBodySizeFeature ----

    public bool AllowSynchronousIO { get; set; }

    bool IHttpMaxRequestBodySizeFeature.IsReadOnly => Received > 0;

    public long? MaxRequestBodySize
    {
        get => _maxRequestBodySize;
        set
        {
            if (Received > 0)
            {
                throw new InvalidOperationException("The maximum request body size cannot be changed after the body was read.");
            }
            _maxRequestBodySize = value;
        }
    }

    // ---- the response ----

    public override ValueTask StartResponseAsync(bool appCompleted)
    {
        if (HasStarted)
        {
            return ValueTask.CompletedTask;
        }
        if (_onStarting is { Count: > 0 })
        {
            return RunOnStartingThenWriteHeadAsync(appCompleted);
        }
        WriteHead(appCompleted);
        return ValueTask.CompletedTask;
    }

    private async ValueTask RunOnStartingThenWriteHeadAsync(bool appCompleted)
    {
        for (var i = _onStarting!.Count - 1; i >= 0; i--)
        {
            var (callback, state) = _onStarting[i];
            await callback(state);
        }
        _onStarting.Clear();
        if (!HasStarted)
        {
            WriteHead(appCompleted);
        }
    }

    private void WriteHead(bool appCompleted)
    {
        var status = _statusCode;
        var statusHasBody = status >= 200 && status != 204 && status != 304;
        if (appCompleted && statusHasBody && !IsHead && ResponseHeaderTable.ContentLength is null && BodyWritten == 0 && !HasTrailers)
        {
            ResponseHeaderTable.ContentLength = 0;
        }
        // A response that is complete with its head (no body to come, no trailers) ends the stream with HEADERS.
        var endStream = appCompleted && !HasTrailers && _bodyWriter.Pending == 0;
        HasStarted = true;
        ResponseHeaderTable.MakeReadOnly();
        _connection.WriteResponseHeaders(this, status, ResponseHeaderTable, endStream);
    }

    public bool HasOnCompleted => _onCompleted is { Count: > 0 };

    public async ValueTask RunOnCompletedAsync()
    {
        if (_onCompleted is not { Count: > 0 } callbacks)
        {
            return;
        }
        for (var i = callbacks.Count - 1; i >= 0; i--)
        {
            await callbacks[i].Callback(callbacks[i].State);
        }
    }

    /// <summary>Writes body bytes as DATA frames, waiting for window; the last frame of a Content-Length body ends the stream.</summary>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        HasStarted && _bodyWriter.Pending == 0 ? WriteDataAsync(data, cancellationToken) : StartThenWriteAsync(data, cancellationToken);

    private async ValueTask StartThenWriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (!HasStarted)
        {
            await StartResponseAsync(appCompleted: false);
        }
        if (_bodyWriter.Pending > 0)
        {
            await _bodyWriter.FlushPendingAsync(cancellationToken);
        }
        await WriteDataAsync(data, cancellationToken);
    }

    internal ValueTask WriteDataAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (data.IsEmpty)
        {
            return ValueTask.CompletedTask;
        }
        if (IsHead || _statusCode is 204 or 304 || _statusCode < 200)
        {
            if (!IsHead)
            {
                throw new InvalidOperationException($"Writing to the response body is invalid for responses with status code {_statusCode}.");
            }
            return ValueTask.CompletedTask;
        }
        var length = ResponseHeaderTable.ContentLength;
        if (length is { } declared && BodyWritten + data.Length > declared)
        {
            throw new InvalidOperationException($"Response Content-Length mismatch: too many bytes written ({BodyWritten + data.Length} of {declared}).");
        }
        BodyWritten += data.Length;
        var endStream = length is { } total && BodyWritten == total && !HasTrailers;
        return _connection.WriteDataAsync(this, data, endStream, cancellationToken);
    }

    public ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken)
    {
        if (!HasStarted || _bodyWriter.Pending > 0)
        {
            return StartThenFlushAsync(cancellationToken);
        }
        return new ValueTask<FlushResult>(default(FlushResult));
    }

    private async ValueTask<FlushResult> StartThenFlushAsync(CancellationToken cancellationToken)
    {
        await StartResponseAsync(appCompleted: false);
        await _bodyWriter.FlushPendingAsync(cancellationToken);
        return default;
    }

    /// <summary>After the app: the head if not yet out, buffered body bytes, trailers or END_STREAM. False when the body fell short of its Content-Length.</summary>
    public async ValueTask<bool> CompleteResponseAsync()
    {
        if (!HasStarted)
        {
            await StartResponseAsync(appCompleted: true);
        }
        if (_bodyWriter.Pending > 0)
        {
            await _bodyWriter.FlushPendingAsync(default);
        }
        if (ResponseHeaderTable.ContentLength is { } length && BodyWritten < length && !IsHead && _statusCode is >= 200 and not 204 and not 304)
        {
            return false;
        }
        _connection.EndResponse(this, HasTrailers ? _trailers : null);
        return true;
    }

    public void ResetForError()
    {
        ResponseHeaderTable.Reset();
        _statusCode = 500;
        _reasonPhrase = null;
        _trailers = null;
        ResponseHeaderTable.ContentLength = 0;
    }
}

/// <summary>HttpResponse.BodyWriter on Portico's HTTP/2 server: a scratch buffer that goes out as DATA frames on flush.</summary>
internal sealed class Http2ResponseBodyWriter(Http2Stream stream) : PipeWriter
{
    private byte[]? _scratch;
    private int _pending;

    public int Pending => _pending;

    public override void Advance(int bytes)
    {
        if ((uint)bytes > (uint)((_scratch?.Length ?? 0) - _pending))
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "Advanced past the end of the buffer.");
        }
        _pending += bytes;
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        var needed = Math.Max(sizeHint, 1);
        if (_scratch is null)
        {
            _scratch = ArrayPool<byte>.Shared.Rent(Math.Max(needed, 4096));
        }
        else if (_scratch.Length - _pending < needed)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_pending + needed, _scratch.Length * 2));
            Buffer.BlockCopy(_scratch, 0, larger, 0, _pending);
            ArrayPool<byte>.Shared.Return(_scratch);
            _scratch = larger;
        }
        return _scratch.AsMemory(_pending);
    }

    public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    public override async ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (!stream.HasStarted)
        {
            await stream.StartResponseAsync(appCompleted: false);
        }
        await FlushPendingAsync(cancellationToken);
        return default;
    }

    internal async ValueTask FlushPendingAsync(CancellationToken cancellationToken)
    {
        if (_pending == 0)
        {
            return;
        }
        var count = _pending;
        _pending = 0;
        await stream.WriteDataAsync(_scratch.AsMemory(0, count), cancellationToken);
    }

    public override void CancelPendingFlush()
    {
    }

    public override void Complete(Exception? exception = null)
    {
        if (exception is not null)
        {
            stream.Abort();
        }
    }

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => _pending;

    internal void Reset()
    {
        _pending = 0;
        if (_scratch is not null)
        {
            ArrayPool<byte>.Shared.Return(_scratch);
            _scratch = null;
        }
    }
}

/// <summary>HttpResponse.Body on Portico's HTTP/2 server: each write goes out as DATA frames.</summary>
internal sealed class Http2ResponseBodyStream(Http2Stream stream) : Stream
{
    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        stream.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        stream.WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async Task FlushAsync(CancellationToken cancellationToken) => await stream.FlushAsync(cancellationToken);

    public override void Write(byte[] buffer, int offset, int count)
    {
        if (!stream.AllowSynchronousIO)
        {
            throw new InvalidOperationException("Synchronous operations are disallowed. Call WriteAsync or set AllowSynchronousIO to true instead.");
        }
        stream.WriteAsync(buffer.AsMemory(offset, count), default).AsTask().GetAwaiter().GetResult();
    }

    public override void Flush()
    {
        if (!stream.AllowSynchronousIO)
        {
            throw new InvalidOperationException("Synchronous operations are disallowed. Call FlushAsync or set AllowSynchronousIO to true instead.");
        }
        stream.FlushAsync(default).AsTask().GetAwaiter().GetResult();
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>HttpRequest.Body on Portico's HTTP/2 server: the DATA frames' payload, in order.</summary>
internal sealed class Http2RequestBodyStream(Http2Stream stream) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        stream.ReadBodyAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        stream.ReadBodyAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count)
    {
        if (!stream.AllowSynchronousIO)
        {
            throw new InvalidOperationException("Synchronous operations are disallowed. Call ReadAsync or set AllowSynchronousIO to true instead.");
        }
        return stream.ReadBodyAsync(buffer.AsMemory(offset, count), default).AsTask().GetAwaiter().GetResult();
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>The two-way stream of an accepted extended CONNECT (RFC 8441): reads are the request's DATA, writes the response's.</summary>
internal sealed class Http2DuplexStream(Http2Stream stream) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        stream.ReadBodyAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        stream.ReadBodyAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        stream.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        stream.WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("use ReadAsync");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("use WriteAsync");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}
