using System.Buffers;
using System.Collections;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Portico.Server;

/// <summary>
/// One client connection accepted by <see cref="FastListener"/>: the socket, and a <see cref="ConnectionContext"/> over it
/// that is its own feature collection. While Portico's HTTP/1.1 server has the connection, reads and writes go straight
/// to the socket (<see cref="SocketInput"/>, <see cref="SocketOutput"/>): about 1.5 KB of objects per idle connection
/// where Kestrel's socket transport keeps about 4 KB (two pipes, a receive and a send loop, their buffers' segments).
/// When a request needs Kestrel, <see cref="SwitchToPipes"/> puts the bytes received so far at the head of a real
/// <see cref="Pipe"/>, starts a receive and a send loop as Kestrel's transport has, and the connection goes to Kestrel
/// through the listener's accept queue.
/// </summary>
internal sealed class FastConnection : ConnectionContext, IDuplexPipe, IFeatureCollection, IThreadPoolWorkItem,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IConnectionEndPointFeature,
    IConnectionLifetimeFeature, IConnectionLifetimeNotificationFeature
{
    private static long _lastId;
    private static readonly byte[] PeekByte = new byte[1];

    private readonly Socket _socket;
    private Epoll.EpollSocket? _io;
    private readonly FastListener _listener;
    private readonly long _id;
    private SocketInput? _input;
    private SocketOutput? _output;
    private IDuplexPipe? _pipes;
    private string? _connectionId;
    private IDictionary<object, object?>? _items;
    private List<KeyValuePair<Type, object>>? _extraFeatures;
    private int _featureRevision;
    private EndPoint? _remote;
    private EndPoint? _local;
    private CancellationTokenSource? _closedSource;
    private CancellationTokenSource? _closeRequestedSource;
    private volatile bool _closed;
    private int _watching;
    private Task? _receiveLoop;
    private Task? _sendLoop;
    private TaskCompletionSource? _kestrelDone;

    public FastConnection(Socket socket, FastListener listener)
    {
        _socket = socket;
        _listener = listener;
        _id = Interlocked.Increment(ref _lastId);
        // Portico's own event loop, where it runs (null: .NET's socket engine, as before).
        _io = Epoll.EpollLoop.TryRegister(socket);
    }

    /// <summary>The connection's socket (Portico's HTTP/2 server sends on it directly).</summary>
    internal Socket Socket => _socket;

    /// <summary>The socket on Portico's own event loop, or null when .NET's socket engine drives it.</summary>
    internal Epoll.EpollSocket? Io => _io;

    /// <summary>Portico's HTTP/1.1 server while it serves this connection (for shutdown and the close watch).</summary>
    internal Http1ServerConnection? Server { get; set; }

    /// <summary>Accepted while the listener was unbinding, or asked to close before the server started: the server starts closing (<see cref="Http1ServerConnection.CloseGraceMs"/>).</summary>
    public bool CloseRequestedEarly
    {
        get => Volatile.Read(ref _closeRequestedEarly);
        set => Volatile.Write(ref _closeRequestedEarly, value);
    }

    private bool _closeRequestedEarly;

    /// <summary>True once the listener's hooks accepted the connection.</summary>
    public bool Opened { get; set; }

    /// <summary>True once the connection is in Kestrel's hands (it disposes it).</summary>
    public bool HandedToKestrel { get; set; }

    /// <summary>True when someone looked features up by type or set one (H2cPriorKnowledge, Kestrel).</summary>
    public bool HasExtraFeatures => _extraFeatures is { Count: > 0 };

    // ---- ConnectionContext ----

    public override string ConnectionId
    {
        get => _connectionId ??= "P" + _id.ToString("X8", System.Globalization.CultureInfo.InvariantCulture);
        set => _connectionId = value;
    }

    public override IFeatureCollection Features => this;

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new ConnectionItems();
        set => _items = value;
    }

    public override IDuplexPipe Transport
    {
        get => _pipes ?? this;
        set => _pipes = value;
    }

    PipeReader IDuplexPipe.Input => _input ??= new SocketInput(_socket, _io);

    PipeWriter IDuplexPipe.Output => _output ??= new SocketOutput(_socket, _io);

    public override EndPoint? RemoteEndPoint
    {
        get => _remote ??= SafeEndPoint(static s => s.RemoteEndPoint);
        set => _remote = value;
    }

    public override EndPoint? LocalEndPoint
    {
        get => _local ??= SafeEndPoint(static s => s.LocalEndPoint);
        set => _local = value;
    }

    private EndPoint? SafeEndPoint(Func<Socket, EndPoint?> read)
    {
        try
        {
            return read(_socket);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return null;
        }
    }

    public override CancellationToken ConnectionClosed
    {
        get
        {
            if (_closedSource is { } source)
            {
                return source.Token;
            }
            var created = new CancellationTokenSource();
            if (Interlocked.CompareExchange(ref _closedSource, created, null) is { } raced)
            {
                created.Dispose();
                return raced.Token;
            }
            if (_closed)
            {
                created.Cancel();
            }
            return created.Token;
        }
        set => throw new NotSupportedException("ConnectionClosed cannot be replaced");
    }

    /// <summary>Closes the socket for both directions at once (a timeout, a protocol error); the owner disposes it.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        try
        {
            _io?.FlushDeferred();   // an answer held for the end of the loop's batch (a 400, say) goes out first
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed.
        }
        FireClosed();
    }

    private void FireClosed()
    {
        _closed = true;
        if (Volatile.Read(ref _closedSource) is { } source)
        {
            try
            {
                source.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
            catch (AggregateException)
            {
                // A callback failed; the connection is closed either way.
            }
        }
    }

    /// <summary>
    /// Kestrel is done with a handed-over connection (or the own server with its own): stops the loops, closes the socket.
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        if (_pipes is { } pipes)
        {
            pipes.Input.Complete();
            pipes.Output.Complete();
            if (_sendLoop is { } send)
            {
                await send.ConfigureAwait(false);
            }
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
            if (_receiveLoop is { } receive)
            {
                await receive.ConfigureAwait(false);
            }
        }
        _input?.Complete();
        _output?.Complete();
        if (LingerOnClose && !_closed)
        {
            _ = LingerAsync();
            return;
        }
        if (_io is { } held && !held.FlushDeferred())
        {
            // The socket's buffer had no room for all of the last response (a slow reader): it goes out before the close.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                await held.FlushDeferredAsync(timeout.Token);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
            {
            }
        }
        _io?.Close();
        _socket.Dispose();
        FireClosed();
        _kestrelDone?.TrySetResult();
    }

    /// <summary>
    /// Closed by the server while the client may still be sending (a keep-alive connection closed at shutdown or on a
    /// reload): set before disposing, it makes the close a lingering one, as nginx's lingering_close.
    /// </summary>
    public bool LingerOnClose { get; set; }

    /// <summary>
    /// Sends the FIN first and reads (and drops) what the client still sends until it closes too, for at most two
    /// seconds, before closing: closing with unread data would send a reset, which can destroy the response the client
    /// has not read yet and fails a request it sent in good faith instead of letting it retry on a new connection.
    /// </summary>
    private async Task LingerAsync()
    {
        var scratch = ArrayPool<byte>.Shared.Rent(4096);
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            if (_io is { } held)
            {
                await held.FlushDeferredAsync(timeout.Token);   // the response before the FIN
            }
            _socket.Shutdown(SocketShutdown.Send);
            if (_io is { } io)
            {
                while (await io.ReceiveAsync(scratch, timeout.Token) > 0)
                {
                }
            }
            else
            {
                while (await _socket.ReceiveAsync(scratch, SocketFlags.None, timeout.Token) > 0)
                {
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
            _io?.Close();
            _socket.Dispose();
            FireClosed();
        }
    }

    // ---- the client went away while a request is in progress ----

    /// <summary>
    /// Watches for the client closing while a long request is in progress (nothing else reads the socket then): a
    /// one-byte peek that completes when data or the end arrives; the end (0 bytes) closes <see cref="ConnectionClosed"/>,
    /// which cancels the request, as Kestrel's always-running receive loop does. Armed by the heartbeat, so a request
    /// that ends within a second costs nothing.
    /// </summary>
    public void WatchForClose()
    {
        if (_closed || Interlocked.Exchange(ref _watching, 1) == 1)
        {
            return;
        }
        _ = WatchAsync();
    }

    private async Task WatchAsync()
    {
        try
        {
            if (_io is { } io)
            {
                await WatchOnLoopAsync(io);
            }
            else
            {
                var n = await _socket.ReceiveAsync(PeekByte, SocketFlags.Peek);
                if (n == 0)
                {
                    FireClosed();
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            FireClosed();
        }
        finally
        {
            Volatile.Write(ref _watching, 0);
        }
    }

    /// <summary>The watch on the own event loop: a peek at each read-side event until data or the end is there.</summary>
    private async ValueTask WatchOnLoopAsync(Epoll.EpollSocket io)
    {
        while (true)
        {
            int n;
            SocketError error;
            try
            {
                var seen = io.ReadEvents;
                n = io.Peek(out error);
                if (error == SocketError.WouldBlock)
                {
                    await io.WaitForReadEventAsync(seen);
                    continue;
                }
            }
            catch (ObjectDisposedException) when (!ReferenceEquals(_io, io))
            {
                // Handed over to .NET's socket engine (SwitchToPipes), not closed.
                return;
            }
            if (error != SocketError.Success || n == 0)
            {
                FireClosed();
            }
            return;
        }
    }

    // ---- hand-over to Kestrel ----

    /// <summary>
    /// Puts the connection on pipes for Kestrel: the bytes received and not consumed first, then what the socket
    /// receives; what Kestrel writes is sent by a loop of its own. Returns a task that completes when Kestrel is done.
    /// </summary>
    public Task SwitchToPipes(MemoryPool<byte> pool, long maxReadBuffer)
    {
        // As Kestrel's socket transport: the application side (Kestrel's HTTP) runs where the socket completed when
        // inline completions are on; reads pause at the transport's MaxReadBufferSize (0: never), writes at 64 KiB.
        var appScheduler = Hosting.SocketEngine.Inline ? PipeScheduler.Inline : PipeScheduler.ThreadPool;
        var input = new Pipe(new PipeOptions(pool, readerScheduler: appScheduler, writerScheduler: PipeScheduler.Inline,
            pauseWriterThreshold: maxReadBuffer, resumeWriterThreshold: maxReadBuffer / 2, useSynchronizationContext: false));
        var output = new Pipe(new PipeOptions(pool, readerScheduler: PipeScheduler.Inline, writerScheduler: appScheduler,
            pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024, useSynchronizationContext: false));
        if (_input is { } reader)
        {
            var unconsumed = reader.Unconsumed;
            if (!unconsumed.IsEmpty)
            {
                input.Writer.Write(unconsumed);
                _ = input.Writer.FlushAsync();
            }
            if (_io?.TakeStaged() is { } staged)
            {
                // Received by the loop for the reader and not taken yet (EpollSocket.StageReceive): next in the stream.
                input.Writer.Write(staged);
                _ = input.Writer.FlushAsync();
            }
            var ended = reader.Ended;
            reader.Complete();
            if (ended)
            {
                input.Writer.Complete();
            }
        }
        _output?.Complete();
        // From here .NET's socket engine drives the socket (Kestrel's transport loops below); a close watch still
        // waiting on the own loop ends quietly (WatchOnLoopAsync).
        var io = _io;
        _io = null;
        io?.Close();
        _pipes = new DuplexPipe(input.Reader, output.Writer);
        _kestrelDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (_input is not { Ended: true })
        {
            _receiveLoop = ReceiveLoopAsync(input.Writer);
        }
        _sendLoop = SendLoopAsync(output.Reader);
        return _kestrelDone.Task;
    }

    private async Task ReceiveLoopAsync(PipeWriter writer)
    {
        Exception? error = null;
        try
        {
            while (true)
            {
                // As Kestrel's transport: wait for data before taking a buffer, so idle connections hold none.
                await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None);
                var memory = writer.GetMemory(4096);
                var received = await _socket.ReceiveAsync(memory, SocketFlags.None);
                if (received == 0)
                {
                    break;
                }
                writer.Advance(received);
                var flush = await writer.FlushAsync();
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (SocketException ex)
        {
            error = MapError(ex);
        }
        catch (ObjectDisposedException)
        {
        }
        catch (Exception ex)
        {
            error = ex;
        }
        finally
        {
            await writer.CompleteAsync(error).ConfigureAwait(false);
            FireClosed();
        }
    }

    private async Task SendLoopAsync(PipeReader reader)
    {
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync();
                var buffer = result.Buffer;
                if (result.IsCanceled)
                {
                    break;
                }
                foreach (var segment in buffer)
                {
                    await _socket.SendAsync(segment, SocketFlags.None);
                }
                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The client is gone: the receive side sees it too and closes the connection.
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
            try
            {
                _socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
        }
    }

    internal static Exception MapError(SocketException ex) => ex.SocketErrorCode switch
    {
        SocketError.OperationAborted or SocketError.Interrupted or SocketError.Shutdown => new ConnectionAbortedException("the connection was aborted", ex),
        _ => new ConnectionResetException(ex.Message, ex),
    };

    // ---- IThreadPoolWorkItem: the listener queues each new connection ----

    void IThreadPoolWorkItem.Execute() => _listener.Serve(this);

    // ---- IConnectionLifetimeNotificationFeature (graceful shutdown of the own server's connections) ----

    public CancellationToken ConnectionClosedRequested
    {
        get => (_closeRequestedSource ??= new CancellationTokenSource()).Token;
        set => throw new NotSupportedException();
    }

    /// <summary>
    /// The server is stopping: Portico's HTTP/1.1 server finishes the request in progress and closes; an idle connection
    /// still serves a request that arrives within <see cref="Http1ServerConnection.CloseGraceMs"/>, then closes.
    /// </summary>
    public void RequestClose()
    {
        // A connection accepted a moment ago has a request on its way: it is served, with Connection: close (a reset
        // would fail a client that did nothing wrong). The flag is published before Server is read, and the server
        // publishes itself before reading the flag, so one of the two sees the other.
        CloseRequestedEarly = true;
        Interlocked.MemoryBarrier();
        Server?.OnCloseRequested();
        try
        {
            _closeRequestedSource?.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    // ---- IFeatureCollection: this object for the connection features, a small list for the rest ----

    public bool IsReadOnly => false;

    public int Revision => _featureRevision;

    public object? this[Type key]
    {
        get
        {
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
            if (key == typeof(IConnectionIdFeature) || key == typeof(IConnectionTransportFeature) || key == typeof(IConnectionItemsFeature)
                || key == typeof(IConnectionEndPointFeature) || key == typeof(IConnectionLifetimeFeature) || key == typeof(IConnectionLifetimeNotificationFeature))
            {
                return this;
            }
            return null;
        }
        set
        {
            _featureRevision++;
            var extras = _extraFeatures ??= [];
            for (var i = 0; i < extras.Count; i++)
            {
                if (extras[i].Key == key)
                {
                    if (value is null)
                    {
                        extras.RemoveAt(i);
                    }
                    else
                    {
                        extras[i] = new(key, value);
                    }
                    return;
                }
            }
            if (value is not null)
            {
                extras.Add(new(key, value));
            }
        }
    }

    public TFeature? Get<TFeature>() => (TFeature?)this[typeof(TFeature)];

    public void Set<TFeature>(TFeature? instance) => this[typeof(TFeature)] = instance;

    public IEnumerator<KeyValuePair<Type, object>> GetEnumerator()
    {
        var listed = new List<KeyValuePair<Type, object>>();
        if (_extraFeatures is { } extras)
        {
            listed.AddRange(extras);
        }
        foreach (var type in new[] { typeof(IConnectionIdFeature), typeof(IConnectionTransportFeature), typeof(IConnectionItemsFeature),
            typeof(IConnectionEndPointFeature), typeof(IConnectionLifetimeFeature), typeof(IConnectionLifetimeNotificationFeature) })
        {
            if (!listed.Exists(p => p.Key == type))
            {
                listed.Add(new(type, this));
            }
        }
        return listed.GetEnumerator();
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    private sealed class ConnectionItems : Dictionary<object, object?>;
}
