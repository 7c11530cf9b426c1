using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Portico.Proxy.Http1;

namespace Portico.Upstreams;

/// <summary>One kept-alive TCP connection to an upstream server, as Portico's own HTTP/1.1 client uses it.</summary>
internal sealed class UpstreamConnection : IDisposable, Portico.Threading.ISlotted
{
    private readonly Http1Pool _pool;
    private int _disposed;

    /// <summary>When the exchange under way times out (<see cref="Environment.TickCount64"/>); 0 = none, -1 = expired.</summary>
    private long _deadline;
    private CancellationToken _abort;
    private int _expired;

    /// <summary>This connection's index in <see cref="UpstreamWatchdog"/>'s set; -1 when not in it.</summary>
    internal int WatchSlot = -1;

    int Portico.Threading.ISlotted.Slot { get => WatchSlot; set => WatchSlot = value; }

    public UpstreamConnection(Socket socket, Http1Pool pool, Portico.Server.Epoll.EpollSocket? io = null)
    {
        Socket = socket;
        Io = io;
        _pool = pool;
        UpstreamWatchdog.Add(this);
    }

    /// <summary>True when the watchdog closed the connection because its read timeout passed.</summary>
    public bool TimedOut => Volatile.Read(ref _expired) == ExpiredTimeout;

    /// <summary>True when the watchdog closed the connection (read timeout or the client went away).</summary>
    public bool Expired => Volatile.Read(ref _expired) != 0;

    private const int ExpiredTimeout = 1;
    private const int ExpiredAbort = 2;

    /// <summary>
    /// Starts watching an exchange: the connection is closed (ending any pending I/O) when <paramref name="requestAborted"/>
    /// is cancelled, or at <paramref name="deadline"/> (<see cref="Environment.TickCount64"/>) unless <see cref="Rearm"/>
    /// moved it or <see cref="EndWatch"/> ended the watch. <paramref name="timeoutMs"/> sets how often the watchdog looks.
    /// </summary>
    public void Watch(long deadline, long timeoutMs, CancellationToken requestAborted)
    {
        if (timeoutMs < UpstreamWatchdog.PeriodMs * 4L)
        {
            UpstreamWatchdog.NoteTimeout(timeoutMs);
        }
        _abort = requestAborted;
        Volatile.Write(ref _deadline, Math.Max(deadline, 1));
    }

    /// <summary>Restarts the read timeout (before each read).</summary>
    public void Rearm(long timeoutMs)
    {
        if (Volatile.Read(ref _deadline) > 0)
        {
            Volatile.Write(ref _deadline, Environment.TickCount64 + timeoutMs);
        }
    }

    /// <summary>Ends the watch; false when the watchdog closed the connection (it must not be reused).</summary>
    public bool EndWatch()
    {
        var deadline = Interlocked.Exchange(ref _deadline, 0);
        _abort = default;
        return deadline != -1 && Volatile.Read(ref _expired) == 0;
    }

    /// <summary>Called by the watchdog's scan: closes the connection if its deadline passed or its client went away.</summary>
    internal void Expire(long now)
    {
        var deadline = Volatile.Read(ref _deadline);
        if (deadline <= 0)
        {
            return;
        }
        var reason = now >= deadline ? ExpiredTimeout : _abort.IsCancellationRequested ? ExpiredAbort : 0;
        // The exchange may have renewed its deadline or ended since the scan looked.
        if (reason == 0 || Interlocked.CompareExchange(ref _deadline, -1, deadline) != deadline)
        {
            return;
        }
        Volatile.Write(ref _expired, reason);
        Dispose();
    }

    public Socket Socket { get; }

    /// <summary>The socket on Portico's own event loop, or null when .NET's socket engine drives it.</summary>
    public Portico.Server.Epoll.EpollSocket? Io { get; }

    /// <summary>Receives at least one byte (0: the server closed), on the own event loop where it runs.</summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer) =>
        Io is { } io ? io.ReceiveAsync(buffer) : Socket.ReceiveAsync(buffer, SocketFlags.None);

    /// <summary>Sends all of <paramref name="buffer"/>.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> buffer)
    {
        if (Io is { } io)
        {
            return io.SendAsync(buffer);
        }
        var send = Socket.SendAsync(buffer, SocketFlags.None);
        if (send.IsCompletedSuccessfully)
        {
            _ = send.Result;
            return default;
        }
        return AwaitAsync(send);

        static async ValueTask AwaitAsync(ValueTask<int> pending) => await pending;
    }

    /// <summary>False when the idle connection has something to read (the server closed it, or sent what it should not).</summary>
    public bool StillOpen()
    {
        if (Io is { MayBeReadable: false })
        {
            // Emptied by the last read and no event since: nothing arrived, not even the end.
            return true;
        }
        try
        {
            return !Socket.Poll(0, SelectMode.SelectRead);
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary><see cref="Environment.TickCount64"/> when the connection went back to the pool.</summary>
    public long IdleSince { get; set; }

    /// <summary>Closes the socket (any pending send or receive fails); safe to call from a cancellation callback.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            UpstreamWatchdog.Remove(this);
            Io?.Close();
            Socket.Dispose();
            _pool.Release();
        }
    }

    /// <summary>Closes the socket without freeing its slot under the cap: the caller passes the slot on.</summary>
    public void CloseKeepingSlot()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            UpstreamWatchdog.Remove(this);
            Io?.Close();
            Socket.Dispose();
        }
    }
}

/// <summary>
/// The idle connections to one server for Portico's own HTTP/1.1 client (<see cref="Proxy.HttpForwarder"/>'s fast
/// path): a bag of kept-alive sockets, taken for one exchange and returned when the response has been read to its end.
/// Idle connections older than the pool's idle timeout are closed when met and by a periodic sweep, and one idle for
/// more than <see cref="ProbeAfterMs"/> is checked for a close from the server before reuse (one poll(2)), so the
/// common case under load costs no system call. A reused connection can still have been closed a moment ago; the
/// forwarder then retries once on a new one, as SocketsHttpHandler does.
/// </summary>
/// <remarks>
/// <c>performance.connection_pool_size</c> caps the connections to the server, counting this pool's and the ones
/// SocketsHttpHandler opens for the same server (requests with bodies; <see cref="AcquireForHandlerAsync"/>): at the
/// cap, a request waits for a connection to come back (it is handed over directly) or for one to close. Only that
/// saturated path takes a lock.
/// </remarks>
internal sealed class Http1Pool : IDisposable
{
    /// <summary>An idle connection older than this is polled for a close (or stray bytes) before reuse.</summary>
    internal const int ProbeAfterMs = 500;

    private readonly ConcurrentBag<UpstreamConnection> _idle = new();
    private readonly UpstreamClient _client;
    private readonly int _maxConnections;
    private readonly Queue<TaskCompletionSource<UpstreamConnection?>> _waiters = new();
    private int _idleCount;
    private int _open;
    private int _waiting;
    private volatile bool _disposed;

    public Http1Pool(UpstreamClient client, string host, int port, string authority)
    {
        _client = client;
        _maxConnections = client.Options.MaxConnectionsPerServer;
        Host = host.Trim('[', ']');
        Port = port;
        EndPoint = IPAddress.TryParse(host, out var address) ? new IPEndPoint(address, port) : new DnsEndPoint(host, port);
        Authority = authority;
        ValueCache = new ResponseHeaderValueCache();
    }

    /// <summary>Where connections go: an IP endpoint when the server is given by address (no resolver on connect).</summary>
    public EndPoint EndPoint { get; }

    /// <summary>The server's host name or address (no brackets) and port.</summary>
    public string Host { get; }

    public int Port { get; }

    /// <summary>"host:port", the Host header when the client sent none.</summary>
    public string Authority { get; }

    /// <summary>Recently seen response header values of this server (Server, Content-Type, Date...), so repeats cost no string.</summary>
    internal ResponseHeaderValueCache ValueCache { get; }

    /// <summary>Idle connections in the pool now.</summary>
    public int IdleCount => Volatile.Read(ref _idleCount);

    /// <summary>
    /// An idle connection, or null when the caller may open a new one (a slot under the cap is reserved for it; a
    /// failed connect must call <see cref="Release"/>). At the cap, waits for a connection or a slot.
    /// </summary>
    /// <param name="fresh">True to skip idle connections (a replacement for one the server closed): reserve a slot, or wait.</param>
    /// <param name="cancellationToken">Ends a wait at the cap.</param>
    public ValueTask<UpstreamConnection?> RentOrReserveAsync(bool fresh, CancellationToken cancellationToken)
    {
        if (!fresh && TryRent(out var connection))
        {
            return ValueTask.FromResult<UpstreamConnection?>(connection);
        }
        return TryReserve() ? ValueTask.FromResult<UpstreamConnection?>(null) : WaitAsync(cancellationToken);
    }

    /// <summary>
    /// A slot under the cap for a connection SocketsHttpHandler is about to open to this server: an idle connection of
    /// this pool is closed to make room when needed, else the call waits. Release it when that connection closes.
    /// </summary>
    public async ValueTask AcquireForHandlerAsync(CancellationToken cancellationToken)
    {
        if (TryReserve())
        {
            return;
        }
        if (_idle.TryTake(out var idle))
        {
            // Its slot passes to the handler's connection.
            Interlocked.Decrement(ref _idleCount);
            idle.CloseKeepingSlot();
            return;
        }
        var handedOver = await WaitAsync(cancellationToken);
        handedOver?.CloseKeepingSlot();
    }

    /// <summary>One connection closed (or a reserved slot went unused): wakes a waiter with the slot, else frees it.</summary>
    public void Release()
    {
        if (Volatile.Read(ref _waiting) > 0)
        {
            lock (_waiters)
            {
                while (_waiters.TryDequeue(out var waiter))
                {
                    _waiting--;
                    if (waiter.TrySetResult(null))
                    {
                        return;
                    }
                }
            }
        }
        Interlocked.Decrement(ref _open);
    }

    private bool TryReserve()
    {
        while (true)
        {
            var open = Volatile.Read(ref _open);
            if (open >= _maxConnections)
            {
                return false;
            }
            if (Interlocked.CompareExchange(ref _open, open + 1, open) == open)
            {
                return true;
            }
        }
    }

    private async ValueTask<UpstreamConnection?> WaitAsync(CancellationToken cancellationToken)
    {
        var waiter = new TaskCompletionSource<UpstreamConnection?>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waiters)
        {
            // Checked again under the lock: a connection returned or closed since the first look did not see this waiter.
            if (TryRent(out var connection))
            {
                return connection;
            }
            if (TryReserve())
            {
                return null;
            }
            _waiters.Enqueue(waiter);
            _waiting++;
        }
        using (cancellationToken.UnsafeRegister(static w => ((TaskCompletionSource<UpstreamConnection?>)w!).TrySetCanceled(), waiter))
        {
            try
            {
                return await waiter.Task;
            }
            catch (OperationCanceledException)
            {
                // A connection or slot handed over at the same moment is not lost: TrySetResult failed for it.
                throw new OperationCanceledException(cancellationToken);
            }
        }
    }

    /// <summary>Takes an idle connection that is still usable, or returns false when there is none.</summary>
    public bool TryRent(out UpstreamConnection connection)
    {
        var timeout = (long)_client.Options.PooledConnectionIdleTimeout.TotalMilliseconds;
        while (_idle.TryTake(out connection!))
        {
            Interlocked.Decrement(ref _idleCount);
            var idleFor = Environment.TickCount64 - connection.IdleSince;
            if (idleFor >= timeout || (idleFor >= ProbeAfterMs && !connection.StillOpen()))
            {
                connection.Dispose();
                continue;
            }
            return true;
        }
        return false;
    }

    /// <summary>
    /// Opens and counts a new connection in a slot reserved by <see cref="RentOrReserveAsync"/> (connect timeout from the
    /// client's options, linked to <paramref name="cancellationToken"/>); a failure frees the slot.
    /// </summary>
    public async ValueTask<UpstreamConnection> ConnectAsync(CancellationToken cancellationToken)
    {
        try
        {
            var (socket, io) = await _client.ConnectOwnAsync(EndPoint, cancellationToken);
            return new UpstreamConnection(socket, this, io);
        }
        catch
        {
            Release();
            throw;
        }
    }

    /// <summary>Puts a connection whose last response was read completely back for the next request.</summary>
    public void Return(UpstreamConnection connection)
    {
        if (_disposed)
        {
            connection.Dispose();
            return;
        }
        if (Volatile.Read(ref _waiting) > 0)
        {
            lock (_waiters)
            {
                while (_waiters.TryDequeue(out var waiter))
                {
                    _waiting--;
                    if (waiter.TrySetResult(connection))
                    {
                        return;
                    }
                }
            }
        }
        connection.IdleSince = Environment.TickCount64;
        Interlocked.Increment(ref _idleCount);
        _idle.Add(connection);
    }

    /// <summary>Closes idle connections older than the idle timeout (called by the client's sweep timer).</summary>
    public void Sweep()
    {
        var timeout = (long)_client.Options.PooledConnectionIdleTimeout.TotalMilliseconds;
        var now = Environment.TickCount64;
        for (var n = IdleCount; n > 0 && _idle.TryTake(out var connection); n--)
        {
            if (now - connection.IdleSince >= timeout || _disposed)
            {
                Interlocked.Decrement(ref _idleCount);
                connection.Dispose();
            }
            else
            {
                _idle.Add(connection);
            }
        }
    }

    public void Dispose()
    {
        _disposed = true;
        while (_idle.TryTake(out var connection))
        {
            Interlocked.Decrement(ref _idleCount);
            connection.Dispose();
        }
    }
}
