using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Portico.Threading;

namespace Portico.Server.Epoll;

/// <summary>
/// Portico's own event loops for the sockets it reads and writes itself (the own accept path's client connections and
/// the own HTTP/1.1 upstream client's connections): one thread per CPU, each with an epoll set in which every socket is
/// registered once, edge-triggered, for both directions. The loop only records that a socket became readable or
/// writable and runs the continuation of whoever waits for that, on the loop's thread (as .NET's inline socket
/// completions do). What it buys over .NET's socket engine is readiness kept per socket
/// (<see cref="EpollSocket"/>): a read that returned less than it asked for has emptied the socket, so the next read
/// waits for the next event instead of first trying a receive(2) that fails with EAGAIN, which is two system calls
/// per proxied request (one each side) that HAProxy does not make.
/// </summary>
/// <remarks>
/// On by default where it works (Linux on x86-64 or arm64, with inline socket completions, see
/// <see cref="Hosting.SocketEngine"/>); <c>PORTICO_EPOLL=0</c> turns it off, and every socket then uses .NET's socket
/// engine as before. Continuations run on the loop thread, so the request path must not block (the same rule as
/// inline completions).
/// </remarks>
internal sealed unsafe class EpollLoop
{
    /// <summary>The environment variable that turns the own loops off ("0").</summary>
    public const string Variable = "PORTICO_EPOLL";

    private static readonly int MaxEvents = ReadMaxEvents();
    private static readonly Lazy<bool> Chosen = new(Choose);
    private static readonly Lazy<EpollLoop[]?> Loops = new(Create);
    private static int _next;

    private readonly int _epfd;
    private readonly Lock _gate = new();
    private EpollSocket?[] _slots = new EpollSocket?[64];
    private int[] _free = new int[64];
    private int _freeCount;
    private int _used;
    private uint _generation;

    // Work deferred to the end of the current batch (see Defer); touched only by the loop's own thread.
    [ThreadStatic]
    private static EpollLoop? t_current;
    private IThreadPoolWorkItem?[] _deferred = new IThreadPoolWorkItem?[64];
    private readonly EpollSocket?[] _batch = new EpollSocket?[MaxEvents];
    private int _deferredCount;

    private EpollLoop(int epfd, int index)
    {
        _epfd = epfd;
        using var ready = new ManualResetEventSlim();
        ServiceThread.Start("portico-epoll-" + index, () => Run(ready));
        // The ring is made on the loop's thread (its only submitter); wait for it, so the start-up line can tell.
        ready.Wait();
    }

    /// <summary>The loop's io_uring for receives and held sends; null where there is none (<see cref="IoRing.TryCreate"/>). Loop thread only.</summary>
    internal IoRing? Ring { get; private set; }

    /// <summary>True when sockets go through Portico's own loops (decided once, at the first use).</summary>
    public static bool Enabled => Chosen.Value && Loops.Value is not null;

    /// <summary>Why the own loops are off, for the start-up log; null when they are on.</summary>
    public static string? DisabledReason => Enabled ? null : _disabledReason;

    private static string? _disabledReason;

    /// <summary>"own epoll loops" or why not, for the start-up line.</summary>
    public static string Mode => Enabled ? "own epoll loops, " + IoRing.Mode : ".NET's socket engine (" + DisabledReason + ")";

    private static bool Choose()
    {
        if (Environment.GetEnvironmentVariable(Variable) == "0")
        {
            _disabledReason = Variable + "=0";
            return false;
        }
        if (!Hosting.SocketEngine.Inline)
        {
            // The loops run continuations inline; an operator who turned that off for .NET's engine gets neither.
            _disabledReason = "socket completions on the thread pool";
            return false;
        }
        return true;
    }

    private static EpollLoop[]? Create()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64))
        {
            _disabledReason = "not Linux on x86-64 or arm64";
            return null;
        }
        var count = Math.Max(1, Environment.ProcessorCount);
        var loops = new EpollLoop[count];
        for (var i = 0; i < count; i++)
        {
            var epfd = EpollNative.EpollCreate1(EpollNative.EpollCloexec);
            if (epfd < 0)
            {
                _disabledReason = "epoll_create1 failed: errno " + Marshal.GetLastPInvokeError();
                return null;
            }
            loops[i] = new EpollLoop(epfd, i);
        }
        return loops;
    }

    /// <summary>
    /// Registers <paramref name="socket"/> (which must be non-blocking) with one of the loops; null when the own loops
    /// are off, or the registration failed (the caller then uses .NET's socket engine for it).
    /// </summary>
    public static EpollSocket? TryRegister(System.Net.Sockets.Socket socket) => Enabled ? RegisterOnLoops(socket) : null;

    /// <summary>Registers even where the process keeps .NET's engine for its sockets (tests); null where epoll is missing.</summary>
    internal static EpollSocket? RegisterOnLoops(System.Net.Sockets.Socket socket)
    {
        var loops = Loops.Value;
        if (loops is null)
        {
            return null;
        }
        var loop = loops.Length == 1 ? loops[0] : loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)loops.Length)];
        return loop.Register(socket);
    }

    private EpollSocket? Register(System.Net.Sockets.Socket socket)
    {
        var handle = socket.SafeHandle;
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var fd = (int)handle.DangerousGetHandle();
            EpollSocket io;
            int slot;
            lock (_gate)
            {
                if (_freeCount > 0)
                {
                    slot = _free[--_freeCount];
                }
                else
                {
                    if (_used == _slots.Length)
                    {
                        var larger = new EpollSocket?[_slots.Length * 2];
                        Array.Copy(_slots, larger, _slots.Length);
                        Volatile.Write(ref _slots, larger);
                        Array.Resize(ref _free, larger.Length);
                    }
                    slot = _used++;
                }
                var generation = ++_generation;
                io = new EpollSocket(socket, handle, fd, this, slot, generation);
                _slots[slot] = io;
            }
            var ev = new EpollNative.EpollEvent
            {
                Events = EpollNative.EpollIn | EpollNative.EpollOut | EpollNative.EpollRdHup | EpollNative.EpollEt,
                Data = io.Token,
            };
            if (EpollNative.Ctl(_epfd, EpollNative.EpollCtlAdd, fd, ref ev) != 0)
            {
                ReleaseSlot(slot);
                return null;
            }
            return io;
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Takes the socket out of the epoll set (before it closes, or before .NET's engine takes it over).</summary>
    internal void Unregister(EpollSocket io)
    {
        var added = false;
        try
        {
            io.Handle.DangerousAddRef(ref added);
            var ev = default(EpollNative.EpollEvent);
            EpollNative.Ctl(_epfd, EpollNative.EpollCtlDel, io.Fd, ref ev);
        }
        catch (ObjectDisposedException)
        {
            // Closed already: close(2) took it out of the set.
        }
        finally
        {
            if (added)
            {
                io.Handle.DangerousRelease();
            }
        }
        ReleaseSlot(io.Slot);
    }

    private void ReleaseSlot(int slot)
    {
        lock (_gate)
        {
            _slots[slot] = null;
            _free[_freeCount++] = slot;
        }
    }

    /// <summary>True on this loop's own thread.</summary>
    public bool IsCurrent => t_current == this;

    /// <summary>
    /// When called on a loop thread, runs <paramref name="item"/> on that thread once the current batch of events has
    /// been dispatched, and returns true; elsewhere returns false (the caller then uses the thread pool). What every
    /// event of a batch wrote to one connection then goes out in one send, on the loop's own thread, as HAProxy flushes
    /// at the end of each pass of its poll loop: no thread-pool worker woken per flush.
    /// </summary>
    public static bool Defer(IThreadPoolWorkItem item)
    {
        var loop = t_current;
        if (loop is null)
        {
            return false;
        }
        if (loop._deferredCount == loop._deferred.Length)
        {
            Array.Resize(ref loop._deferred, loop._deferred.Length * 2);
        }
        loop._deferred[loop._deferredCount++] = item;
        return true;
    }

    /// <summary>
    /// Runs the deferred work of the batch, including work that work deferred while it ran, then submits the sends it
    /// queued on the ring (<see cref="EpollSocket"/>'s held sends).
    /// </summary>
    private void RunDeferred()
    {
        for (var i = 0; i < _deferredCount; i++)
        {
            var item = _deferred[i]!;
            _deferred[i] = null;
            try
            {
                item.Execute();
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine("portico: unhandled exception in deferred work on an epoll loop: " + ex);
            }
        }
        _deferredCount = 0;
        if (Ring is { Queued: > 0 } ring)
        {
            try
            {
                ring.Submit();
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine("portico: unhandled exception in an io_uring submission on an epoll loop: " + ex);
            }
        }
    }

    /// <summary>
    /// Events taken per <c>epoll_wait</c> (<c>PORTICO_EPOLL_MAX_EVENTS</c>, 1–4096, default 64). Sends are held to the
    /// end of a batch, so the batch is the unit of delay: at wrk -c256, 64 instead of 256 lowered p99 by 7 % at the same
    /// requests per CPU-second (docs/operations.md).
    /// </summary>
    private static int ReadMaxEvents()
    {
        var text = Environment.GetEnvironmentVariable("PORTICO_EPOLL_MAX_EVENTS");
        return int.TryParse(text, out var n) && n is > 0 and <= 4096 ? n : 64;
    }

    private void Run(ManualResetEventSlim ready)
    {
        t_current = this;
        try
        {
            Ring = IoRing.TryCreate();
        }
        finally
        {
            ready.Set();
        }
        var events = (EpollNative.EpollEvent*)NativeMemory.Alloc((nuint)MaxEvents, (nuint)sizeof(EpollNative.EpollEvent));
        while (true)
        {
            var count = EpollNative.Wait(_epfd, events, MaxEvents, -1);
            if (count < 0)
            {
                // EINTR (a signal, a debugger attaching): wait again.
                continue;
            }
            LoopClock.Tick();
            Dispatch(events, count);
            if (_deferredCount > 0)
            {
                RunDeferred();
            }
        }
    }

    /// <summary>
    /// The socket an event is for; null when it was unregistered since the event was queued (its slot may hold a newer
    /// socket). <paramref name="slots"/> is re-read when the slot is past its end (the table grew).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private EpollSocket? Find(ref EpollSocket?[] slots, ulong token)
    {
        var slot = (int)(uint)token;
        if ((uint)slot >= (uint)slots.Length)
        {
            slots = Volatile.Read(ref _slots);
            if ((uint)slot >= (uint)slots.Length)
            {
                return null;
            }
        }
        var io = slots[slot];
        return io is not null && io.Token == token ? io : null;
    }

    /// <summary>
    /// One batch of events with the ring: every event is noted first, with a receive queued for each reader that waits
    /// (<see cref="EpollSocket.NoteEvents"/>); one submission makes those receives; then the waiters run, in the
    /// order of the events, and find their bytes received. A batch's receives are one system call instead of one each.
    /// </summary>
    private void DispatchWithRing(EpollNative.EpollEvent* events, int count, IoRing ring)
    {
        var slots = Volatile.Read(ref _slots);
        var batch = _batch;
        for (var i = 0; i < count; i++)
        {
            var io = batch[i] = Find(ref slots, events[i].Data);
            if (io is null)
            {
                continue;
            }
            try
            {
                io.NoteEvents(events[i].Events, ring);
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine("portico: unhandled exception on an epoll loop: " + ex);
            }
        }
        if (ring.Queued > 0)
        {
            try
            {
                ring.Submit();
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine("portico: unhandled exception in an io_uring submission on an epoll loop: " + ex);
            }
        }
        for (var i = 0; i < count; i++)
        {
            var io = batch[i];
            if (io is null)
            {
                continue;
            }
            batch[i] = null;
            Fire(io, i, events[i].Events, noted: true);
        }
    }

    /// <summary>
    /// Runs whoever waits for the <paramref name="index"/>th event of a batch (after <see cref="EpollSocket.NoteEvents"/>
    /// when <paramref name="noted"/>), keeping the loop's clock within a few events' work on a long batch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Fire(EpollSocket io, int index, uint events, bool noted)
    {
        if ((index & (LoopClock.EventsPerTick - 1)) == LoopClock.EventsPerTick - 1)
        {
            // The first read of the batch is Run's, after the wait.
            LoopClock.Tick();
        }
        try
        {
            if (noted)
            {
                io.FireEvents(events);
            }
            else
            {
                io.OnEvents(events);
            }
        }
        catch (Exception ex)
        {
            // A continuation that throws out of its own frame is a bug; the loop must outlive it.
            Console.Error.WriteLine("portico: unhandled exception on an epoll loop: " + ex);
        }
    }

    /// <summary>
    /// One batch of events. Its own method so the JIT tiers it up with profile data like any other: the loop above
    /// never returns, so its body would only ever run as on-stack-replacement code.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Dispatch(EpollNative.EpollEvent* events, int count)
    {
        if (Ring is { } ring && IoRing.Receives)
        {
            DispatchWithRing(events, count, ring);
            return;
        }
        var slots = Volatile.Read(ref _slots);
        for (var i = 0; i < count; i++)
        {
            if (Find(ref slots, events[i].Data) is { } io)
            {
                Fire(io, i, events[i].Events, noted: false);
            }
        }
    }
}

/// <summary>The libc calls of the own event loops (Linux; the epoll_event layout differs between x86-64 and arm64).</summary>
internal static unsafe partial class EpollNative
{
    public const int EpollCloexec = 0x80000;
    public const int EpollCtlAdd = 1;
    public const int EpollCtlDel = 2;
    public const uint EpollIn = 0x001;
    public const uint EpollOut = 0x004;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;
    public const uint EpollRdHup = 0x2000;
    public const uint EpollEt = 0x80000000;
    public const int MsgPeek = 0x02;
    public const int MsgNoSignal = 0x4000;
    public const int EAgain = 11;
    public const int EIntr = 4;
    public const int EInProgress = 115;

    /// <summary>struct epoll_event as the caller sees it; converted for the kernel's layout in <see cref="Ctl"/> and <see cref="Wait"/>.</summary>
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    /// <summary>x86-64: packed, 12 bytes.</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    private struct PackedEvent
    {
        public uint Events;
        public ulong Data;
    }

    private static readonly bool Packed = RuntimeInformation.ProcessArchitecture == Architecture.X64;

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int EpollCreate1(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtl(int epfd, int op, int fd, void* ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    private static partial int EpollWait(int epfd, void* events, int maxEvents, int timeout);

    // recv and send on these non-blocking sockets return at once (at most a copy of the buffer, microseconds even for
    // 1 MiB), so they skip the GC transition (a GC waits for them to return); epoll_wait blocks and keeps it. Without
    // SetLastError: its marshalling clears errno before every call and reads it after (two calls into the runtime's
    // native library, and a thread-local lookup each); the caller reads errno itself, only when the call returned -1
    // (Marshal.GetLastSystemError, at once, as that marshalling does).
    //
    // The callers hold the socket's handle in a try/finally, and the JIT does not inline a P/Invoke inside a try region
    // on 64-bit: there each call went through an IL stub (0.7 % of the CPU at c64 in perf).
    // Recv and Send are therefore methods of their own that are never inlined: the call sits outside any try, and the
    // JIT emits it as a plain call.
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static nint Recv(int fd, byte* buffer, nint length, int flags) => RecvCall(fd, buffer, length, flags);

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static nint Send(int fd, byte* buffer, nint length, int flags) => SendCall(fd, buffer, length, flags);

    [LibraryImport("libc", EntryPoint = "recv")]
    [SuppressGCTransition]
    private static partial nint RecvCall(int fd, byte* buffer, nint length, int flags);

    [LibraryImport("libc", EntryPoint = "send")]
    [SuppressGCTransition]
    private static partial nint SendCall(int fd, byte* buffer, nint length, int flags);

    public static int Ctl(int epfd, int op, int fd, ref EpollEvent ev)
    {
        if (Packed)
        {
            var packed = new PackedEvent { Events = ev.Events, Data = ev.Data };
            return EpollCtl(epfd, op, fd, &packed);
        }
        fixed (EpollEvent* p = &ev)
        {
            return EpollCtl(epfd, op, fd, p);
        }
    }

    /// <summary>epoll_wait into <paramref name="events"/> (room for <paramref name="max"/>), in the caller's layout.</summary>
    public static int Wait(int epfd, EpollEvent* events, int max, int timeout)
    {
        if (!Packed)
        {
            return EpollWait(epfd, events, max, timeout);
        }
        // The packed array is 12 bytes an entry, the caller's 16: receive into the tail of the caller's buffer and
        // widen from the front, which never overtakes the packed entries still to be read.
        var packed = (PackedEvent*)((byte*)events + (max * (sizeof(EpollEvent) - sizeof(PackedEvent))));
        var count = EpollWait(epfd, packed, max, timeout);
        for (var i = 0; i < count; i++)
        {
            var entry = packed[i];
            events[i].Events = entry.Events;
            events[i].Data = entry.Data;
        }
        return count;
    }
}
