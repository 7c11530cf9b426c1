namespace Portico.Proxy;

/// <summary>
/// The live upgraded connections (WebSockets over HTTP/1.1 Upgrade or HTTP/2 extended CONNECT) of one
/// <see cref="ProxyService{TContext}"/>, so a graceful shutdown can end them with a WebSocket close handshake
/// instead of cutting the TCP connections (<see cref="CloseAllAsync"/>).
/// </summary>
/// <remarks>
/// A tunnel joins when its upgrade succeeds and leaves when it ends; an ordinary request never touches this. The list
/// is intrusive (the tunnel carries its links), so joining and leaving allocate nothing; the lock guards a few
/// pointer writes, never I/O.
/// </remarks>
public sealed class UpgradedTunnels
{
    private readonly Lock _lock = new();
    private readonly TimeProvider _timeProvider;
    private WebSocketTunnel? _head;
    private int _count;
    private bool _closing;
    private long _closeStarted;
    private TimeSpan _closeTimeout;

    /// <summary>Creates an empty registry on the system clock.</summary>
    public UpgradedTunnels()
        : this(TimeProvider.System)
    {
    }

    /// <summary>Creates an empty registry whose close timeouts run on <paramref name="timeProvider"/>.</summary>
    public UpgradedTunnels(TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        _timeProvider = timeProvider;
    }

    /// <summary>The number of live tunnels.</summary>
    public int Count => Volatile.Read(ref _count);

    internal TimeProvider TimeProvider => _timeProvider;

    /// <summary>
    /// Ends every live tunnel with a WebSocket closing handshake, as Caddy does on shutdown: each direction relays to
    /// the end of the frame it is in (never cutting one), then the client gets a close frame with status 1001 "going
    /// away" (unmasked) and the upstream the same frame masked with a random key, unless that side already sent or
    /// received a close frame. Their answering close frames are awaited but not relayed. After
    /// <paramref name="handshakeTimeout"/>, counted from this call, whatever is still open is cut.
    /// </summary>
    /// <remarks>
    /// Call it at the start of a graceful shutdown, before the server stops, so the handshakes run while the
    /// connections are still served. A tunnel that starts after this call (an upgrade on a connection still open) is
    /// closed the same way, with what is left of the timeout. Tunnels of protocols other than WebSocket are cut at the
    /// timeout. The returned task completes when every tunnel live at the call has ended, at most about
    /// <paramref name="handshakeTimeout"/> later; it does not fail.
    /// </remarks>
    /// <param name="handshakeTimeout">How long the tunnels have to finish their frame and their closing handshake;
    /// zero cuts them at once.</param>
    public Task CloseAllAsync(TimeSpan handshakeTimeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(handshakeTimeout, TimeSpan.Zero);
        WebSocketTunnel[] tunnels;
        lock (_lock)
        {
            if (!_closing)
            {
                _closing = true;
                _closeStarted = _timeProvider.GetTimestamp();
                _closeTimeout = handshakeTimeout;
            }
            tunnels = new WebSocketTunnel[_count];
            var i = 0;
            for (var tunnel = _head; tunnel is not null; tunnel = tunnel.Next)
            {
                tunnels[i++] = tunnel;
            }
        }
        if (tunnels.Length == 0)
        {
            return Task.CompletedTask;
        }
        var ended = new Task[tunnels.Length];
        for (var i = 0; i < tunnels.Length; i++)
        {
            ended[i] = tunnels[i].CloseAsync(handshakeTimeout);
        }
        return Task.WhenAll(ended);
    }

    internal void Add(WebSocketTunnel tunnel)
    {
        TimeSpan? closeTimeout = null;
        lock (_lock)
        {
            tunnel.Next = _head;
            if (_head is not null)
            {
                _head.Previous = tunnel;
            }
            _head = tunnel;
            _count++;
            if (_closing)
            {
                var left = _closeTimeout - _timeProvider.GetElapsedTime(_closeStarted);
                closeTimeout = left > TimeSpan.Zero ? left : TimeSpan.Zero;
            }
        }
        if (closeTimeout is { } timeout)
        {
            _ = tunnel.CloseAsync(timeout);
        }
    }

    internal void Remove(WebSocketTunnel tunnel)
    {
        lock (_lock)
        {
            if (tunnel.Previous is not null)
            {
                tunnel.Previous.Next = tunnel.Next;
            }
            else if (_head == tunnel)
            {
                _head = tunnel.Next;
            }
            else
            {
                // Not in the list (removed already).
                return;
            }
            if (tunnel.Next is not null)
            {
                tunnel.Next.Previous = tunnel.Previous;
            }
            tunnel.Previous = null;
            tunnel.Next = null;
            _count--;
        }
    }
}
