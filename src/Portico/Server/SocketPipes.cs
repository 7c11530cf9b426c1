using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;
using Microsoft.AspNetCore.Connections;
using Portico.Threading;

namespace Portico.Server;

/// <summary>
/// The read side of a <see cref="FastConnection"/>: a <see cref="PipeReader"/> straight over the socket, with no pipe,
/// no background receive loop and no buffer while the connection is idle. A read waits with a zero-byte receive
/// (readiness only), then rents one buffer (<see cref="BufferPool.Connection"/>) and receives into it; the buffer goes back as soon as
/// everything in it is consumed. Made for the one reader it has (<see cref="Http1ServerConnection"/>, and
/// <c>H2cPriorKnowledge</c> before it): one read at a time, as the <see cref="PipeReader"/> contract requires.
/// </summary>
/// <remarks>
/// <see cref="CancelPendingRead"/> (a timeout, a shutdown) also shuts the socket's receive side down, which is what
/// wakes a receive that is waiting: every caller of it ends the connection next.
/// </remarks>
internal sealed class SocketInput(Socket socket, Epoll.EpollSocket? io = null) : PipeReader, IValueTaskSource<ReadResult>
{
    private byte[]? _buffer;
    private int _start;
    private int _end;
    private bool _examinedAll = true;
    private bool _ended;
    private bool _readerCompleted;
    private volatile bool _cancelRequested;

    /// <summary>Bytes received and not yet consumed (the start of a request being handed to Kestrel).</summary>
    public ReadOnlySpan<byte> Unconsumed => _buffer is null ? default : _buffer.AsSpan(_start, _end - _start);

    /// <summary>True when the peer ended its side (a receive returned 0).</summary>
    public bool Ended => _ended;

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (_readerCompleted)
        {
            throw new InvalidOperationException("Reading is not allowed after the reader was completed.");
        }
        if (_cancelRequested)
        {
            _cancelRequested = false;
            return new ValueTask<ReadResult>(Result(canceled: true));
        }
        if (_ended || (_end > _start && !_examinedAll))
        {
            return new ValueTask<ReadResult>(Result(canceled: false));
        }
        return ReceiveAsync(cancellationToken);
    }

    public override bool TryRead(out ReadResult result)
    {
        if (_cancelRequested)
        {
            _cancelRequested = false;
            result = Result(canceled: true);
            return true;
        }
        if (_ended || (_end > _start && !_examinedAll))
        {
            result = Result(canceled: false);
            return true;
        }
        result = default;
        return false;
    }

    private ValueTask<ReadResult> ReceiveAsync(CancellationToken cancellationToken)
    {
        if (io is null)
        {
            return ReceiveOnSocketAsync(cancellationToken);
        }
        return cancellationToken.CanBeCanceled ? ReceiveOnLoopAsync(io, cancellationToken) : ReadOnLoop(io);
    }

    // ---- the read on the own event loop, without an asynchronous frame ----

    private static readonly Action<object?> OnReadable = static state => ((SocketInput)state!).ContinueOnLoop();
    private ManualResetValueTaskSourceCore<ReadResult> _core;
    private ReadResult _stepResult;
    private Exception? _stepError;

    private enum Step
    {
        Done,
        Failed,
        Wait,
    }

    /// <summary>
    /// The usual read of the own server: done at once when the socket has data, or left with the loop, which calls
    /// <see cref="ContinueOnLoop"/> at the socket's next event; the returned task is this reader itself, reused for
    /// every read, so a read that waits allocates nothing.
    /// </summary>
    private ValueTask<ReadResult> ReadOnLoop(Epoll.EpollSocket io)
    {
        while (true)
        {
            switch (TryStep(io))
            {
                case Step.Done:
                    return new ValueTask<ReadResult>(TakeResult());
                case Step.Failed:
                    return ValueTask.FromException<ReadResult>(TakeError());
            }
            _core.Reset();
            if (io.TryCallWhenReadable(OnReadable, this))
            {
                return new ValueTask<ReadResult>(this, _core.Version);
            }
        }
    }

    private void ContinueOnLoop()
    {
        while (true)
        {
            switch (TryStep(io!))
            {
                case Step.Done:
                    _core.SetResult(TakeResult());
                    return;
                case Step.Failed:
                    _core.SetException(TakeError());
                    return;
            }
            if (io!.TryCallWhenReadable(OnReadable, this))
            {
                return;
            }
        }
    }

    private ReadResult TakeResult()
    {
        var result = _stepResult;
        _stepResult = default;
        return result;
    }

    private Exception TakeError()
    {
        var error = _stepError!;
        _stepError = null;
        return error;
    }

    /// <summary>One receive if the socket may have data: Done (<see cref="_stepResult"/>), Failed (<see cref="_stepError"/>) or Wait.</summary>
    private Step TryStep(Epoll.EpollSocket io)
    {
        try
        {
            if (_buffer is null)
            {
                if (!io.MayBeReadable)
                {
                    return Step.Wait;
                }
                _buffer = BufferPool.Connection.Rent();
            }
            else if (_end == _buffer.Length)
            {
                MakeRoom();
            }
            else if (!io.MayBeReadable)
            {
                return Step.Wait;
            }
            var received = io.Receive(_buffer.AsSpan(_end), out var error);
            if (error == SocketError.WouldBlock)
            {
                if (_cancelRequested)
                {
                    _cancelRequested = false;
                    if (_end == _start)
                    {
                        ReleaseBuffer();
                    }
                    _stepResult = Result(canceled: true);
                    return Step.Done;
                }
                if (_end == _start)
                {
                    // Nothing buffered: wait without a buffer.
                    ReleaseBuffer();
                }
                return Step.Wait;
            }
            if (error != SocketError.Success)
            {
                _stepError = FastConnection.MapError(new SocketException((int)error));
                return Step.Failed;
            }
            if (received == 0)
            {
                _ended = true;
            }
            _end += received;
            _examinedAll = false;
            var canceled = _cancelRequested;
            _cancelRequested = false;
            _stepResult = Result(canceled);
            return Step.Done;
        }
        catch (ObjectDisposedException ex)
        {
            _stepError = new ConnectionAbortedException("the connection was aborted", ex);
            return Step.Failed;
        }
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => Threading.PooledBox.OnCompleted(ref _core, continuation, state, token, flags);

    /// <summary>
    /// With Portico's own event loop (<see cref="Epoll.EpollSocket"/>): the socket's readiness is known, so an emptied
    /// socket is not asked again before its next event, and no buffer is held while waiting for a request.
    /// </summary>
    private async ValueTask<ReadResult> ReceiveOnLoopAsync(Epoll.EpollSocket io, CancellationToken cancellationToken)
    {
        while (true)
        {
            switch (TryStep(io))
            {
                case Step.Done:
                    return TakeResult();
                case Step.Failed:
                    throw TakeError();
            }
            try
            {
                await io.WaitReadableAsync(cancellationToken);
            }
            catch (ObjectDisposedException)
            {
                // Closed while waiting: the next step's receive reports it (as a ConnectionAbortedException).
            }
        }
    }

    private async ValueTask<ReadResult> ReceiveOnSocketAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (_buffer is null)
            {
                // Idle: wait for readiness without a buffer, so an idle connection holds none.
                await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken);
                _buffer = BufferPool.Connection.Rent();
            }
            else if (_end == _buffer.Length)
            {
                MakeRoom();
            }
            // The socket is non-blocking (FastListener): after the readiness wait the data is usually there, and a
            // plain receive(2) takes it without an asynchronous operation; only "not yet" waits. Also after a
            // cancellation (which shut the receive side down to wake the wait): Linux still delivers what is queued,
            // so a request that arrived just as the server began to close is served (with Connection: close), not reset.
            var received = socket.Receive(_buffer, _end, _buffer.Length - _end, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                if (_cancelRequested)
                {
                    _cancelRequested = false;
                    if (_end == _start)
                    {
                        ReleaseBuffer();
                    }
                    return Result(canceled: true);
                }
                received = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken);
            }
            else if (error != SocketError.Success)
            {
                throw new SocketException((int)error);
            }
            if (received == 0)
            {
                _ended = true;
            }
            _end += received;
            _examinedAll = false;
            if (_cancelRequested)
            {
                _cancelRequested = false;
                return Result(canceled: true);
            }
            return Result(canceled: false);
        }
        catch (SocketException ex)
        {
            throw FastConnection.MapError(ex);
        }
        catch (ObjectDisposedException ex)
        {
            throw new ConnectionAbortedException("the connection was aborted", ex);
        }
    }

    /// <summary>The buffer is full: move what is unconsumed to its start, or grow it (a head longer than one buffer).</summary>
    private void MakeRoom()
    {
        var buffer = _buffer!;
        var length = _end - _start;
        if (_start > 0)
        {
            Buffer.BlockCopy(buffer, _start, buffer, 0, length);
        }
        else
        {
            var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
            Buffer.BlockCopy(buffer, 0, larger, 0, length);
            BufferPool.Connection.Return(buffer);
            _buffer = larger;
        }
        _start = 0;
        _end = length;
    }

    private ReadResult Result(bool canceled) =>
        new(_buffer is null ? default : new ReadOnlySequence<byte>(_buffer, _start, _end - _start), canceled, _ended);

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_buffer is null)
        {
            _examinedAll = true;
            return;
        }
        if (consumed.GetObject() is { } owner && !ReferenceEquals(owner, _buffer))
        {
            throw new InvalidOperationException("The position does not belong to the last read's buffer.");
        }
        var consumedIndex = consumed.GetObject() is null ? _start : consumed.GetInteger();
        var examinedIndex = examined.GetObject() is null ? consumedIndex : examined.GetInteger();
        if (consumedIndex < _start || consumedIndex > _end || examinedIndex < consumedIndex)
        {
            throw new InvalidOperationException("The position is outside the last read's buffer.");
        }
        _start = consumedIndex;
        _examinedAll = examinedIndex >= _end;
        if (_start == _end)
        {
            ReleaseBuffer();
        }
    }

    private void ReleaseBuffer()
    {
        if (_buffer is { } buffer)
        {
            _buffer = null;
            _start = _end = 0;
            _examinedAll = true;
            BufferPool.Connection.Return(buffer);
        }
    }

    public override void CancelPendingRead()
    {
        _cancelRequested = true;
        try
        {
            socket.Shutdown(SocketShutdown.Receive);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed: the read (if any) ends on its own.
        }
    }

    public override void Complete(Exception? exception = null)
    {
        _readerCompleted = true;
        ReleaseBuffer();
    }

    /// <summary>Gives up the buffer without completing (the bytes were copied elsewhere).</summary>
    public void Release() => ReleaseBuffer();
}

/// <summary>
/// The write side of a <see cref="FastConnection"/>: a <see cref="PipeWriter"/> that gathers what is written into one
/// pooled buffer and sends it on <see cref="FlushAsync"/>, straight from the caller (no pipe, no send loop). The buffer
/// goes back to the pool after each flush, so an idle connection holds none.
/// </summary>
internal sealed class SocketOutput(Socket socket, Epoll.EpollSocket? io = null) : PipeWriter
{
    private byte[]? _buffer;
    private int _length;
    private bool _completed;
    private volatile bool _cancelRequested;

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => _length;

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        EnsureRoom(sizeHint);
        return _buffer.AsMemory(_length);
    }

    public override Span<byte> GetSpan(int sizeHint = 0)
    {
        EnsureRoom(sizeHint);
        return _buffer.AsSpan(_length);
    }

    private void EnsureRoom(int sizeHint)
    {
        if (_completed)
        {
            throw new InvalidOperationException("Writing is not allowed after the writer was completed.");
        }
        var needed = Math.Max(sizeHint, 1);
        if (_buffer is null)
        {
            _buffer = BufferPool.Connection.Rent(needed);
        }
        else if (_buffer.Length - _length < needed)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_length + needed, _buffer.Length * 2));
            Buffer.BlockCopy(_buffer, 0, larger, 0, _length);
            BufferPool.Connection.Return(_buffer);
            _buffer = larger;
        }
    }

    public override void Advance(int bytes)
    {
        if ((uint)bytes > (uint)((_buffer?.Length ?? 0) - _length))
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "Advanced past the end of the buffer.");
        }
        _length += bytes;
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (_cancelRequested)
        {
            _cancelRequested = false;
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: true, isCompleted: false));
        }
        if (_length == 0)
        {
            Reset();
            return new ValueTask<FlushResult>(default(FlushResult));
        }
        if (io is not null)
        {
            return FlushOnLoop(io, cancellationToken);
        }
        ValueTask<int> send;
        try
        {
            // The socket is non-blocking (FastListener): a send that fits the socket's buffer, the usual case, is one
            // send(2) here and needs no asynchronous operation (nor the event-args object .NET caches per socket for one).
            var sent = socket.Send(_buffer!, 0, _length, SocketFlags.None, out var error);
            if (sent == _length)
            {
                Reset();
                return new ValueTask<FlushResult>(default(FlushResult));
            }
            if (error is not (SocketError.Success or SocketError.WouldBlock))
            {
                Reset();
                throw FastConnection.MapError(new SocketException((int)error));
            }
            send = socket.SendAsync(_buffer.AsMemory(sent, _length - sent), SocketFlags.None, cancellationToken);
        }
        catch (ObjectDisposedException ex)
        {
            Reset();
            throw Map(ex);
        }
        catch (SocketException ex)
        {
            Reset();
            throw Map(ex);
        }
        if (send.IsCompletedSuccessfully)
        {
            _ = send.Result;
            Reset();
            return new ValueTask<FlushResult>(default(FlushResult));
        }
        // Only when the socket's buffer was full (without the own loops): a task for the rest of the send.
        return AwaitSendAsync(new ValueTask(send.AsTask()));
    }

    private ValueTask<FlushResult> FlushOnLoop(Epoll.EpollSocket io, CancellationToken cancellationToken)
    {
        ValueTask send;
        try
        {
            // A send that fits the socket's buffer, the usual case, is one send(2) and completes here.
            send = io.SendAsync(_buffer.AsMemory(0, _length), cancellationToken);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            Reset();
            throw Map(ex);
        }
        if (send.IsCompletedSuccessfully)
        {
            Reset();
            return new ValueTask<FlushResult>(default(FlushResult));
        }
        return AwaitSendAsync(send);
    }

    private async ValueTask<FlushResult> AwaitSendAsync(ValueTask send)
    {
        try
        {
            await send;
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            throw Map(ex);
        }
        finally
        {
            Reset();
        }
        if (_cancelRequested)
        {
            _cancelRequested = false;
            return new FlushResult(isCanceled: true, isCompleted: false);
        }
        return default;
    }

    private static Exception Map(Exception ex) => ex is SocketException socketError
        ? FastConnection.MapError(socketError)
        : new ConnectionAbortedException("the connection was aborted", ex);

    private void Reset()
    {
        _length = 0;
        if (_buffer is { } buffer)
        {
            _buffer = null;
            BufferPool.Connection.Return(buffer);
        }
    }

    /// <summary>A send already under way cannot be recalled: the flush waiting for it reports itself cancelled.</summary>
    public override void CancelPendingFlush() => _cancelRequested = true;

    public override void Complete(Exception? exception = null)
    {
        _completed = true;
        _length = 0;
        if (_buffer is { } buffer)
        {
            _buffer = null;
            BufferPool.Connection.Return(buffer);
        }
    }
}
