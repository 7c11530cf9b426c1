using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Portico.Threading;

namespace Portico.Server.Epoll;

/// <summary>
/// One non-blocking socket registered with an <see cref="EpollLoop"/>: receive and send straight through libc (or, for
/// a batch's receives and held sends, the loop's <see cref="IoRing"/>), with the socket's readiness kept here. Each read-side event of the loop bumps <see cref="_readEvents"/>; a receive that
/// returns less than it asked for (or EAGAIN) records the count it saw before the call as "drained". Until the count
/// moves on, the socket has nothing to read (edge-triggered epoll reports every arrival after that), so a read waits
/// for the loop instead of trying a receive(2) that would fail with EAGAIN. Sends are tried first and wait for a
/// write-side event only when the socket's buffer is full.
/// </summary>
/// <remarks>
/// <para>
/// A small send made on the socket's own loop thread, while the loop works through a batch of events, is held and
/// made at the end of the batch (<see cref="EpollLoop.Defer"/>), as HAProxy sends at the end of each pass of its poll
/// loop: the sends of one pass reach the peers (the clients, the upstream servers) close together, so a peer wakes
/// once for several of them instead of once for each, which costs the peer and the waker (a wake-up, often an
/// inter-processor interrupt) for every request. <c>PORTICO_DEFER_SENDS=0</c> turns it off. Held bytes always go out
/// before any later send, a close, or a shutdown (<see cref="FlushDeferred"/>).
/// </para>
/// One reader and one writer at a time, as a socket's owners use it; a second read-side waiter
/// (<see cref="WaitForReadEventAsync"/>, the client-close watch) may wait beside the reader. <see cref="Close"/> takes
/// the socket out of the loop and fails the waiters with <see cref="ObjectDisposedException"/>; the owner then disposes
/// the <see cref="Socket"/>. Every call holds a reference on the socket's handle, so a close on another thread never
/// lets a call reach a reused descriptor.
/// </remarks>
internal sealed class EpollSocket : IThreadPoolWorkItem
{
    /// <summary>The environment variable that turns held sends off ("0").</summary>
    public const string DeferVariable = "PORTICO_DEFER_SENDS";

    private static readonly bool DeferSends = Environment.GetEnvironmentVariable(DeferVariable) != "0";

    private readonly EpollLoop _loop;

    // Sends held until the end of the loop's batch (see the remarks): a pooled 4 KiB buffer while bytes are held,
    // guarded by _heldGate (taken without contention on the loop thread; a close or a send on another thread may
    // race with the loop's flush). _drain is the rest of a flush the socket's buffer had no room for.
    private byte[]? _held;
    private int _heldLength;
    private int _heldGate;
    private bool _flushQueued;
    private bool _inRing;
    private bool _ringHandleAdded;
    private int _ringSeen;
    private Task? _drain;
    private int _readEvents;
    private int _drainedAt = -1;
    private int _writeEvents;
    private Waiter? _reader;
    private Waiter? _watcher;
    private Waiter? _writer;
    private volatile bool _closed;
    private volatile bool _ended;

    internal EpollSocket(Socket socket, SafeSocketHandle handle, int fd, EpollLoop loop, int slot, uint generation)
    {
        Socket = socket;
        Handle = handle;
        Fd = fd;
        _loop = loop;
        Slot = slot;
        Token = ((ulong)generation << 32) | (uint)slot;
    }

    public Socket Socket { get; }

    internal SafeSocketHandle Handle { get; }

    internal int Fd { get; }

    internal int Slot { get; }

    internal ulong Token { get; }

    /// <summary>How many flushes of held bytes went out through the loop's io_uring (tests; loop thread only).</summary>
    internal int RingSends { get; private set; }

    /// <summary>How many receives the loop made for this socket's reader through its io_uring (tests; loop thread only).</summary>
    internal int RingReceives { get; private set; }

    /// <summary>False once a read found the socket empty and no event has come since: a read now would block.</summary>
    public bool MayBeReadable => Volatile.Read(ref _readEvents) != _drainedAt || _hasStaged || _ended || _closed;

    private const uint ReadSide = EpollNative.EpollIn | EpollNative.EpollRdHup | EpollNative.EpollHup | EpollNative.EpollErr;
    private const uint WriteSide = EpollNative.EpollOut | EpollNative.EpollHup | EpollNative.EpollErr;

    /// <summary>Called by the loop with the events epoll reported for this socket (<see cref="NoteEvents"/>, then <see cref="FireEvents"/>).</summary>
    internal void OnEvents(uint events)
    {
        NoteEvents(events, null);
        FireEvents(events);
    }

    /// <summary>
    /// The first half of an event, before any continuation of the batch runs: the event is counted, and with
    /// <paramref name="ring"/> a reader that waits is taken (<see cref="Waiter.TryClaim"/>) and a receive is queued for
    /// it (<see cref="StageReceive"/>); the loop submits those together, then fires.
    /// </summary>
    internal void NoteEvents(uint events, IoRing? ring)
    {
        if ((events & ReadSide) != 0)
        {
            if ((events & (EpollNative.EpollRdHup | EpollNative.EpollHup | EpollNative.EpollErr)) != 0)
            {
                // Sticky: the peer's end (or an error) reaches a read after any data before it, but it raises no
                // event of its own when it came with that data, so a short read must not make the socket look empty.
                _ended = true;
            }
            var seen = Interlocked.Increment(ref _readEvents);
            if (ring is not null && !_hasStaged && _reader is { } reader && reader.TryClaim())
            {
                _readerClaimed = true;
                StageReceive(ring, seen);
            }
        }
        if ((events & WriteSide) != 0)
        {
            Interlocked.Increment(ref _writeEvents);
        }
    }

    /// <summary>The second half of an event: whoever waits for it runs (on the loop's thread).</summary>
    internal void FireEvents(uint events)
    {
        if ((events & ReadSide) != 0)
        {
            if (_readerClaimed)
            {
                _readerClaimed = false;
                _reader!.RunClaimed();
            }
            else
            {
                _reader?.Fire();
            }
            _watcher?.Fire();
        }
        if ((events & WriteSide) != 0)
        {
            _writer?.Fire();
        }
    }

    // ---- receives made by the loop's ring ----

    // A receive the loop made for the waiting reader (StageReceive), into a pinned buffer of the held pool, and not yet
    // taken by a Receive: _staged[_stagedStart.._stagedEnd], or an error to report (_stagedError). Set on the loop's
    // thread while the reader is claimed (so before the reader runs); read and emptied by the reader.
    private byte[]? _staged;
    private int _stagedStart;
    private int _stagedEnd;
    private SocketError _stagedError;
    private bool _hasStaged;
    private bool _readerClaimed;
    private bool _stageHandleAdded;
    private int _stageSeen;

    /// <summary>Queues a receive on the ring for the reader this event woke (claimed by the caller).</summary>
    private void StageReceive(IoRing ring, int seen)
    {
        if (_closed || !ReferenceForRing(ref _stageHandleAdded))
        {
            return;
        }
        _stageSeen = seen;
        var buffer = BufferPool.Held.Rent();
        _staged = buffer;
        ring.QueueReceive(this, Fd, buffer);
    }

    /// <summary>
    /// Takes a reference on the socket's handle for an entry on the ring, so its descriptor cannot be closed (and
    /// reused) before the submission is done; false once the socket is closed. <see cref="ReleaseForRing"/> gives it back.
    /// </summary>
    private bool ReferenceForRing(ref bool referenced)
    {
        try
        {
            Handle.DangerousAddRef(ref referenced);
        }
        catch (ObjectDisposedException)
        {
        }
        return referenced;
    }

    private void ReleaseForRing(ref bool referenced)
    {
        if (referenced)
        {
            referenced = false;
            Handle.DangerousRelease();
        }
    }

    /// <summary>
    /// The ring's result for <see cref="StageReceive"/>: bytes kept for the reader's next <see cref="Receive(Span{byte}, out SocketError)"/>, the
    /// peer's end, nothing (-EAGAIN: the socket is empty), an error kept for the reader, or
    /// <see cref="IoRing.RingNotTaken"/> (the reader receives by itself).
    /// </summary>
    internal void CompleteRingReceive(int result)
    {
        ReleaseForRing(ref _stageHandleAdded);
        var buffer = _staged!;
        if (result > 0)
        {
            RingReceives++;
            _stagedStart = 0;
            _stagedEnd = result;
            if (result < buffer.Length)
            {
                // Less than asked: empty as of this event, as a short recv(2) says (Receive).
                _drainedAt = _stageSeen;
            }
            Volatile.Write(ref _hasStaged, true);   // after the fields above, for a peek on another thread
            return;
        }
        _staged = null;
        BufferPool.Held.Return(buffer);
        if (result == 0)
        {
            _ended = true;
        }
        else if (result == -EpollNative.EAgain)
        {
            _drainedAt = _stageSeen;
        }
        else if (result != IoRing.RingNotTaken && result != -EpollNative.EIntr)
        {
            _stagedError = Errors.FromErrno(-result);
            _hasStaged = true;
        }
    }

    /// <summary>
    /// Bytes the loop received for the reader that the reader has not taken (its buffer had less room), taken out now;
    /// null when there are none. For a hand-over of the socket to .NET's engine: they come after what the reader holds.
    /// </summary>
    public byte[]? TakeStaged()
    {
        if (!_hasStaged || _staged is not { } staged)
        {
            return null;
        }
        var rest = staged.AsSpan(_stagedStart, _stagedEnd - _stagedStart).ToArray();
        _staged = null;
        _hasStaged = _stagedError != SocketError.Success;
        BufferPool.Held.Return(staged);
        return rest;
    }

    /// <summary>
    /// A receive served from what the loop received for this reader (<see cref="StageReceive"/>); false when there is
    /// nothing after all (a peek on another thread that met the reader taking the last bytes): the caller receives.
    /// </summary>
    private bool TryReceiveStaged(Span<byte> buffer, int flags, out int taken, out SocketError error)
    {
        var peek = (flags & EpollNative.MsgPeek) != 0;
        if (_stagedError != SocketError.Success)
        {
            error = _stagedError;
            taken = 0;
            if (!peek)
            {
                _stagedError = SocketError.Success;
                _hasStaged = _staged is not null;
            }
            return true;
        }
        var staged = _staged;
        if (staged is null)
        {
            taken = 0;
            error = SocketError.Success;
            return false;
        }
        taken = Math.Min(_stagedEnd - _stagedStart, buffer.Length);
        staged.AsSpan(_stagedStart, taken).CopyTo(buffer);
        error = SocketError.Success;
        if (peek)
        {
            return true;
        }
        _stagedStart += taken;
        if (_stagedStart < _stagedEnd)
        {
            return true;
        }
        var full = _stagedEnd == staged.Length;
        _hasStaged = false;
        _staged = null;
        BufferPool.Held.Return(staged);
        if (!full || taken == buffer.Length)
        {
            return true;
        }
        // The loop's receive filled its buffer, so more may be waiting (a large body): read on into the rest, as one
        // receive of the caller's size would have.
        var more = Receive(buffer[taken..], flags, out var next);
        if (next == SocketError.Success)
        {
            taken += more;
        }
        else if (next != SocketError.WouldBlock)
        {
            // Reported at the next receive: these bytes come first.
            _stagedError = next;
            _hasStaged = true;
        }
        return true;
    }

    // ---- reading ----

    /// <summary>
    /// One receive(2) into <paramref name="buffer"/>: the bytes read (0: the peer ended its side), or
    /// <see cref="SocketError.WouldBlock"/> when there is nothing yet. Throws <see cref="ObjectDisposedException"/> once
    /// the socket is closed.
    /// </summary>
    public int Receive(Span<byte> buffer, out SocketError error) => Receive(buffer, 0, out error);

    private unsafe int Receive(Span<byte> buffer, int flags, out SocketError error)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        if (_hasStaged && TryReceiveStaged(buffer, flags, out var taken, out error))
        {
            return taken;
        }
        var seen = Volatile.Read(ref _readEvents);
        var added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (true)
            {
                nint n;
                fixed (byte* p = &MemoryMarshal.GetReference(buffer))
                {
                    n = EpollNative.Recv(Fd, p, buffer.Length, flags);
                }
                if (n >= 0)
                {
                    // Less than asked: the socket is empty now, unless the peer's end follows the data (_ended).
                    if (n > 0 && n < buffer.Length && flags == 0)
                    {
                        _drainedAt = seen;
                    }
                    else if (n == 0 && buffer.Length > 0)
                    {
                        _ended = true;
                    }
                    error = SocketError.Success;
                    return (int)n;
                }
                var errno = Marshal.GetLastSystemError();   // -1: errno is the reason (see EpollNative.Recv)
                if (errno == EpollNative.EIntr)
                {
                    continue;
                }
                if (errno == EpollNative.EAgain)
                {
                    if (flags == 0)
                    {
                        _drainedAt = seen;
                    }
                    error = SocketError.WouldBlock;
                    return 0;
                }
                error = Errors.FromErrno(errno);
                return 0;
            }
        }
        finally
        {
            if (added)
            {
                Handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Receives at least one byte (0: the end). When the socket is empty the receive is left with the loop, which makes
    /// it at the next event and completes the returned task with what it got: no asynchronous frame, nothing allocated.
    /// </summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (MayBeReadable)
            {
                var n = Receive(buffer.Span, out var error);
                if (error == SocketError.Success)
                {
                    return new ValueTask<int>(n);
                }
                if (error != SocketError.WouldBlock)
                {
                    return ValueTask.FromException<int>(new SocketException((int)error));
                }
            }
            var waiter = _reader ??= new Waiter(this, WaiterKind.Read);
            if (waiter.TryArmReceive(buffer, _drainedAt, cancellationToken))
            {
                return new ValueTask<int>(waiter, waiter.Version);
            }
            // An event (or the end, or a close) came meanwhile: look again.
        }
    }

    /// <summary>
    /// Asks the loop to call <paramref name="callback"/> once the socket may have something to read (or is closed);
    /// false when it may have now (nothing is armed then). For a reader that keeps its own state
    /// (<see cref="SocketInput"/>), so a read that waits needs no asynchronous frame.
    /// </summary>
    public bool TryCallWhenReadable(Action<object?> callback, object state)
    {
        var drainedAt = _drainedAt;
        if (Volatile.Read(ref _readEvents) != drainedAt || _hasStaged || _ended || _closed)
        {
            return false;
        }
        return (_reader ??= new Waiter(this, WaiterKind.Read)).TryArmCallback(drainedAt, callback, state);
    }

    /// <summary>Completes when a read may find something (at once unless the last read emptied the socket).</summary>
    public ValueTask WaitReadableAsync(CancellationToken cancellationToken = default)
    {
        var drainedAt = _drainedAt;
        if (Volatile.Read(ref _readEvents) != drainedAt || _hasStaged || _ended || _closed)
        {
            return default;
        }
        return (_reader ??= new Waiter(this, WaiterKind.Read)).Arm(drainedAt, cancellationToken);
    }

    /// <summary>
    /// For a second party beside the reader (the client-close watch): completes at the next read-side event after
    /// <paramref name="seen"/> (a value of <see cref="ReadEvents"/>), or at once if there was one.
    /// </summary>
    public ValueTask WaitForReadEventAsync(int seen, CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _readEvents) != seen || _closed)
        {
            return default;
        }
        return (_watcher ??= new Waiter(this, WaiterKind.Watch)).Arm(seen, cancellationToken);
    }

    /// <summary>How many read-side events the loop has seen (for <see cref="WaitForReadEventAsync"/>).</summary>
    public int ReadEvents => Volatile.Read(ref _readEvents);

    /// <summary>A one-byte MSG_PEEK receive: 1 when data is waiting, 0 at the end, WouldBlock when neither.</summary>
    public unsafe int Peek(out SocketError error)
    {
        byte one;
        return Receive(new Span<byte>(&one, 1), EpollNative.MsgPeek, out error);
    }

    // ---- writing ----

    /// <summary>One send(2): the bytes taken (possibly fewer than given), or <see cref="SocketError.WouldBlock"/>.</summary>
    public unsafe int Send(ReadOnlySpan<byte> buffer, out SocketError error)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        var added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (true)
            {
                nint n;
                fixed (byte* p = &MemoryMarshal.GetReference(buffer))
                {
                    n = EpollNative.Send(Fd, p, buffer.Length, EpollNative.MsgNoSignal);
                }
                if (n >= 0)
                {
                    error = SocketError.Success;
                    return (int)n;
                }
                var errno = Marshal.GetLastSystemError();   // -1: errno is the reason (see EpollNative.Recv)
                if (errno == EpollNative.EIntr)
                {
                    continue;
                }
                error = errno == EpollNative.EAgain ? SocketError.WouldBlock : Errors.FromErrno(errno);
                return 0;
            }
        }
        finally
        {
            if (added)
            {
                Handle.DangerousRelease();
            }
        }
    }

    /// <summary>Sends all of <paramref name="buffer"/>, waiting for room when the socket's buffer is full.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (DeferSends && buffer.Length <= BufferPool.Held.Size && _loop.IsCurrent && TryHold(buffer.Span))
        {
            return default;
        }
        if (Volatile.Read(ref _heldLength) != 0 || _drain is not null)
        {
            // Bytes held earlier go first.
            if (!FlushDeferred())
            {
                return SendAfterDrainAsync(buffer, cancellationToken);
            }
        }
        return SendNowAsync(buffer, cancellationToken);
    }

    private ValueTask SendNowAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        var seen = Volatile.Read(ref _writeEvents);
        var sent = Send(buffer.Span, out var error);
        if (error == SocketError.Success && sent == buffer.Length)
        {
            return default;
        }
        if (error is not (SocketError.Success or SocketError.WouldBlock))
        {
            return ValueTask.FromException(new SocketException((int)error));
        }
        return SendSlowAsync(buffer[sent..], seen, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask SendSlowAsync(ReadOnlyMemory<byte> rest, int seen, CancellationToken cancellationToken)
    {
        while (true)
        {
            await WaitWritableAsync(seen, cancellationToken);
            seen = Volatile.Read(ref _writeEvents);
            var sent = Send(rest.Span, out var error);
            if (error is not (SocketError.Success or SocketError.WouldBlock))
            {
                throw new SocketException((int)error);
            }
            rest = rest[sent..];
            if (rest.IsEmpty)
            {
                return;
            }
        }
    }

    /// <summary>Holds <paramref name="bytes"/> until the end of the loop's batch; false when they do not fit (sent now instead).</summary>
    private bool TryHold(ReadOnlySpan<byte> bytes)
    {
        if (_closed || _drain is not null)
        {
            return false;
        }
        EnterHeld();
        try
        {
            if (_heldLength + bytes.Length > BufferPool.Held.Size)
            {
                return false;
            }
            _held ??= BufferPool.Held.Rent();
            bytes.CopyTo(_held.AsSpan(_heldLength));
            Volatile.Write(ref _heldLength, _heldLength + bytes.Length);
        }
        finally
        {
            ExitHeld();
        }
        if (!_flushQueued)
        {
            _flushQueued = true;
            if (!EpollLoop.Defer(this))
            {
                // Not on a loop thread after all (cannot happen: the caller checked): nothing would flush them later.
                _flushQueued = false;
                FlushDeferred();
            }
        }
        return true;
    }

    /// <summary>
    /// The end of the loop's batch: the held bytes go out, queued on the loop's io_uring when it has one (the loop
    /// submits the queue once the batch's deferred work is done), else with a send(2) now.
    /// </summary>
    void IThreadPoolWorkItem.Execute()
    {
        _flushQueued = false;
        if (_loop.Ring is not { } ring || !TryQueueOnRing(ring))
        {
            FlushDeferred();
        }
    }

    /// <summary>
    /// Queues the held bytes on <paramref name="ring"/>; false when they must go out by send(2) instead (a drain is
    /// under way). The gate stays taken, and the handle referenced, until the ring hands back the result
    /// (<see cref="CompleteRingSend"/>): until then no other send, flush or close can slip in before these bytes. A
    /// party on the loop's own thread that wants the gate meanwhile submits the ring first (<see cref="EnterHeld"/>).
    /// </summary>
    private bool TryQueueOnRing(IoRing ring)
    {
        if (_drain is not null)
        {
            return false;
        }
        EnterHeld();
        var length = _heldLength;
        var held = _held;
        if (length == 0 || held is null || _closed)
        {
            ExitHeld();
            return length == 0 || held is null;
        }
        if (!ReferenceForRing(ref _ringHandleAdded))
        {
            ExitHeld();
            return false;
        }
        _ringSeen = Volatile.Read(ref _writeEvents);
        _inRing = true;
        ring.QueueSend(this, Fd, held, length);
        return true;
    }

    /// <summary>
    /// The ring's result for the bytes <see cref="TryQueueOnRing"/> queued (on the loop's thread, with the gate still
    /// taken): the bytes sent, a negative errno, or <see cref="IoRing.RingNotTaken"/> (the kernel took nothing: the
    /// bytes go out by send(2)). A short send leaves the rest to drain as room comes, as <see cref="FlushDeferred"/> does.
    /// </summary>
    internal void CompleteRingSend(int result)
    {
        _inRing = false;
        ReleaseForRing(ref _ringHandleAdded);
        if (result == IoRing.RingNotTaken)
        {
            ExitHeld();
            FlushDeferred();
            return;
        }
        RingSends++;
        try
        {
            var length = _heldLength;
            var held = _held!;
            // -EAGAIN: no room at all; any other error drops the bytes (the owner's next receive meets it), as a send(2) would.
            var sent = result >= 0 ? result : result == -EpollNative.EAgain ? 0 : length;
            Sent(held, sent, length, _ringSeen);
        }
        finally
        {
            ExitHeld();
        }
    }

    /// <summary>
    /// Sends the bytes held for the end of the batch now (before a shutdown of the socket by its owner, say). True when
    /// nothing is left held; false when the socket's buffer was full and the rest goes out as room comes (in order,
    /// before any later send). Any thread.
    /// </summary>
    public bool FlushDeferred()
    {
        if (Volatile.Read(ref _heldLength) == 0)
        {
            var pending = _drain;
            if (pending is null)
            {
                return true;
            }
            if (pending.IsCompleted)
            {
                _drain = null;   // failed or not, the bytes before are done with
                return true;
            }
            return false;
        }
        EnterHeld();
        try
        {
            var length = _heldLength;
            var held = _held;
            if (length == 0 || held is null)
            {
                return _drain is null;
            }
            var seen = Volatile.Read(ref _writeEvents);
            var sent = length;   // closed, or the send failed: dropped (the owner's next receive meets the error)
            if (!_closed)
            {
                try
                {
                    var n = Send(held.AsSpan(0, length), out var error);
                    if (error is SocketError.Success or SocketError.WouldBlock)
                    {
                        sent = n;
                    }
                }
                catch (ObjectDisposedException)
                {
                }
            }
            Sent(held, sent, length, seen);
            return sent == length;
        }
        finally
        {
            ExitHeld();
        }
    }

    /// <summary>
    /// The held bytes were sent up to <paramref name="sent"/> of <paramref name="length"/> (with the gate taken): a rest
    /// the socket had no room for (a peer that does not read) becomes the drain, which goes out as room comes. The drain
    /// is set before the held length is cleared: a send on another thread that finds nothing held, without the gate,
    /// must then find the drain and wait for it (it once found neither, and its bytes overtook the rest).
    /// </summary>
    private void Sent(byte[] held, int sent, int length, int seen)
    {
        if (sent < length)
        {
            _drain = SendSlowAsync(held.AsSpan(sent, length - sent).ToArray(), seen, default).AsTask();
        }
        _held = null;
        Volatile.Write(ref _heldLength, 0);
        BufferPool.Held.Return(held);
    }

    /// <summary><see cref="FlushDeferred"/>, then waits until a rest the socket had no room for is out too.</summary>
    public async ValueTask FlushDeferredAsync(CancellationToken cancellationToken)
    {
        if (!FlushDeferred() && _drain is { } drain)
        {
            await drain.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async ValueTask SendAfterDrainAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        if (_drain is { } drain)
        {
            await drain.WaitAsync(cancellationToken).ConfigureAwait(false);
            _drain = null;
        }
        await SendNowAsync(buffer, cancellationToken).ConfigureAwait(false);
    }

    private void EnterHeld()
    {
        if (Interlocked.CompareExchange(ref _heldGate, 1, 0) != 0)
        {
            EnterHeldContended();
        }
    }

    private void EnterHeldContended()
    {
        var spinner = default(SpinWait);
        while (Interlocked.CompareExchange(ref _heldGate, 1, 0) != 0)
        {
            if (_inRing && _loop.IsCurrent)
            {
                // Taken by this thread's own queued send (TryQueueOnRing): submitting the ring completes it.
                _loop.Ring!.Submit();
                continue;
            }
            spinner.SpinOnce();
        }
    }

    private void ExitHeld() => Volatile.Write(ref _heldGate, 0);

    /// <summary>Completes at the next write-side event after <paramref name="seen"/> (a value read before the send that found no room).</summary>
    private ValueTask WaitWritableAsync(int seen, CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _writeEvents) != seen || _closed)
        {
            return default;
        }
        return (_writer ??= new Waiter(this, WaiterKind.Write)).Arm(seen, cancellationToken);
    }

    // ---- connecting ----

    /// <summary>
    /// Opens a non-blocking TCP socket to <paramref name="endPoint"/> (Nagle off), registered with a loop, without
    /// .NET's socket engine: connect(2), then the loop's first write-side event, then SO_ERROR. Null when the own loops
    /// are off (the caller connects as before). Cancelled by <paramref name="cancellationToken"/> (the connect timeout).
    /// </summary>
    public static async ValueTask<EpollSocket?> ConnectAsync(IPEndPoint endPoint, CancellationToken cancellationToken, bool evenIfOff = false)
    {
        if (!evenIfOff && !EpollLoop.Enabled)
        {
            return null;
        }
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, Blocking = false };
        EpollSocket? io = null;
        try
        {
            var pending = false;
            try
            {
                // Non-blocking: connect(2) returns at once, EINPROGRESS while the handshake runs.
                socket.Connect(endPoint);
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
                pending = true;
            }
            // Registered after connect(2): an unconnected socket reports itself hung up. If the handshake is done by
            // now, the registration reports the socket writable at once.
            io = EpollLoop.RegisterOnLoops(socket);
            if (io is null)
            {
                socket.Dispose();
                return null;
            }
            var seen = 0;
            while (pending)
            {
                await io.WaitWritableAsync(seen, cancellationToken);
                seen = Volatile.Read(ref io._writeEvents);
                var errno = PendingError(socket);
                if (errno != 0)
                {
                    throw new SocketException((int)Errors.FromErrno(errno));
                }
                // Writable means connected; an event from before the end of the handshake means wait on.
                pending = !socket.Poll(0, SelectMode.SelectWrite);
            }
            return io;
        }
        catch
        {
            io?.Close();
            socket.Dispose();
            throw;
        }
    }

    /// <summary>SO_ERROR: the errno of a connect that failed, 0 when none did.</summary>
    private static int PendingError(Socket socket)
    {
        Span<byte> value = stackalloc byte[4];
        socket.GetRawSocketOption(1 /* SOL_SOCKET */, 4 /* SO_ERROR */, value);
        return MemoryMarshal.Read<int>(value);
    }

    /// <summary>
    /// Takes the socket out of its loop and fails whoever waits on it (<see cref="ObjectDisposedException"/>); the
    /// owner then disposes the socket, or goes on with .NET's socket engine (a hand-over to Kestrel).
    /// </summary>
    public void Close()
    {
        if (_closed)
        {
            return;
        }
        FlushDeferred();   // a response held for the end of the batch still goes out (one try: the owner is closing)
        _closed = true;
        _loop.Unregister(this);
        _reader?.Fire();
        _watcher?.Fire();
        _writer?.Fire();
    }

    private enum WaiterKind
    {
        Read,
        Watch,
        Write,
    }

    /// <summary>
    /// One party waiting for this socket's events, reused for every wait: a readiness wait (<see cref="IValueTaskSource"/>),
    /// a receive the loop makes when the event comes (<see cref="IValueTaskSource{Int32}"/>), or a callback.
    /// </summary>
    /// <remarks>
    /// <see cref="_armed"/> decides who completes a wait: the loop's event, a close, or a cancellation, whichever takes
    /// it from 1 to 0 first. A cancellation registration is made before arming and disposed in GetResult (which waits
    /// for a callback running elsewhere), so a late cancellation can never reach a later wait.
    /// </remarks>
    private sealed class Waiter(EpollSocket owner, WaiterKind kind) : IValueTaskSource, IValueTaskSource<int>
    {
        private ManualResetValueTaskSourceCore<int> _core;
        private int _armed;
        private CancellationTokenRegistration _cancellation;
        private Memory<byte> _receiveInto;
        private bool _receiving;
        private Action<object?>? _callback;
        private object? _callbackState;

        public short Version => _core.Version;

        /// <summary>Something happened after <paramref name="seen"/> (an event, the peer's end, a close): no wait.</summary>
        private bool Happened(int seen) => owner._closed
            || (kind == WaiterKind.Write ? Volatile.Read(ref owner._writeEvents) != seen : Volatile.Read(ref owner._readEvents) != seen)
            || (kind == WaiterKind.Read && (owner._ended || owner._hasStaged));

        /// <summary>Arms; false when something happened since <paramref name="seen"/> and the arming was taken back.</summary>
        private bool TryArm(int seen)
        {
            Interlocked.Exchange(ref _armed, 1);
            // An event that came between the caller's look and the arming is not missed: looked at again.
            return !Happened(seen) || Interlocked.Exchange(ref _armed, 0) == 0;
        }

        public ValueTask Arm(int seen, CancellationToken cancellationToken)
        {
            _core.Reset();
            _receiving = false;
            if (!Register(seen, cancellationToken))
            {
                return owner._closed ? ValueTask.FromException(new ObjectDisposedException(nameof(EpollSocket))) : default;
            }
            return new ValueTask(this, _core.Version);
        }

        public bool TryArmReceive(Memory<byte> buffer, int seen, CancellationToken cancellationToken)
        {
            _core.Reset();
            _receiving = true;
            _receiveInto = buffer;
            if (!Register(seen, cancellationToken))
            {
                _receiveInto = default;
                return false;
            }
            return true;
        }

        public bool TryArmCallback(int seen, Action<object?> callback, object state)
        {
            _receiving = false;
            _callback = callback;
            _callbackState = state;
            if (TryArm(seen))
            {
                return true;
            }
            _callback = null;
            _callbackState = null;
            return false;
        }

        private bool Register(int seen, CancellationToken cancellationToken)
        {
            if (cancellationToken.CanBeCanceled)
            {
                _cancellation = cancellationToken.UnsafeRegister(static (state, token) => ((Waiter)state!).Cancel(token), this);
            }
            if (!TryArm(seen))
            {
                var registration = _cancellation;
                _cancellation = default;
                registration.Dispose();
                return false;
            }
            if (cancellationToken.IsCancellationRequested)
            {
                // Cancelled before it was armed: the registration's callback found nothing to cancel.
                Cancel(cancellationToken);
            }
            return true;
        }

        /// <summary>The loop saw an event (or the socket closed): the wait, if armed, completes here.</summary>
        public void Fire()
        {
            if (TryClaim())
            {
                RunClaimed();
            }
        }

        /// <summary>Takes the armed wait for the caller, who must then <see cref="RunClaimed"/>: nothing else can complete it meanwhile.</summary>
        public bool TryClaim() => Volatile.Read(ref _armed) == 1 && Interlocked.Exchange(ref _armed, 0) == 1;

        /// <summary>Completes a wait taken by <see cref="TryClaim"/>.</summary>
        public void RunClaimed()
        {
            while (true)
            {
                if (_callback is { } callback)
                {
                    var state = _callbackState;
                    _callback = null;
                    _callbackState = null;
                    callback(state);
                    return;
                }
                if (owner._closed)
                {
                    _receiveInto = default;
                    _core.SetException(new ObjectDisposedException(nameof(EpollSocket)));
                    return;
                }
                if (!_receiving)
                {
                    _core.SetResult(0);
                    return;
                }
                int n;
                SocketError error;
                try
                {
                    n = owner.Receive(_receiveInto.Span, out error);
                }
                catch (Exception ex)
                {
                    _receiveInto = default;
                    _core.SetException(ex);
                    return;
                }
                if (error == SocketError.WouldBlock)
                {
                    // The bytes went to an earlier read: wait for the next event (or take it, if it came already).
                    if (TryArm(owner._drainedAt) || !TryClaim())
                    {
                        return;
                    }
                    continue;
                }
                _receiveInto = default;
                if (error == SocketError.Success)
                {
                    _core.SetResult(n);
                }
                else
                {
                    _core.SetException(new SocketException((int)error));
                }
                return;
            }
        }

        private void Cancel(CancellationToken token)
        {
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                _receiveInto = default;
                _core.SetException(new OperationCanceledException(token));
            }
        }

        private int Finish(short token)
        {
            var registration = _cancellation;
            _cancellation = default;
            registration.Dispose();
            return _core.GetResult(token);
        }

        void IValueTaskSource.GetResult(short token) => Finish(token);

        int IValueTaskSource<int>.GetResult(short token) => Finish(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
            => Threading.PooledBox.OnCompleted(ref _core, continuation, state, token, flags);
    }

    /// <summary>Linux errno values to <see cref="SocketError"/>, for the errors a connected TCP socket reports.</summary>
    internal static class Errors
    {
        public static SocketError FromErrno(int errno) => errno switch
        {
            104 => SocketError.ConnectionReset,       // ECONNRESET
            32 => SocketError.Shutdown,               // EPIPE
            107 => SocketError.NotConnected,          // ENOTCONN
            110 => SocketError.TimedOut,              // ETIMEDOUT
            111 => SocketError.ConnectionRefused,     // ECONNREFUSED
            103 => SocketError.ConnectionAborted,     // ECONNABORTED
            113 => SocketError.HostUnreachable,       // EHOSTUNREACH
            101 => SocketError.NetworkUnreachable,    // ENETUNREACH
            100 => SocketError.NetworkDown,           // ENETDOWN
            9 => SocketError.OperationAborted,        // EBADF
            105 => SocketError.NoBufferSpaceAvailable, // ENOBUFS
            12 => SocketError.NoBufferSpaceAvailable, // ENOMEM
            _ => SocketError.SocketError,
        };
    }
}
