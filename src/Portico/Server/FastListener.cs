using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Portico.Server;

/// <summary>
/// Connection-level hooks of a listener, called once per accepted connection: <see cref="Opened"/> may refuse it
/// (false: it is closed at once, and <see cref="Closed"/> is not called), <see cref="Closed"/> follows when it ends.
/// On Kestrel's transport they run as one connection middleware (<see cref="Middleware"/>).
/// </summary>
public sealed class ConnectionHooks(Func<ConnectionContext, bool> opened, Action<ConnectionContext> closed)
{
    public Func<ConnectionContext, bool> Opened { get; } = opened;

    public Action<ConnectionContext> Closed { get; } = closed;

    /// <summary>The same hooks as a Kestrel connection middleware.</summary>
    public Func<ConnectionDelegate, ConnectionDelegate> Middleware => next => async connection =>
    {
        if (!Opened(connection))
        {
            connection.Abort(new ConnectionAbortedException("refused: server.max_connections reached"));
            return;
        }
        try
        {
            await next(connection);
        }
        finally
        {
            Closed(connection);
        }
    };
}

/// <summary>
/// A cleartext endpoint whose connections Portico accepts itself (<see cref="FastListener"/>): the hooks and Portico's
/// HTTP/1.1 server run in Portico's accept path; a connection that needs Kestrel's HTTP (bodies, upgrades, HTTP/2 with
/// prior knowledge, anything the own server does not take) is handed to Kestrel.
/// </summary>
public sealed class FastEndPoint(IPEndPoint endpoint, Func<HttpContext, ValueTask> app, KestrelServerOptions options, ILogger logger, ConnectionHooks? hooks)
    : IPEndPoint(endpoint.Address, endpoint.Port)
{
    internal Func<HttpContext, ValueTask> App { get; } = app;

    internal KestrelServerOptions Options { get; } = options;

    internal ILogger Logger { get; } = logger;

    internal ConnectionHooks? Hooks { get; } = hooks;
}

/// <summary>
/// Binds <see cref="FastEndPoint"/>s with a <see cref="FastListener"/>; every other endpoint goes to Kestrel's socket
/// transport. Registered after <c>UseSockets</c>, so Kestrel asks it first.
/// </summary>
internal sealed class FastTransportFactory(IOptions<SocketTransportOptions> options, ILoggerFactory loggerFactory)
    : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    public bool CanBind(EndPoint endpoint) => endpoint is FastEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (endpoint is not FastEndPoint fast)
        {
            throw new NotSupportedException($"{endpoint} is not an endpoint of Portico's own accept path");
        }
        return new ValueTask<IConnectionListener>(FastListener.Bind(fast, options.Value, loggerFactory.CreateLogger("Portico.Server")));
    }
}

/// <summary>
/// Portico's own accept path for cleartext listeners. It accepts on the listening socket, wraps each client in a
/// <see cref="FastConnection"/> (reads and writes straight on the socket) and runs the endpoint's connection chain on
/// it, in which Portico's HTTP/1.1 server serves the requests it takes. A connection that needs Kestrel goes on
/// <see cref="FastConnection.SwitchToPipes"/> and out of <see cref="AcceptAsync"/>, which is what Kestrel's accept loop
/// waits on: Kestrel then runs its HTTP/1.1 or HTTP/2 on it from the request it was handed, and disposes it at the end.
/// </summary>
/// <remarks>
/// Why: with Kestrel's socket transport every connection carries two pipes and a receive and a send loop, about 5.5 KB
/// of objects per idle connection (measured with dotnet-gcdump, 10,000 idle connections), and every request passes
/// through both pipes. Here an idle connection is the socket, this wrapper and the HTTP/1.1 server's state.
/// On unbind (shutdown, a listener removed by a reload) accepting stops, every connection of this listener is asked
/// to close (an idle one after a grace in which a request on its way is still served, a busy one after its
/// response), and unbinding waits for them within the caller's token, after which the rest are aborted.
/// </remarks>
internal sealed partial class FastListener : IConnectionListener
{
    private readonly Socket _listenSocket;
    private readonly FastEndPoint _endpoint;
    private readonly ILogger _logger;
    private readonly Channel<ConnectionContext> _toKestrel = Channel.CreateUnbounded<ConnectionContext>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Lock _gate = new();
    private readonly HashSet<FastConnection> _connections = [];
    private readonly MemoryPool<byte> _pool = MemoryPool<byte>.Shared;
    private readonly long _maxReadBuffer;
    private readonly Task _acceptLoop;
    private Action<Http1ServerConnection, bool>? _onServerEnded;
    private TaskCompletionSource? _drained;
    private volatile bool _unbound;

    private FastListener(Socket listenSocket, FastEndPoint endpoint, SocketTransportOptions options, ILogger logger)
    {
        _listenSocket = listenSocket;
        _logger = logger;
        _endpoint = endpoint;
        // As Kestrel's socket transport: the receive side of a handed-over connection pauses at MaxReadBufferSize
        // (1 MiB by default; null = unbounded).
        _maxReadBuffer = options.MaxReadBufferSize ?? 0;
        EndPoint = listenSocket.LocalEndPoint!;
        _acceptLoop = AcceptLoopAsync();
    }

    public EndPoint EndPoint { get; }

    public static FastListener Bind(FastEndPoint endpoint, SocketTransportOptions options, ILogger logger)
    {
        var plain = new IPEndPoint(endpoint.Address, endpoint.Port);
        Socket socket;
        if (options.CreateBoundListenSocket is { } create)
        {
            socket = create(plain);
        }
        else
        {
            socket = new Socket(plain.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            if (plain.AddressFamily == AddressFamily.InterNetworkV6 && plain.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            try
            {
                socket.Bind(plain);
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                socket.Dispose();
                throw new AddressInUseException(ex.Message, ex);
            }
        }
        socket.Listen(options.Backlog);
        return new FastListener(socket, endpoint, options, logger);
    }

    private async Task AcceptLoopAsync()
    {
        await Task.Yield();
        while (!_unbound)
        {
            Socket client;
            try
            {
                client = await _listenSocket.AcceptAsync();
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException ex)
            {
                if (_unbound || ex.SocketErrorCode == SocketError.OperationAborted)
                {
                    break;
                }
                if (ex.SocketErrorCode != SocketError.ConnectionReset)
                {
                    // Out of descriptors or buffers: say so, give the process a moment, and keep accepting (as nginx does).
                    Log.AcceptFailed(_logger, EndPoint, ex.Message);
                    await Task.Delay(100);
                }
                continue;
            }
            try
            {
                client.NoDelay = true;
                // Reads and writes try a plain non-blocking call first (SocketInput, SocketOutput); only a call
                // that would block goes asynchronous.
                client.Blocking = false;
            }
            catch (SocketException)
            {
                // The client is already gone; the connection ends at its first read.
            }
            var connection = new FastConnection(client, this);
            lock (_gate)
            {
                // Accepted as unbinding began: served all the same (a reset would fail a client that did nothing
                // wrong), with one request and Connection: close.
                connection.CloseRequestedEarly = _unbound;
                _connections.Add(connection);
            }
            ThreadPool.UnsafeQueueUserWorkItem(connection, preferLocal: false);
        }
    }

    /// <summary>
    /// Serves <paramref name="connection"/> with Portico's HTTP/1.1 server; <see cref="OnServerEnded"/> follows when it
    /// is done (no frame waits for it: an idle connection carries only the server's own).
    /// </summary>
    internal void Serve(FastConnection connection)
    {
        var hooks = _endpoint.Hooks;
        try
        {
            if (hooks is not null && !hooks.Opened(connection))
            {
                Finish(connection, opened: false);
                return;
            }
            connection.Opened = true;
            var http1 = new Http1ServerConnection(connection, _endpoint.App, _endpoint.Options, _endpoint.Logger) { Ended = _onServerEnded ??= OnServerEnded };
            _ = http1.RunAsync();
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, connection.ConnectionId, ex);
            Finish(connection, connection.Opened);
        }
    }

    private void OnServerEnded(Http1ServerConnection http1, bool handOver)
    {
        http1.Dispose();
        var connection = (FastConnection)http1.Connection;
        if (handOver)
        {
            _ = HandOverAndFinishAsync(connection);
        }
        else
        {
            Finish(connection, opened: true);
        }
    }

    private async Task HandOverAndFinishAsync(FastConnection connection)
    {
        try
        {
            // HTTP/2 with prior knowledge starts with a preface the HTTP/1.1 parser does not take: Portico's HTTP/2
            // server serves it (or Kestrel's, told "h2", when PORTICO_HTTP2_SERVER=kestrel).
            if (Http2.Http2ServerConnection.Enabled && await Hosting.H2cPriorKnowledge.StartsWithPrefaceAsync(connection))
            {
                var http2 = new Http2.Http2ServerConnection(connection, _endpoint.App, _endpoint.Options, _endpoint.Logger);
                await http2.RunAsync();
                return;
            }
            await Hosting.H2cPriorKnowledge.DetectAsync(connection);
            await HandOverAsync(connection);
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, connection.ConnectionId, ex);
        }
        finally
        {
            Finish(connection, opened: true);
        }
    }

    /// <summary>The connection is over (or Kestrel is done with it): the hooks hear of it, the socket closes.</summary>
    private void Finish(FastConnection connection, bool opened)
    {
        try
        {
            if (opened)
            {
                _endpoint.Hooks?.Closed(connection);
            }
            if (!connection.HandedToKestrel)
            {
                var dispose = connection.DisposeAsync();
                if (!dispose.IsCompletedSuccessfully)
                {
                    dispose.AsTask().GetAwaiter().GetResult();
                }
            }
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, connection.ConnectionId, ex);
        }
        finally
        {
            TaskCompletionSource? drained = null;
            lock (_gate)
            {
                _connections.Remove(connection);
                if (_connections.Count == 0)
                {
                    drained = _drained;
                }
            }
            drained?.TrySetResult();
        }
    }

    /// <summary>The end of the chain: the connection needs Kestrel; the task completes when Kestrel is done with it.</summary>
    private Task HandOverAsync(FastConnection connection)
    {
        var done = connection.SwitchToPipes(_pool, _maxReadBuffer);
        if (_unbound || !_toKestrel.Writer.TryWrite(connection))
        {
            return Task.CompletedTask;
        }
        connection.HandedToKestrel = true;
        return done;
    }

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _toKestrel.Reader.ReadAsync(cancellationToken);
        }
        catch (ChannelClosedException)
        {
            return null;
        }
    }

    public async ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        FastConnection[] open;
        lock (_gate)
        {
            if (_unbound)
            {
                return;
            }
            _unbound = true;
            open = [.. _connections];
            _drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (open.Length == 0)
            {
                _drained.TrySetResult();
            }
        }
        _listenSocket.Dispose();
        _toKestrel.Writer.TryComplete();
        await _acceptLoop.ConfigureAwait(false);
        foreach (var connection in open)
        {
            if (!connection.HandedToKestrel)
            {
                connection.RequestClose();
            }
        }
        if (_drained is { } drained)
        {
            try
            {
                await drained.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                lock (_gate)
                {
                    open = [.. _connections];
                }
                foreach (var connection in open)
                {
                    if (!connection.HandedToKestrel)
                    {
                        connection.Abort(new ConnectionAbortedException("the server is stopping"));
                    }
                }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await UnbindAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1110, Level = LogLevel.Warning, Message = "Accepting on {EndPoint} failed: {Reason}; retrying")]
        public static partial void AcceptFailed(ILogger logger, EndPoint endPoint, string reason);

        [LoggerMessage(EventId = 1111, Level = LogLevel.Error, Message = "Connection {ConnectionId} failed")]
        public static partial void ConnectionFailed(ILogger logger, string connectionId, Exception exception);
    }
}
