using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Portico.Server.Epoll;

/// <summary>
/// An io_uring of one <see cref="EpollLoop"/>, for the two system calls a proxied request makes on each side:
/// the receives of a batch of events (the loop receives for each reader that waits before running it, one submission
/// of IORING_OP_RECV entries) and the sends held to the end of the batch (one submission of IORING_OP_SEND entries),
/// instead of a recv(2) or send(2) each. Each system call costs its entry and exit, which on this kind of virtual
/// machine is a large part of a proxied request (docs/performance.md, "The wall, and the next step").
/// </summary>
/// <remarks>
/// <para>
/// Every entry carries MSG_DONTWAIT, so the kernel makes each call at once during the submission, as recv(2) or send(2)
/// on a non-blocking socket would: bytes, part of them, or -EAGAIN. Nothing is left in flight after
/// <see cref="Submit"/> returns (the kernel never parks such a call to retry it later), so a buffer and its socket's
/// handle are only needed for the length of that call. The results are read from the completion queue and handed back
/// to each socket (<see cref="EpollSocket.CompleteRingReceive"/>, <see cref="EpollSocket.CompleteRingSend"/>), which
/// deals with them as with the results of the plain calls.
/// </para>
/// <para>
/// Only the loop's own thread touches the ring (it is created there, with IORING_SETUP_SINGLE_ISSUER). Where
/// io_uring is missing or refused (an older kernel, a seccomp profile, <c>kernel.io_uring_disabled</c>), or
/// <c>PORTICO_IO_URING=0</c>, the loop has no ring and makes plain calls, as before; <c>PORTICO_IO_URING_RECEIVE=0</c>
/// keeps the ring to the sends.
/// </para>
/// </remarks>
internal sealed unsafe partial class IoRing
{
    /// <summary>The environment variable that turns the rings off ("0").</summary>
    public const string Variable = "PORTICO_IO_URING";

    /// <summary>The environment variable that keeps the rings to sends ("0"): each reader then makes its own recv(2).</summary>
    public const string ReceiveVariable = "PORTICO_IO_URING_RECEIVE";

    /// <summary>True when the loops make the receives of a batch through their rings (<see cref="EpollLoop"/>).</summary>
    public static readonly bool Receives = Environment.GetEnvironmentVariable(ReceiveVariable) != "0";

    private const uint Entries = 256;

    private readonly int _ringFd;
    private readonly uint* _sqTail;
    private readonly uint _sqMask;
    private readonly Sqe* _sqes;
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly Cqe* _cqes;
    private readonly EpollSocket?[] _pending = new EpollSocket?[Entries];
    private readonly bool[] _receives = new bool[Entries];
    private uint _tail;
    private int _queued;

    private static string? _refusal;
    private static int _created;

    private IoRing(int ringFd, uint* sqTail, uint sqMask, Sqe* sqes, uint* cqHead, uint* cqTail, uint cqMask, Cqe* cqes)
    {
        _ringFd = ringFd;
        _sqTail = sqTail;
        _sqMask = sqMask;
        _sqes = sqes;
        _cqHead = cqHead;
        _cqTail = cqTail;
        _cqMask = cqMask;
        _cqes = cqes;
        _tail = *sqTail;
    }

    /// <summary>How the loops make their receives and sends, for the start-up line.</summary>
    public static string Mode => Volatile.Read(ref _created) > 0
        ? Receives ? "sends and receives through io_uring" : "held sends through io_uring"
        : _refusal is null ? "plain recv(2) and send(2)" : "plain recv(2) and send(2): " + _refusal;

    /// <summary>True once some loop made its ring.</summary>
    public static bool AnyCreated => Volatile.Read(ref _created) > 0;

    /// <summary>Why the loops have no ring (null while none refused).</summary>
    public static string? Refusal => _refusal;

    /// <summary>The number of entries (receives or sends) queued and not yet submitted.</summary>
    public int Queued => _queued;

    /// <summary>Makes a ring on the calling thread (the loop's), or null where io_uring is off or not to be had.</summary>
    public static IoRing? TryCreate()
    {
        if (Environment.GetEnvironmentVariable(Variable) == "0")
        {
            _refusal = Variable + "=0";
            return null;
        }
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64))
        {
            _refusal = "not Linux on x86-64 or arm64";
            return null;
        }
        var parameters = default(Params);
        // Newest flags first; an older kernel refuses what it does not know (EINVAL), and gets the plainer set.
        // SUBMIT_ALL: one failing entry does not stop the rest. SINGLE_ISSUER + DEFER_TASKRUN (6.1): no task work
        // run on this thread behind its back. COOP_TASKRUN (5.19): no interrupt to run it.
        ReadOnlySpan<uint> flagSets = [SetupSubmitAll | SetupSingleIssuer | SetupDeferTaskrun, SetupSubmitAll | SetupCoopTaskrun, 0];
        var fd = -1;
        var errno = 0;
        foreach (var flags in flagSets)
        {
            parameters = default;
            parameters.Flags = flags;
            fd = (int)Native.Syscall(SysIoUringSetup, (nint)Entries, (nint)(&parameters), 0, 0, 0, 0);
            if (fd >= 0)
            {
                break;
            }
            errno = Marshal.GetLastSystemError();
            if (errno != 22 /* EINVAL */)
            {
                break;
            }
        }
        if (fd < 0)
        {
            _refusal = "io_uring_setup failed: errno " + errno;
            return null;
        }
        if ((parameters.Features & FeatSingleMmap) == 0)
        {
            Native.Close(fd);
            _refusal = "io_uring without IORING_FEAT_SINGLE_MMAP (kernel older than 5.4)";
            return null;
        }
        var ringSize = Math.Max(parameters.SqOff.Array + (parameters.SqEntries * 4), parameters.CqOff.Cqes + (parameters.CqEntries * (uint)sizeof(Cqe)));
        var ring = Native.Mmap(null, ringSize, ProtRead | ProtWrite, MapShared | MapPopulate, fd, OffSqRing);
        var sqes = Native.Mmap(null, parameters.SqEntries * (uint)sizeof(Sqe), ProtRead | ProtWrite, MapShared | MapPopulate, fd, OffSqes);
        if (ring == (void*)-1 || sqes == (void*)-1)
        {
            _refusal = "mmap of the io_uring failed: errno " + Marshal.GetLastSystemError();
            Native.Close(fd);
            return null;
        }
        var rings = (byte*)ring;
        // The submission array maps slot i to entry i, once: entries are then used in ring order.
        var array = (uint*)(rings + parameters.SqOff.Array);
        for (uint i = 0; i < parameters.SqEntries; i++)
        {
            array[i] = i;
        }
        Interlocked.Increment(ref _created);
        return new IoRing(
            fd,
            (uint*)(rings + parameters.SqOff.Tail),
            *(uint*)(rings + parameters.SqOff.RingMask),
            (Sqe*)sqes,
            (uint*)(rings + parameters.CqOff.Head),
            (uint*)(rings + parameters.CqOff.Tail),
            *(uint*)(rings + parameters.CqOff.RingMask),
            (Cqe*)(rings + parameters.CqOff.Cqes));
    }

    /// <summary>
    /// Queues a send of the first <paramref name="length"/> bytes of <paramref name="pinned"/> (an array that does not
    /// move: <see cref="Threading.BufferPool.Held"/>) on <paramref name="fd"/>; <paramref name="owner"/> is told the
    /// result at the next <see cref="Submit"/> (<see cref="EpollSocket.CompleteRingSend"/>). A full queue is submitted first.
    /// </summary>
    public void QueueSend(EpollSocket owner, int fd, byte[] pinned, int length) => Queue(owner, fd, pinned, length, OpSend, false);

    /// <summary>
    /// Queues a receive of up to <paramref name="pinned"/>'s length into it from <paramref name="fd"/>;
    /// <paramref name="owner"/> gets the result at the next <see cref="Submit"/> (<see cref="EpollSocket.CompleteRingReceive"/>).
    /// </summary>
    public void QueueReceive(EpollSocket owner, int fd, byte[] pinned) => Queue(owner, fd, pinned, pinned.Length, OpRecv, true);

    private void Queue(EpollSocket owner, int fd, byte[] pinned, int length, byte opcode, bool receive)
    {
        if (_queued == (int)Entries)
        {
            Submit();
        }
        var sqe = _sqes + (_tail & _sqMask);
        *sqe = default;
        sqe->Opcode = opcode;
        sqe->Fd = fd;
        // The array is pinned (on the pinned object heap), so its address stays good until the submission is done.
        sqe->Addr = (ulong)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        sqe->Len = (uint)length;
        sqe->MsgFlags = receive ? MsgDontWait : (uint)EpollNative.MsgNoSignal | MsgDontWait;
        sqe->UserData = (ulong)_queued;
        _receives[_queued] = receive;
        _pending[_queued++] = owner;
        _tail++;
    }

    /// <summary>
    /// Submits what is queued in one io_uring_enter and hands each result to its socket. Everything queued is done
    /// when this returns (see the remarks).
    /// </summary>
    public void Submit()
    {
        var count = _queued;
        if (count == 0)
        {
            return;
        }
        Volatile.Write(ref *_sqTail, _tail);
        var completed = 0;
        var submitted = Math.Max(Native.Enter(_ringFd, (uint)count, 0, 0), 0);
        if (submitted < count)
        {
            // -1 (EINTR, EAGAIN, EBUSY: the completion queue is full, which cannot happen as each submission is reaped at
            // once) or fewer taken (a bad entry; SUBMIT_ALL takes the rest anyway): the kernel never read the entries
            // past the ones it took, so they are taken back, and their sockets make their calls themselves (Fail).
            _tail -= (uint)(count - submitted);
            Volatile.Write(ref *_sqTail, _tail);
        }
        var waits = 0;
        while (completed < submitted)
        {
            var head = *_cqHead;
            var tail = Volatile.Read(ref *_cqTail);
            if (head == tail)
            {
                // Not expected (every entry completes during the submission): wait for the rest rather than lose them,
                // since the kernel may still write into their buffers.
                if (Native.EnterWait(_ringFd, 0, 1, EnterGetEvents) < 0 && ++waits == 1000)
                {
                    Console.Error.WriteLine("portico: io_uring_enter keeps failing (errno " + Marshal.GetLastSystemError() + ") while entries are in flight");
                    waits = 0;
                }
                continue;
            }
            for (; head != tail; head++)
            {
                var cqe = _cqes[head & _cqMask];
                var index = (int)cqe.UserData;
                var owner = _pending[index];
                _pending[index] = null;
                completed++;
                if (_receives[index])
                {
                    owner?.CompleteRingReceive(cqe.Res);
                }
                else
                {
                    owner?.CompleteRingSend(cqe.Res);
                }
            }
            Volatile.Write(ref *_cqHead, head);
        }
        if (submitted < count)
        {
            Fail(submitted, count);
        }
        _queued = 0;
    }

    private void Fail(int from, int count)
    {
        for (var i = from; i < count; i++)
        {
            var owner = _pending[i];
            _pending[i] = null;
            if (_receives[i])
            {
                owner?.CompleteRingReceive(RingNotTaken);
            }
            else
            {
                owner?.CompleteRingSend(RingNotTaken);
            }
        }
    }

    /// <summary>The result handed to a socket whose entry the kernel never took: it makes the call itself.</summary>
    public const int RingNotTaken = int.MinValue;

    private const int SysIoUringSetup = 425;
    private const int SysIoUringEnter = 426;
    private const uint SetupCoopTaskrun = 1u << 8;
    private const uint SetupSubmitAll = 1u << 7;
    private const uint SetupSingleIssuer = 1u << 12;
    private const uint SetupDeferTaskrun = 1u << 13;
    private const uint FeatSingleMmap = 1u << 0;
    private const uint EnterGetEvents = 1u << 0;
    private const byte OpSend = 26;
    private const byte OpRecv = 27;
    private const uint MsgDontWait = 0x40;
    private const int ProtRead = 1;
    private const int ProtWrite = 2;
    private const int MapShared = 0x01;
    private const int MapPopulate = 0x8000;
    private const long OffSqRing = 0;
    private const long OffSqes = 0x10000000;

    [StructLayout(LayoutKind.Sequential)]
    private struct SqRingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1;
        public ulong UserAddr;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CqRingOffsets
    {
        public uint Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1;
        public ulong UserAddr;
    }

    /// <summary>struct io_uring_params (120 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd, Resv0, Resv1, Resv2;
        public SqRingOffsets SqOff;
        public CqRingOffsets CqOff;
    }

    /// <summary>struct io_uring_sqe (64 bytes), the fields a send or a receive uses.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    private struct Sqe
    {
        [FieldOffset(0)] public byte Opcode;
        [FieldOffset(1)] public byte Flags;
        [FieldOffset(4)] public int Fd;
        [FieldOffset(16)] public ulong Addr;
        [FieldOffset(24)] public uint Len;
        [FieldOffset(28)] public uint MsgFlags;
        [FieldOffset(32)] public ulong UserData;
    }

    /// <summary>struct io_uring_cqe (16 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Cqe
    {
        public ulong UserData;
        public int Res;
        public uint Flags;
    }

    private static partial class Native
    {
        // syscall(2) is variadic in C; glibc's is a few instructions of assembly that move its integer arguments into
        // the kernel's registers, so the fixed six-argument signature is what it reads (x86-64 and arm64 alike).
        [LibraryImport("libc", EntryPoint = "syscall")]
        public static partial nint Syscall(nint number, nint a1, nint a2, nint a3, nint a4, nint a5, nint a6);

        // The submission is non-blocking (every entry carries MSG_DONTWAIT), so it skips the GC transition as recv and
        // send do (EpollNative.Recv); the wait that follows only if something were left in flight keeps it.
        [LibraryImport("libc", EntryPoint = "syscall")]
        [SuppressGCTransition]
        private static partial int EnterCall(nint number, nint fd, nint toSubmit, nint minComplete, nint flags, nint sig, nint size);

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static int Enter(int fd, uint toSubmit, uint minComplete, uint flags)
            => EnterCall(SysIoUringEnter, fd, (nint)toSubmit, (nint)minComplete, (nint)flags, 0, 0);

        public static int EnterWait(int fd, uint toSubmit, uint minComplete, uint flags)
            => (int)Syscall(SysIoUringEnter, fd, (nint)toSubmit, (nint)minComplete, (nint)flags, 0, 0);

        [LibraryImport("libc", EntryPoint = "mmap")]
        public static partial void* Mmap(void* address, nuint length, int prot, int flags, int fd, long offset);

        [LibraryImport("libc", EntryPoint = "close")]
        public static partial int Close(int fd);
    }
}
