using System.Buffers;
using System.Collections;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Portico.Proxy.Http1;

namespace Portico.Server;

/// <summary>How a response body is delimited on the wire.</summary>
internal enum ResponseFraming : byte
{
    /// <summary>No body may follow: HEAD, 1xx, 204, 304.</summary>
    None,
    ContentLength,
    Chunked,
    /// <summary>HTTP/1.0 without a length: the body ends when the connection closes.</summary>
    UntilClose,
}

/// <summary>
/// The state of one request on Portico's HTTP/1.1 server and the ASP.NET features over it (as Kestrel's
/// <c>HttpProtocol</c> is): request line, headers, response status, headers and body, and the
/// <see cref="DefaultHttpContext"/> the app sees. Pooled across connections: a connection holds one only while it is
/// serving a request, so an idle connection costs no header tables.
/// </summary>
internal sealed partial class Http1RequestContext : OwnRequest, IFeatureCollection, IHttpRequestFeature, IHttpRequestBodyDetectionFeature,
    IHttpResponseFeature, IHttpResponseBodyFeature, IHttpRequestLifetimeFeature, IHttpConnectionFeature,
    IHttpRequestIdentifierFeature, IHttpUpgradeFeature, IHttpBodyControlFeature, IHttpMaxRequestBodySizeFeature
{
    // A LIFO per core (the most recently used object, warm in the cache, is the next one handed out), 2,048 in all:
    // a linear scan of one shared array cost a probe per object in use at every rent and return.
    private static readonly Threading.PerCorePool<Http1RequestContext> Pool = new(Threading.PerCorePool<Http1RequestContext>.PerCoreFor(2048));
    private static readonly byte[]?[] StatusLines = new byte[]?[600];

    private readonly DefaultHttpContext _httpContext;
    private readonly ResponseBodyWriter _bodyWriter;
    private readonly ResponseBodyStream _bodyStream;
    private Http1ServerConnection? _connection;
    private PipeWriter _output = null!;
    private int _revision;
    private List<KeyValuePair<Type, object>>? _extraFeatures;
    private CancellationTokenSource? _abortSource;
    private CancellationTokenRegistration _closedRegistration;
    private List<(Func<object, Task> Callback, object State)>? _onStarting;
    private List<(Func<object, Task> Callback, object State)>? _onCompleted;
    private string? _traceIdentifier;
    private int _statusCode;
    private string? _reasonPhrase;

    // The last request target of this context and its strings: a client that asks for the same path again (health
    // checks, polling, benchmarks) gets them without decoding.
    private byte[] _lastTarget = [];
    private string _lastRawTarget = "/";
    private string _lastPath = "/";
    private string _lastQuery = string.Empty;

    private Http1RequestContext()
    {
        _httpContext = new DefaultHttpContext(this);
        _bodyWriter = new ResponseBodyWriter(this);
        _bodyStream = new ResponseBodyStream(this);
    }

    public HttpContext HttpContext => _httpContext;

    /// <summary>True when the request's connection may carry another request after this response.</summary>
    public bool KeepAlive { get; set; }

    public int Minor { get; private set; }

    /// <summary>True once the response head is in the output pipe.</summary>
    public bool HasStarted { get; private set; }

    public ResponseFraming Framing { get; private set; }

    /// <summary>Body bytes the app wrote.</summary>
    public long BodyWritten { get; private set; }

    /// <summary>The downstream connection this request came in on.</summary>
    public Http1ServerConnection Connection => _connection!;

    public static Http1RequestContext Rent()
    {
        return Pool.Rent() ?? new Http1RequestContext();
    }

    /// <summary>Starts a request of <paramref name="connection"/> whose head was parsed into <see cref="OwnRequest.RequestHeaderTable"/>.</summary>
    public void Start(Http1ServerConnection connection, ReadOnlySpan<byte> head, in RequestLine line)
    {
        _connection = connection;
        _output = connection.Output;
        _revision++;
        Minor = line.Minor;
        KeepAlive = line.KeepAlive;
        ConnectionNamesHeaders = line.ConnectionNamesHeaders;
        IsTls = connection.IsTls;
        Plain = true;
        Method = RequestHeadParser.Method(head[..line.MethodLength]);
        Protocol = line.Minor == 1 ? HttpProtocol.Http11 : HttpProtocol.Http10;
        SetTarget(head.Slice(line.TargetStart, line.TargetLength), line.PathLength);
        _statusCode = 200;
        _reasonPhrase = null;
        HasStarted = false;
        Framing = ResponseFraming.None;
        BodyWritten = 0;
        if (_abortSource is null || _abortSource.IsCancellationRequested)
        {
            _abortSource?.Dispose();
            _abortSource = new CancellationTokenSource();
        }
        _closedRegistration = connection.Closed.UnsafeRegister(static s => ((Http1RequestContext)s!).CancelRequest(), this);
    }

    /// <summary>Ends the request and returns this context to the pool.</summary>
    public void Return()
    {
        _closedRegistration.Dispose();
        _closedRegistration = default;
        RequestHeaderTable.Release();
        ResponseHeaderTable.Reset();
        _extraFeatures?.Clear();
        _onStarting?.Clear();
        _onCompleted?.Clear();
        _traceIdentifier = null;
        _connection = null;
        _output = null!;
        _bodyWriter.Reset();
        Pool.Return(this);
    }

    private void CancelRequest()
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

    private void SetTarget(ReadOnlySpan<byte> target, int pathLength)
    {
        if (target.SequenceEqual(_lastTarget))
        {
            RawTarget = _lastRawTarget;
            Path = _lastPath;
            QueryString = _lastQuery;
            return;
        }
        var raw = Encoding.ASCII.GetString(target);
        RawTarget = raw;
        // Plain path characters only (RequestHeadParser): the decoded path is the raw one.
        Path = pathLength == raw.Length ? raw : raw[..pathLength];
        QueryString = pathLength == raw.Length ? string.Empty : raw[pathLength..];
        if (target.Length <= 256)
        {
            _lastTarget = target.ToArray();
            _lastRawTarget = RawTarget;
            _lastPath = Path;
            _lastQuery = QueryString;
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
                || key == typeof(IHttpUpgradeFeature) || key == typeof(IHttpBodyControlFeature)
                || key == typeof(IHttpMaxRequestBodySizeFeature))
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
            // Connection-level features (TLS, socket, ...) come from Kestrel's connection.
            return _connection?.Features[key];
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
        yield return new(typeof(IHttpUpgradeFeature), this);
        yield return new(typeof(IHttpBodyControlFeature), this);
        yield return new(typeof(IHttpMaxRequestBodySizeFeature), this);
        if (_extraFeatures is { } extras)
        {
            foreach (var pair in extras)
            {
                yield return pair;
            }
        }
        if (_connection is { } connection)
        {
            foreach (var pair in connection.Features)
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
        set => throw new NotSupportedException("the request headers of Portico's HTTP/1.1 server cannot be replaced; change them in place");
    }

    Stream IHttpRequestFeature.Body
    {
        get => Stream.Null;
        set => throw new NotSupportedException("requests served by Portico's HTTP/1.1 server have no body");
    }

    // ---- IHttpRequestBodyDetectionFeature ----

    /// <summary>Always false: a request with a body is served by Kestrel (see <see cref="RequestHeadParser"/>).</summary>
    public bool CanHaveBody => false;

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
            _reasonPhrase = value;
        }
    }

    IHeaderDictionary IHttpResponseFeature.Headers
    {
        get => ResponseHeaderTable;
        set => throw new NotSupportedException("the response headers of Portico's HTTP/1.1 server cannot be replaced; change them in place");
    }

    [Obsolete("Use IHttpResponseBodyFeature.Stream")]
    Stream IHttpResponseFeature.Body
    {
        get => _bodyStream;
        set => throw new NotSupportedException("the response body stream of Portico's HTTP/1.1 server cannot be replaced");
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
        set => throw new NotSupportedException("RequestAborted cannot be replaced on Portico's HTTP/1.1 server");
    }

    public void Abort()
    {
        KeepAlive = false;
        _connection?.Abort("the application aborted the request");
        CancelRequest();
    }

    // ---- IHttpConnectionFeature ----

    public string ConnectionId
    {
        get => _connection!.ConnectionId;
        set => throw new NotSupportedException();
    }

    public IPAddress? RemoteIpAddress
    {
        get => _connection?.RemoteIpAddress;
        set => throw new NotSupportedException();
    }

    public override IPAddress? ClientIp => _connection!.RemoteIpAddress;

    public override string ClientIpText => _connection!.RemoteIpText;

    public IPAddress? LocalIpAddress
    {
        get => _connection?.LocalIpAddress;
        set => throw new NotSupportedException();
    }

    public int RemotePort
    {
        get => _connection?.RemotePort ?? 0;
        set => throw new NotSupportedException();
    }

    public int LocalPort
    {
        get => _connection?.LocalPort ?? 0;
        set => throw new NotSupportedException();
    }

    // ---- IHttpRequestIdentifierFeature ----

    public string TraceIdentifier
    {
        get => _traceIdentifier ??= _connection!.ConnectionId + ":" + _connection.RequestCount.ToString("X8", CultureInfo.InvariantCulture);
        set => _traceIdentifier = value;
    }

    // ---- IHttpUpgradeFeature ----

    /// <summary>Always false: an upgrade request is served by Kestrel (see <see cref="RequestHeadParser"/>).</summary>
    public bool IsUpgradableRequest => false;

    public Task<Stream> UpgradeAsync() => throw new InvalidOperationException("This request cannot be upgraded (no Upgrade header).");

    // ---- IHttpBodyControlFeature, IHttpMaxRequestBodySizeFeature ----

    public bool AllowSynchronousIO { get; set; }

    bool IHttpMaxRequestBodySizeFeature.IsReadOnly => true;

    public long? MaxRequestBodySize
    {
        get => 0;
        set => throw new InvalidOperationException("The request has no body (Portico's HTTP/1.1 server serves bodiless requests only).");
    }

    // ---- the response on the wire ----

    /// <summary>
    /// Runs the OnStarting callbacks and writes the status line and headers into the output pipe (not flushed).
    /// <paramref name="appCompleted"/>: the app is done, so a response without a length has an empty body.
    /// </summary>
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
        // Last registered runs first, as in Kestrel.
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

    public bool HasOnCompleted => _onCompleted is { Count: > 0 };

    /// <summary>Runs the OnCompleted callbacks (errors are logged by the caller).</summary>
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

    /// <summary>Starts the response synchronously (for GetMemory/GetSpan, which cannot await): waits for async OnStarting callbacks.</summary>
    private void EnsureStarted()
    {
        if (HasStarted)
        {
            return;
        }
        var starting = StartResponseAsync(appCompleted: false);
        if (!starting.IsCompletedSuccessfully)
        {
            starting.AsTask().GetAwaiter().GetResult();
        }
    }

    private void WriteHead(bool appCompleted)
    {
        var headers = ResponseHeaderTable;
        var status = _statusCode;
        var isHead = ReferenceEquals(Method, HttpMethods.Head) || HttpMethods.IsHead(Method);
        // RFC 9110 §6.4.1: 1xx, 204 and 304 answers have no body; a HEAD answer describes one it does not send.
        var statusHasBody = status >= 200 && status != 204 && status != 304;
        var contentLength = headers.ContentLength;
        if (!statusHasBody && status != 304)
        {
            contentLength = null;
        }
        if (_connection!.CloseRequested || AppAskedToClose(headers))
        {
            KeepAlive = false;
        }

        if (!statusHasBody || isHead)
        {
            Framing = ResponseFraming.None;
            if (contentLength is null && statusHasBody && appCompleted)
            {
                contentLength = 0;
            }
        }
        else if (contentLength is not null)
        {
            Framing = ResponseFraming.ContentLength;
        }
        else if (appCompleted)
        {
            Framing = ResponseFraming.ContentLength;
            contentLength = 0;
        }
        else if (Minor == 1)
        {
            Framing = ResponseFraming.Chunked;
        }
        else
        {
            Framing = ResponseFraming.UntilClose;
            KeepAlive = false;
        }
        _contentLength = contentLength ?? -1;

        var writer = new HeadWriter(_output);
        writer.Write(StatusLine(status, _reasonPhrase));
        var hasDate = false;
        for (var i = 0; i < headers.EntryCount; i++)
        {
            ref var entry = ref headers.EntryAt(i);
            if (entry.Removed)
            {
                continue;
            }
            var known = entry.Known;
            if (known == HeaderStrings.Connection || known == HeaderStrings.KeepAlive || known == HeaderStrings.TransferEncoding)
            {
                // The framing and the connection's fate are this server's to state.
                continue;
            }
            hasDate |= known == HeaderStrings.Date;
            if (entry.Raw)
            {
                writer.Write(headers.Source.Slice(entry.LineStart, entry.LineLength));
                writer.Write("\r\n"u8);
                continue;
            }
            var name = entry.Name!;
            var value = entry.Value;
            for (var v = 0; v < value.Count; v++)
            {
                writer.WriteLatin1(name);
                writer.Write(": "u8);
                writer.WriteLatin1(value[v] ?? string.Empty);
                writer.Write("\r\n"u8);
            }
        }
        if (!hasDate)
        {
            writer.Write(DateHeader.Current);
        }
        if (contentLength is { } length)
        {
            writer.Write("Content-Length: "u8);
            writer.WriteNumber(length);
            writer.Write("\r\n"u8);
        }
        else if (Framing == ResponseFraming.Chunked)
        {
            writer.Write("Transfer-Encoding: chunked\r\n"u8);
        }
        if (!KeepAlive)
        {
            writer.Write("Connection: close\r\n"u8);
        }
        else if (Minor == 0)
        {
            writer.Write("Connection: keep-alive\r\n"u8);
        }
        writer.Write("\r\n"u8);
        writer.Commit();
        HasStarted = true;
        headers.MakeReadOnly();
    }

    /// <summary>A phase set "Connection: close" (e.g. after refusing an ambiguous request): the connection ends after this answer.</summary>
    private static bool AppAskedToClose(ResponseHeaders headers)
    {
        for (var i = 0; i < headers.EntryCount; i++)
        {
            ref var entry = ref headers.EntryAt(i);
            if (!entry.Removed && entry.Known == HeaderStrings.Connection)
            {
                var value = headers.ValueOf(ref entry);
                foreach (var item in value)
                {
                    if (item is not null && item.Contains("close", StringComparison.OrdinalIgnoreCase))
                    {
                        return true;
                    }
                }
            }
        }
        return false;
    }

    private static byte[] StatusLine(int status, string? reason)
    {
        if (reason is null && status < StatusLines.Length && StatusLines[status] is { } cached)
        {
            return cached;
        }
        var phrase = reason ?? ReasonPhrases.GetReasonPhrase(status);
        var line = Encoding.Latin1.GetBytes($"HTTP/1.1 {status.ToString(CultureInfo.InvariantCulture)} {phrase}\r\n");
        if (reason is null && status < StatusLines.Length)
        {
            StatusLines[status] = line;
        }
        return line;
    }

    /// <summary>The length the head announced, or -1.</summary>
    private long _contentLength;

    /// <summary>Writes body bytes with the response's framing; starts the response first when needed (not flushed).</summary>
    public void WriteBody(ReadOnlySpan<byte> data)
    {
        EnsureStarted();
        if (data.IsEmpty)
        {
            return;
        }
        switch (Framing)
        {
            case ResponseFraming.ContentLength:
                CheckLength(data.Length);
                _output.Write(data);
                break;
            case ResponseFraming.Chunked:
                WriteChunk(data);
                break;
            case ResponseFraming.UntilClose:
                _output.Write(data);
                break;
            default:
                ThrowIfBodyForbidden();
                break;
        }
        BodyWritten += data.Length;
    }

    public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (!HasStarted)
        {
            await StartResponseAsync(appCompleted: false);
        }
        WriteBody(data.Span);
        await FlushOutputAsync(cancellationToken);
    }

    public ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken)
    {
        if (!HasStarted)
        {
            return StartThenFlushAsync(cancellationToken);
        }
        return FlushOutputAsync(cancellationToken);
    }

    private async ValueTask<FlushResult> StartThenFlushAsync(CancellationToken cancellationToken)
    {
        await StartResponseAsync(appCompleted: false);
        return await FlushOutputAsync(cancellationToken);
    }

    /// <summary>Flushes the output pipe; a client that stops reading is bounded by the connection's write deadline.</summary>
    public ValueTask<FlushResult> FlushOutputAsync(CancellationToken cancellationToken) => _connection!.FlushAsync(cancellationToken);

    /// <summary>Space in the output pipe for a body write of the response's framing (see <see cref="AdvanceBody"/>).</summary>
    public Memory<byte> GetBodyMemory(int sizeHint)
    {
        EnsureStarted();
        return Framing is ResponseFraming.ContentLength or ResponseFraming.UntilClose
            ? _output.GetMemory(sizeHint)
            : _bodyWriter.ScratchMemory(sizeHint);
    }

    /// <summary>Commits <paramref name="count"/> bytes written into <see cref="GetBodyMemory"/>.</summary>
    public void AdvanceBody(int count)
    {
        if (count == 0)
        {
            return;
        }
        switch (Framing)
        {
            case ResponseFraming.ContentLength:
                CheckLength(count);
                _output.Advance(count);
                break;
            case ResponseFraming.UntilClose:
                _output.Advance(count);
                break;
            case ResponseFraming.Chunked:
                WriteChunk(_bodyWriter.ScratchSpan(count));
                break;
            default:
                ThrowIfBodyForbidden();
                break;
        }
        BodyWritten += count;
    }

    /// <summary>
    /// Ends the response: starts it when the app wrote nothing, writes the last chunk, and checks the length. Returns
    /// false when the connection must be closed without another request (a short body leaves the client waiting for
    /// bytes that will never come).
    /// </summary>
    public async ValueTask<bool> CompleteResponseAsync()
    {
        if (!HasStarted)
        {
            await StartResponseAsync(appCompleted: true);
        }
        if (Framing == ResponseFraming.Chunked)
        {
            _output.Write("0\r\n\r\n"u8);
        }
        else if (Framing == ResponseFraming.ContentLength && BodyWritten < _contentLength)
        {
            return false;
        }
        await FlushOutputAsync(default);
        return true;
    }

    /// <summary>Replaces a response that has not started with an empty 500 (the app failed).</summary>
    public void ResetForError()
    {
        ResponseHeaderTable.Reset();
        _statusCode = 500;
        _reasonPhrase = null;
        ResponseHeaderTable.ContentLength = 0;
    }

    private void CheckLength(int count)
    {
        if (BodyWritten + count > _contentLength)
        {
            throw new InvalidOperationException($"Response Content-Length mismatch: too many bytes written ({BodyWritten + count} of {_contentLength}).");
        }
    }

    private void ThrowIfBodyForbidden()
    {
        var isHead = HttpMethods.IsHead(Method);
        if (!isHead)
        {
            throw new InvalidOperationException($"Writing to the response body is invalid for responses with status code {_statusCode}.");
        }
    }

    private void WriteChunk(ReadOnlySpan<byte> data)
    {
        Span<byte> size = stackalloc byte[10];
        data.Length.TryFormat(size, out var digits, "x", CultureInfo.InvariantCulture);
        var span = _output.GetSpan(digits + 2 + data.Length + 2);
        if (span.Length >= digits + 2 + data.Length + 2)
        {
            size[..digits].CopyTo(span);
            "\r\n"u8.CopyTo(span[digits..]);
            data.CopyTo(span[(digits + 2)..]);
            "\r\n"u8.CopyTo(span[(digits + 2 + data.Length)..]);
            _output.Advance(digits + 2 + data.Length + 2);
            return;
        }
        _output.Write(size[..digits]);
        _output.Write("\r\n"u8);
        _output.Write(data);
        _output.Write("\r\n"u8);
    }

    /// <summary>Writes a response head into a pipe: spans of the pipe's memory filled in order, committed together.</summary>
    private ref struct HeadWriter(PipeWriter output)
    {
        private Span<byte> _span = output.GetSpan(1024);
        private int _used;

        public void Write(ReadOnlySpan<byte> bytes)
        {
            if (bytes.Length > _span.Length - _used)
            {
                Grow(bytes.Length);
            }
            bytes.CopyTo(_span[_used..]);
            _used += bytes.Length;
        }

        public void WriteLatin1(string text)
        {
            if (text.Length > _span.Length - _used)
            {
                Grow(text.Length);
            }
            _used += Encoding.Latin1.GetBytes(text, _span[_used..]);
        }

        public void WriteNumber(long value)
        {
            if (20 > _span.Length - _used)
            {
                Grow(20);
            }
            value.TryFormat(_span[_used..], out var written, default, CultureInfo.InvariantCulture);
            _used += written;
        }

        public readonly void Commit() => output.Advance(_used);

        private void Grow(int needed)
        {
            output.Advance(_used);
            _used = 0;
            _span = output.GetSpan(Math.Max(needed, 1024));
        }
    }
}
