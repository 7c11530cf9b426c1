using System.Buffers;
using System.Security.Cryptography;

namespace Portico.Proxy;

/// <summary>
/// One upgraded connection (HttpForwarder step 6) relayed both ways as raw bytes, with what graceful shutdown needs:
/// each direction's WebSocket frame boundary, and a way to end the connection the way Caddy does, with a close frame
/// (1001 "going away") to both sides, placed between frames.
/// </summary>
/// <remarks>
/// <para>
/// Each direction has its own pump and is the only writer to its destination. A direction between reads is
/// <em>parked</em>; a close request (<see cref="CloseAsync"/>) takes a direction that is parked at a frame boundary
/// and writes the close frame itself, since waiting for the pump would mean waiting for the peer's next bytes, which
/// on an idle connection never come. It may seem simpler to cancel the pending read instead, but SocketsHttpHandler
/// tears down the upstream connection when a read on it is cancelled, and the close frame could no longer be sent.
/// A direction that is mid-frame relays to the end of that frame first (RFC 6455 §5.4: a close frame, being a control
/// frame, may go between the fragments of a message, so a frame boundary is enough).
/// </para>
/// <para>
/// After its close frame, a direction relays nothing more: it reads its source only to find that side's answering
/// close frame (or EOF), and drops the rest. The answer is not forwarded: the other side already has the gateway's
/// close frame, and a second one would break RFC 6455 §5.5.1. When a side already sent or received a close frame,
/// its closing handshake is under way; the gateway sends it nothing and keeps relaying, so the handshake completes
/// end to end. The whole close is bounded by the timeout given to <see cref="CloseAsync"/>; then both streams are
/// cancelled.
/// </para>
/// <para>
/// A tunnel of another protocol (an extended CONNECT for something other than "websocket") has no frames to respect;
/// it is relayed plainly and simply ends at the timeout.
/// </para>
/// </remarks>
internal sealed class WebSocketTunnel
{
    private const int BufferSize = 16 * 1024;

    // Relay states. Only the pump moves a relay between Relaying and its parked states; CloseAsync moves it from
    // ParkedAtBoundary to Closed; the pump's exit moves it to Ended, after which nothing else may write.
    private const int Relaying = 0;
    private const int ParkedAtBoundary = 1;
    private const int ParkedElsewhere = 2;
    private const int Closed = 3;
    private const int Ended = 4;

    private readonly bool _isWebSocket;
    private readonly CancellationTokenSource _cts;
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Relay _toUpstream;
    private readonly Relay _toDownstream;
    private int _closeRequested;
    private int _closeSeen;

    /// <param name="downstream">The client's stream: frames written to it are unmasked (server-to-client).</param>
    /// <param name="upstream">The upstream's stream: frames written to it are masked (client-to-server).</param>
    /// <param name="isWebSocket">False for a tunnel of another protocol: relayed as bytes, never framed.</param>
    /// <param name="timeProvider">The clock of the close timeout.</param>
    public WebSocketTunnel(Stream downstream, Stream upstream, bool isWebSocket, TimeProvider timeProvider)
    {
        _isWebSocket = isWebSocket;
        _cts = new CancellationTokenSource(Timeout.InfiniteTimeSpan, timeProvider);
        _toUpstream = new Relay(downstream, upstream, toUpstream: true);
        _toDownstream = new Relay(upstream, downstream, toUpstream: false);
    }

    /// <summary>Links of <see cref="UpgradedTunnels"/>' list; guarded by its lock.</summary>
    internal WebSocketTunnel? Previous { get; set; }

    internal WebSocketTunnel? Next { get; set; }

    /// <summary>True once <see cref="CloseAsync"/> was called.</summary>
    public bool CloseRequested => Volatile.Read(ref _closeRequested) != 0;

    /// <summary>True once a close frame passed in either direction, or was an answer to the gateway's.</summary>
    private bool CloseSeen => Volatile.Read(ref _closeSeen) != 0;

    /// <summary>
    /// Relays both ways until either side closes (then the other direction is cancelled), or, after
    /// <see cref="CloseAsync"/>, until both closing handshakes are done or its timeout passed. Registers the tunnel in
    /// <paramref name="registry"/> meanwhile. Neither stream is disposed here.
    /// </summary>
    public async Task RunAsync(ProxySession session, UpgradedTunnels? registry, CancellationToken requestAborted)
    {
        var abort = requestAborted.UnsafeRegister(static state => ((WebSocketTunnel)state!).Cancel(), this);
        registry?.Add(this);
        try
        {
            var up = PumpAsync(_toUpstream, session);
            var down = PumpAsync(_toDownstream, session);
            var first = await Task.WhenAny(up, down) == up ? _toUpstream : _toDownstream;
            var other = first == _toUpstream ? _toDownstream : _toUpstream;
            // The other direction, if it sent its close frame, waits for its source's answer to the close frame this
            // one sent: let it have it (bounded by the close timeout). In any other case one side is gone, or nothing
            // will answer, and the tunnel ends now.
            if (!first.EndedAfterClose || Volatile.Read(ref other.State) != Closed)
            {
                Cancel();
            }
            // The pumps end by returning: they catch what ends them.
            await up;
            await down;
            await _toUpstream.WaitForInjectionAsync();
            await _toDownstream.WaitForInjectionAsync();
        }
        finally
        {
            registry?.Remove(this);
            await abort.DisposeAsync();
            _cts.Dispose();
            _ended.TrySetResult();
        }
    }

    /// <summary>
    /// Starts the close: each direction, at its next frame boundary, sends a close frame (1001 "going away") to its
    /// destination, then waits for that side's answer. After <paramref name="handshakeTimeout"/> the tunnel ends
    /// whatever state it is in. Returns a task that completes when the tunnel has ended; later calls only return it.
    /// </summary>
    public Task CloseAsync(TimeSpan handshakeTimeout)
    {
        if (Interlocked.Exchange(ref _closeRequested, 1) != 0)
        {
            return _ended.Task;
        }
        try
        {
            _cts.CancelAfter(handshakeTimeout);
        }
        catch (ObjectDisposedException)
        {
            // The tunnel ended meanwhile.
            return _ended.Task;
        }
        TakeParkedRelay(_toDownstream);
        TakeParkedRelay(_toUpstream);
        return _ended.Task;
    }

    private void Cancel()
    {
        try
        {
            _cts.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>A relay parked at a boundary will not write until its source sends something: write its close frame now.</summary>
    private void TakeParkedRelay(Relay relay)
    {
        if (!_isWebSocket || CloseSeen)
        {
            // A closing handshake already under way is left to finish end to end.
            return;
        }
        // The placeholder goes in before the state changes: RunAsync reads it only after the pump has set Ended, so
        // it either sees this injection or the state change below fails.
        var injection = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref relay.Injection, injection);
        if (Interlocked.CompareExchange(ref relay.State, Closed, ParkedAtBoundary) != ParkedAtBoundary)
        {
            injection.TrySetResult();
            return;
        }
        _ = InjectAsync(relay, injection);
    }

    private async Task InjectAsync(Relay relay, TaskCompletionSource injection)
    {
        try
        {
            await WriteCloseFrameAsync(relay, _cts.Token);
        }
        catch (Exception)
        {
            // The side is gone or the timeout passed; the tunnel ends either way.
        }
        finally
        {
            injection.TrySetResult();
        }
    }

    private static async ValueTask WriteCloseFrameAsync(Relay relay, CancellationToken cancellationToken)
    {
        // Once per direction per shutdown: a small array is cheaper than pooling here.
        var frame = new byte[WebSocketCloseFrame.MaxLength];
        Span<byte> maskKey = stackalloc byte[4];
        if (relay.ToUpstream)
        {
            // RFC 6455 §5.3: the masking key must be unpredictable, from a strong source of entropy.
            RandomNumberGenerator.Fill(maskKey);
        }
        var length = WebSocketCloseFrame.Write(frame, maskKey, relay.ToUpstream);
        await relay.Destination.WriteAsync(frame.AsMemory(0, length), cancellationToken);
        await relay.Destination.FlushAsync(cancellationToken);
    }

    private async Task PumpAsync(Relay relay, ProxySession session)
    {
        var cancellationToken = _cts.Token;
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        var draining = false;
        try
        {
            while (true)
            {
                var parked = ParkedElsewhere;
                if (!draining)
                {
                    // Only a WebSocket relay at a boundary, that has not passed a close frame itself, may be taken.
                    parked = _isWebSocket && relay.Tracker.IsAtFrameBoundary && !relay.Tracker.CloseSeen && !CloseSeen
                        ? ParkedAtBoundary
                        : ParkedElsewhere;
                    // Pairs with CloseAsync, which sets _closeRequested and then tries to take a parked relay: both
                    // are full fences, so of a close request racing with this park at least one side sees the other.
                    Interlocked.Exchange(ref relay.State, parked);
                    if (parked == ParkedAtBoundary && CloseRequested
                        && Interlocked.CompareExchange(ref relay.State, Closed, ParkedAtBoundary) == ParkedAtBoundary)
                    {
                        await WriteCloseFrameAsync(relay, cancellationToken);
                        draining = true;
                    }
                }

                var read = await relay.Source.ReadAsync(buffer.AsMemory(), cancellationToken);
                if (read == 0)
                {
                    return;
                }
                if (!draining && Interlocked.CompareExchange(ref relay.State, Relaying, parked) != parked)
                {
                    // CloseAsync took this relay while it waited: its destination has the close frame.
                    draining = true;
                }

                var offset = 0;
                while (offset < read)
                {
                    if (draining)
                    {
                        relay.Tracker.Advance(buffer.AsSpan(offset, read - offset), stopAtBoundary: false);
                        if (relay.Tracker.CloseSeen)
                        {
                            Volatile.Write(ref _closeSeen, 1);
                            if (relay.Tracker.IsAtFrameBoundary)
                            {
                                // The answer to the gateway's close frame: this side's handshake is done.
                                return;
                            }
                        }
                        break;
                    }

                    var stopping = _isWebSocket && CloseRequested && !CloseSeen;
                    var count = read - offset;
                    if (_isWebSocket)
                    {
                        count = relay.Tracker.Advance(buffer.AsSpan(offset, count), stopping);
                        if (relay.Tracker.CloseSeen)
                        {
                            // Set before the frame is relayed: from now on no close frame of the gateway's goes out.
                            Volatile.Write(ref _closeSeen, 1);
                        }
                    }
                    if (count > 0)
                    {
                        await relay.Destination.WriteAsync(buffer.AsMemory(offset, count), cancellationToken);
                        await relay.Destination.FlushAsync(cancellationToken);
                        if (relay.ToUpstream)
                        {
                            session.RequestBodyBytes += count;
                        }
                        else
                        {
                            session.ResponseBodyBytes += count;
                        }
                        offset += count;
                    }
                    if (stopping && relay.Tracker.IsAtFrameBoundary && !relay.Tracker.CloseSeen && !CloseSeen)
                    {
                        Interlocked.Exchange(ref relay.State, Closed);
                        await WriteCloseFrameAsync(relay, cancellationToken);
                        draining = true;
                    }
                }
            }
        }
        catch (Exception)
        {
            // Cancellation, a reset or an abort on either side ends this direction, and so the tunnel; the runner
            // logs the request once.
        }
        finally
        {
            // A relay keeps the state Closed from its close frame to its end.
            relay.EndedAfterClose = Interlocked.Exchange(ref relay.State, Ended) == Closed;
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>One direction: its streams, its frame tracker and its state.</summary>
    private sealed class Relay(Stream source, Stream destination, bool toUpstream)
    {
        public readonly Stream Source = source;
        public readonly Stream Destination = destination;

        /// <summary>True toward the upstream: the gateway's frames are then client frames, masked (RFC 6455 §5.3).</summary>
        public readonly bool ToUpstream = toUpstream;

        /// <summary>Touched by the pump only, and by nobody while the relay is parked.</summary>
        public WebSocketFrameTracker Tracker;

        public int State;

        /// <summary>True when the relay had sent its close frame (or CloseAsync had taken it to) when it ended.</summary>
        public bool EndedAfterClose;

        /// <summary>Set by CloseAsync when it may write this relay's close frame; completes when that is done.</summary>
        public TaskCompletionSource? Injection;

        public Task WaitForInjectionAsync() => Volatile.Read(ref Injection)?.Task ?? Task.CompletedTask;
    }
}
