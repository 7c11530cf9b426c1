using System.Net;
using System.Net.Sockets;
using Portico.Server.Epoll;

namespace Portico.Tests.Server;

/// <summary>
/// Portico's own epoll loops (Server/Epoll) on real loopback TCP sockets: readiness kept per socket, waits that end on
/// data, on the peer's end, on close and on cancellation, sends larger than the socket's buffer, and the non-blocking
/// connect. Linux only (the loops do not exist elsewhere).
/// </summary>
public sealed class EpollSocketTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    /// <summary>An own-loop socket connected to a plain peer socket; disposing closes all three.</summary>
    private sealed class Pair(EpollSocket io, Socket peer, Socket listener) : IDisposable
    {
        public EpollSocket Io { get; } = io;

        public Socket Peer { get; } = peer;

        public void Dispose()
        {
            Io.Close();
            Io.Socket.Dispose();
            Peer.Dispose();
            listener.Dispose();
        }
    }

    private static async Task<Pair> PairAsync()
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(16);
        var accept = listener.AcceptAsync();
        var io = await EpollSocket.ConnectAsync((IPEndPoint)listener.LocalEndPoint!, CancellationToken.None, evenIfOff: true);
        Assert.NotNull(io);
        var peer = await accept.WaitAsync(Timeout);
        return new Pair(io!, peer, listener);
    }

    private static bool Supported => OperatingSystem.IsLinux();

    [Fact]
    public async Task ShortRead_MarksTheSocketEmpty_AndTheNextReadWaitsForTheEvent()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var buffer = new byte[64];
        // The read waits before the bytes are sent, so they arrive through the loop's event and the read consumes that
        // event's readiness. (Sent first, a receive that takes them before the loop has dispatched their event is marked
        // readable again by that late event: harmless, one EAGAIN, but a race for this test, seen once in CI.)
        var first = io.ReceiveAsync(buffer).AsTask();
        await Task.Delay(50);
        Assert.False(first.IsCompleted);
        peer.Send("hello"u8);
        var n = await first.WaitAsync(Timeout);
        Assert.Equal("hello", System.Text.Encoding.ASCII.GetString(buffer, 0, n));
        // Five bytes into a 64-byte buffer: the socket is empty, and nothing has come since.
        Assert.False(io.MayBeReadable);

        var pending = io.ReceiveAsync(buffer).AsTask();
        await Task.Delay(100);
        Assert.False(pending.IsCompleted);
        peer.Send("world"u8);
        n = await pending.WaitAsync(Timeout);
        Assert.Equal("world", System.Text.Encoding.ASCII.GetString(buffer, 0, n));
    }

    /// <summary>
    /// The failures of recv(2) and send(2) come from errno, which the own loop reads itself when a call returns -1 (no
    /// SetLastError marshalling): an empty socket is EAGAIN (WouldBlock), a peer's reset is ECONNRESET on the next
    /// receive, and a send after that fails too instead of reporting bytes sent.
    /// </summary>
    [Fact]
    public async Task Errno_EmptyIsWouldBlock_PeerResetIsConnectionReset()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var buffer = new byte[64];

        Assert.Equal(0, io.Receive(buffer, out var error));
        Assert.Equal(SocketError.WouldBlock, error);

        peer.LingerState = new LingerOption(true, 0);
        peer.Close();   // linger 0: RST, not FIN
        await io.WaitReadableAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal(0, io.Receive(buffer, out error));
        Assert.Equal(SocketError.ConnectionReset, error);

        var sent = io.Send("after the reset"u8, out error);
        Assert.Equal(0, sent);
        Assert.True(error is SocketError.ConnectionReset or SocketError.Shutdown or SocketError.ConnectionAborted, error.ToString());
    }

    [Fact]
    public async Task FullRead_KeepsTheSocketReadable()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        peer.Send(new byte[10]);
        var buffer = new byte[4];
        // Wait until the bytes are there, then read exactly as many as asked: more may be waiting.
        await io.WaitReadableAsync().AsTask().WaitAsync(Timeout);
        var total = 0;
        while (total < 10)
        {
            total += await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout);
        }
        Assert.Equal(10, total);
    }

    [Fact]
    public async Task PeerEnd_IsZero_AndStaysZero()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var buffer = new byte[16];
        var pending = io.ReceiveAsync(buffer).AsTask();
        peer.Shutdown(SocketShutdown.Send);
        Assert.Equal(0, await pending.WaitAsync(Timeout));
        // The end produces no further event: a second read must not wait for one.
        Assert.Equal(0, await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
    }

    [Fact]
    public async Task DataThenEnd_InOneEvent_ShortReadDoesNotHideTheEnd()
    {
        if (!Supported)
        {
            return;
        }
        // A close-delimited answer: the data and the FIN arrive together and raise one event. The short read that
        // takes the data must not mark the socket empty, or the read of the end waits for an event that never comes.
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        peer.Send("last words"u8);
        peer.Shutdown(SocketShutdown.Send);
        await Task.Delay(100);
        var buffer = new byte[64];
        Assert.Equal(10, await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
        Assert.Equal(0, await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
    }

    [Fact]
    public async Task Close_FailsAWaitingRead_WithObjectDisposed()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var pending = io.ReceiveAsync(new byte[16]).AsTask();
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);
        io.Close();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => pending.WaitAsync(Timeout));
        Assert.Throws<ObjectDisposedException>(() => io.Receive(new byte[1], out _));
    }

    [Fact]
    public async Task Cancellation_EndsTheWait_AndTheSocketStillWorks()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var buffer = new byte[16];
        using (var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(100)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => io.ReceiveAsync(buffer, cts.Token).AsTask().WaitAsync(Timeout));
        }
        peer.Send("late"u8);
        var n = await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout);
        Assert.Equal("late", System.Text.Encoding.ASCII.GetString(buffer, 0, n));
    }

    [Fact]
    public async Task Shutdown_WakesAWaitingRead()
    {
        if (!Supported)
        {
            return;
        }
        // What a timeout does to a waiting read on the own server (SocketInput.CancelPendingRead).
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var pending = io.ReceiveAsync(new byte[16]).AsTask();
        await Task.Delay(50);
        io.Socket.Shutdown(SocketShutdown.Receive);
        Assert.Equal(0, await pending.WaitAsync(Timeout));
    }

    [Fact]
    public async Task Send_LargerThanTheSocketBuffer_WaitsForRoom_AndLosesNothing()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var payload = new byte[8 * 1024 * 1024];
        new Random(5).NextBytes(payload);
        var send = io.SendAsync(payload).AsTask();
        // The peer does not read yet: the send cannot have finished (8 MiB is beyond loopback's buffers).
        await Task.Delay(200);
        Assert.False(send.IsCompleted);
        var received = new byte[payload.Length];
        var got = 0;
        while (got < received.Length)
        {
            var n = await peer.ReceiveAsync(received.AsMemory(got)).AsTask().WaitAsync(Timeout);
            Assert.True(n > 0);
            got += n;
        }
        await send.WaitAsync(Timeout);
        Assert.Equal(payload, received);
    }

    [Fact]
    public async Task WatchWaiter_AndReader_BothWakeOnOneArrival()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var buffer = new byte[16];
        peer.Send("a"u8);
        Assert.Equal(1, await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
        var watch = io.WaitForReadEventAsync(io.ReadEvents).AsTask();
        var read = io.ReceiveAsync(buffer).AsTask();
        await Task.Delay(50);
        Assert.False(watch.IsCompleted);
        Assert.False(read.IsCompleted);
        peer.Send("b"u8);
        await watch.WaitAsync(Timeout);
        Assert.Equal(1, await read.WaitAsync(Timeout));
    }

    [Fact]
    public async Task Connect_ToAClosedPort_IsRefused()
    {
        if (!Supported)
        {
            return;
        }
        int port;
        using (var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            port = ((IPEndPoint)probe.LocalEndPoint!).Port;
        }
        var ex = await Assert.ThrowsAsync<SocketException>(() =>
            EpollSocket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), CancellationToken.None, evenIfOff: true).AsTask().WaitAsync(Timeout));
        Assert.Equal(SocketError.ConnectionRefused, ex.SocketErrorCode);
    }

    [Fact]
    public async Task ManySockets_OpenedAndClosed_EventsReachOnlyTheirOwn()
    {
        if (!Supported)
        {
            return;
        }
        // Slots are reused with a new generation: an event queued for a closed socket must not reach its successor.
        for (var round = 0; round < 200; round++)
        {
            using var pair = await PairAsync();
            var buffer = new byte[8];
            var pending = pair.Io.ReceiveAsync(buffer).AsTask();
            pair.Peer.Send(BitConverter.GetBytes(round));
            Assert.Equal(4, await pending.WaitAsync(Timeout));
            Assert.Equal(round, BitConverter.ToInt32(buffer, 0));
        }
    }

    private sealed class DeferredItem(Action action) : IThreadPoolWorkItem
    {
        public void Execute() => action();
    }

    /// <summary>
    /// Work deferred from a continuation on a loop thread runs on that thread after the continuation (the end of the
    /// batch of events), once; off the loop threads Defer refuses, so callers fall back to the thread pool.
    /// </summary>
    [Fact]
    public async Task Defer_FromALoopContinuation_RunsAfterItOnTheSameThread_ElsewhereRefused()
    {
        if (!Supported)
        {
            return;
        }
        var ran = 0;
        Assert.False(EpollLoop.Defer(new DeferredItem(() => ran++)));

        using var pair = await PairAsync();
        var order = new List<string>();
        var done = new TaskCompletionSource<(string? ContinuationThread, string? DeferredThread, bool Accepted)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var buffer = new byte[8];
        // Registered from a pool thread (no synchronization context to capture), so the continuation runs inline on
        // the loop thread, as the proxy's own continuations do.
        var pending = await Task.Run(() =>
        {
            var awaiter = pair.Io.ReceiveAsync(buffer).GetAwaiter();
            if (!awaiter.IsCompleted)
            {
                awaiter.UnsafeOnCompleted(OnReceived);
            }
            return !awaiter.IsCompleted;
        });
        Assert.True(pending);
        void OnReceived()
        {
            var thread = Thread.CurrentThread.Name;
            var accepted = false;
            accepted = EpollLoop.Defer(new DeferredItem(() =>
            {
                order.Add("deferred");
                done.TrySetResult((thread, Thread.CurrentThread.Name, accepted));
            }));
            order.Add("continuation");
            if (!accepted)
            {
                done.TrySetResult((thread, null, false));
            }
        }
        pair.Peer.Send("x"u8);

        var (continuationThread, deferredThread, wasAccepted) = await done.Task.WaitAsync(Timeout);
        Assert.True(wasAccepted);
        Assert.StartsWith("portico-epoll-", continuationThread);
        Assert.Equal(continuationThread, deferredThread);
        Assert.Equal(["continuation", "deferred"], order);
        Assert.Equal(0, ran);
    }

    /// <summary>Runs <paramref name="action"/> on the socket's loop thread, inside a batch of events (a continuation of a receive).</summary>
    private static async Task RunInBatchAsync(Pair pair, Action action)
    {
        var ran = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var buffer = new byte[1];
        var pending = await Task.Run(() =>
        {
            var awaiter = pair.Io.ReceiveAsync(buffer).GetAwaiter();
            if (awaiter.IsCompleted)
            {
                return false;
            }
            awaiter.UnsafeOnCompleted(() =>
            {
                try
                {
                    Assert.StartsWith("portico-epoll-", Thread.CurrentThread.Name);
                    action();
                    ran.TrySetResult();
                }
                catch (Exception ex)
                {
                    ran.TrySetException(ex);
                }
            });
            return true;
        });
        Assert.True(pending);
        pair.Peer.Send("!"u8);
        await ran.Task.WaitAsync(Timeout);
    }

    private static async Task<string> ReceiveTextAsync(Socket peer, int length)
    {
        var buffer = new byte[length];
        var got = 0;
        using var timeout = new CancellationTokenSource(Timeout);
        while (got < length)
        {
            int n;
            try
            {
                n = await peer.ReceiveAsync(buffer.AsMemory(got), SocketFlags.None, timeout.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"{got} of {length} bytes came; the last ones: '{System.Text.Encoding.ASCII.GetString(buffer, Math.Max(0, got - 8), Math.Min(got, 8))}'");
            }
            Assert.True(n > 0, $"the peer's stream ended after {got} of {length} bytes");
            got += n;
        }
        return System.Text.Encoding.ASCII.GetString(buffer);
    }

    /// <summary>
    /// Small sends made on the loop thread during a batch are held and go out together at the end of it (the peer
    /// has nothing while the batch runs), in order; a send from another thread goes out at once.
    /// </summary>
    [Fact]
    public async Task SendOnTheLoop_HeldUntilTheBatchEnds_InOrder_ElsewhereSentAtOnce()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var availableDuringBatch = -1;
        var completedAtOnce = false;

        await RunInBatchAsync(pair, () =>
        {
            var first = pair.Io.SendAsync("hello "u8.ToArray());
            var second = pair.Io.SendAsync("world"u8.ToArray());
            completedAtOnce = first.IsCompletedSuccessfully && second.IsCompletedSuccessfully;
            availableDuringBatch = pair.Peer.Available;
        });

        Assert.True(completedAtOnce);
        Assert.Equal(0, availableDuringBatch);
        Assert.Equal("hello world", await ReceiveTextAsync(pair.Peer, 11));

        await pair.Io.SendAsync("now"u8.ToArray());
        Assert.Equal(3, pair.Peer.Available);
    }

    /// <summary>A close right after a held send (a response with Connection: close) sends the held bytes first.</summary>
    [Fact]
    public async Task Close_RightAfterAHeldSend_TheBytesGoOutBeforeTheEnd()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();

        await RunInBatchAsync(pair, () =>
        {
            _ = pair.Io.SendAsync("bye"u8.ToArray());
            pair.Io.Close();
            pair.Io.Socket.Shutdown(SocketShutdown.Send);
        });

        Assert.Equal("bye", await ReceiveTextAsync(pair.Peer, 3));
        Assert.Equal(0, await pair.Peer.ReceiveAsync(new byte[8], SocketFlags.None).WaitAsync(Timeout));
    }

    /// <summary>
    /// When the peer does not read and the socket's buffer is full, held bytes that find no room at the end of the
    /// batch go out as room comes, and a later send waits for them: nothing is lost or reordered. Ten rounds: the later
    /// send once slipped in between the flush clearing the held bytes and recording their rest (it found neither, and
    /// its bytes went first while the rest was lost), a window of microseconds that a single round seldom hits.
    /// </summary>
    [Fact]
    public async Task HeldBytes_SocketBufferFull_GoOutAsRoomComes_BeforeALaterSend()
    {
        if (!Supported)
        {
            return;
        }
        for (var round = 0; round < 10; round++)
        {
            using var pair = await PairAsync();
            long filled = 0;
            var held = 0;

            await RunInBatchAsync(pair, () =>
            {
                // Fill the socket (one plain send(2) after another, until it takes no more), then hold 3 KiB.
                var chunk = new byte[16 * 1024];
                Array.Fill(chunk, (byte)'f');
                while (true)
                {
                    var n = pair.Io.Send(chunk, out var error);
                    filled += n;
                    if (error == SocketError.WouldBlock || n == 0)
                    {
                        break;
                    }
                }
                var tail = new byte[3 * 1024];
                Array.Fill(tail, (byte)'h');
                var send = pair.Io.SendAsync(tail);
                held = send.IsCompletedSuccessfully ? tail.Length : -1;
            });
            Assert.Equal(3 * 1024, held);

            var later = pair.Io.SendAsync("END"u8.ToArray()).AsTask();
            await Task.Delay(50);
            Assert.False(later.IsCompleted, $"round {round}: a send overtook held bytes the socket had no room for");

            var total = (int)filled + 3 * 1024 + 3;
            var all = await ReceiveTextAsync(pair.Peer, total);
            await later.WaitAsync(Timeout);
            Assert.Equal(new string('f', (int)filled) + new string('h', 3 * 1024) + "END", all);
        }
    }

    /// <summary>
    /// Where the loops have an io_uring, held bytes go out through it: the flush is counted on the socket, and what the
    /// peer gets is the bytes in order. Where they have none, the mode (the start-up line's) says why.
    /// </summary>
    [Fact]
    public async Task HeldBytes_GoOutThroughTheRing_WhereThereIsOne()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        await RunInBatchAsync(pair, () => _ = pair.Io.SendAsync("ring"u8.ToArray()));
        Assert.Equal("ring", await ReceiveTextAsync(pair.Peer, 4));
        if (IoRing.AnyCreated)
        {
            Assert.Equal(1, pair.Io.RingSends);
            Assert.EndsWith("through io_uring", IoRing.Mode);
        }
        else
        {
            Assert.Equal(0, pair.Io.RingSends);
            Assert.NotNull(IoRing.Refusal);
            Assert.Contains(IoRing.Refusal!, IoRing.Mode);
        }
    }

    /// <summary>
    /// A send on the loop thread after the socket's held bytes were queued on the ring (later deferred work of the same
    /// batch, as an HTTP/2 connection's flush) must not wait for the ring's result, which only this thread can bring:
    /// it submits the ring first, so the loop goes on and the bytes keep their order. A close then does the same.
    /// </summary>
    [Fact(Timeout = 30_000)]   // the bug it guards against is a loop thread spinning on its own gate: a hang
    public async Task SendAfterTheFlushWasQueued_OnTheLoopThread_SubmitsFirst_InOrder()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var laterCompleted = false;
        await RunInBatchAsync(pair, () =>
        {
            _ = pair.Io.SendAsync("first "u8.ToArray());   // held; its flush is deferred work of this batch
            Assert.True(EpollLoop.Defer(new DeferredItem(() =>
            {
                // Runs after the flush was queued on the ring (when there is one).
                laterCompleted = pair.Io.SendAsync("second "u8.ToArray()).IsCompletedSuccessfully;
                Assert.True(EpollLoop.Defer(new DeferredItem(() =>
                {
                    _ = pair.Io.SendAsync("third"u8.ToArray());
                    pair.Io.Close();
                    pair.Io.Socket.Shutdown(SocketShutdown.Send);
                })));
            })));
        });
        Assert.Equal("first second third", await ReceiveTextAsync(pair.Peer, 18));
        Assert.Equal(0, await pair.Peer.ReceiveAsync(new byte[8], SocketFlags.None).WaitAsync(Timeout));
        Assert.True(laterCompleted);
    }

    /// <summary>
    /// With the ring, the loop receives for a waiting reader before it runs it. A reader with less room than what came
    /// gets the rest at its next receive (and the socket stays readable meanwhile); what no receive took yet goes to a
    /// hand-over (<see cref="EpollSocket.TakeStaged"/>), in order.
    /// </summary>
    [Fact]
    public async Task LoopReceive_ReaderWithLessRoom_GetsTheRestNext_AndAHandOverTheRemainder()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var small = new byte[3];
        var first = io.ReceiveAsync(small).AsTask();
        await Task.Delay(50);
        peer.Send("abcdefghij"u8);
        Assert.Equal(3, await first.WaitAsync(Timeout));
        Assert.Equal("abc", System.Text.Encoding.ASCII.GetString(small));
        Assert.True(io.MayBeReadable);
        Assert.Equal(3, await io.ReceiveAsync(small).AsTask().WaitAsync(Timeout));
        Assert.Equal("def", System.Text.Encoding.ASCII.GetString(small));
        var staged = io.TakeStaged();
        if (IoRing.AnyCreated && IoRing.Receives)
        {
            Assert.Equal(1, io.RingReceives);
            Assert.Equal("ghij", System.Text.Encoding.ASCII.GetString(staged!));
            Assert.Null(io.TakeStaged());
        }
        else
        {
            Assert.Null(staged);
            Assert.Equal(4, await io.ReceiveAsync(new byte[8]).AsTask().WaitAsync(Timeout));
        }
    }

    /// <summary>
    /// More than the loop's 4 KiB buffer arrives at once (a large body): the receive that takes the loop's bytes reads
    /// on into the rest of the caller's buffer, as one receive of that size would, and every byte comes in order.
    /// </summary>
    [Fact]
    public async Task LoopReceive_LargeArrival_ReadsOnPastTheLoopsBuffer_InOrder()
    {
        if (!Supported)
        {
            return;
        }
        using var pair = await PairAsync();
        var (io, peer) = (pair.Io, pair.Peer);
        var sent = new byte[200_000];
        new Random(7).NextBytes(sent);
        var buffer = new byte[64 * 1024];
        var first = io.ReceiveAsync(buffer).AsTask();
        await Task.Delay(50);
        var sending = peer.SendAsync(sent, SocketFlags.None);
        var got = new List<byte>();
        var n = await first.WaitAsync(Timeout);
        if (IoRing.AnyCreated && IoRing.Receives)
        {
            Assert.True(n > 4096, $"the first receive took {n} bytes, no more than the loop's buffer");
        }
        got.AddRange(buffer.AsSpan(0, n).ToArray());
        while (got.Count < sent.Length)
        {
            n = await io.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout);
            Assert.True(n > 0);
            got.AddRange(buffer.AsSpan(0, n).ToArray());
        }
        await sending;
        Assert.Equal(sent, got.ToArray());
    }
}
