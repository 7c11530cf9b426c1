using System.Runtime.InteropServices;

namespace Portico.Hosting;

/// <summary>
/// The few libc calls the listener hand-off needs and .NET does not expose: dup/close of a socket descriptor, and
/// sendmsg/recvmsg with SCM_RIGHTS to pass listening sockets to another process (as HAProxy and Envoy do). Linux,
/// 64-bit (struct layouts below are the LP64 ones).
/// </summary>
internal static unsafe partial class UnixNative
{
    private const int SolSocket = 1;
    private const int ScmRights = 1;
    private const int MsgCmsgCloexec = 0x40000000;
    private const int SoPeerCred = 17;

    /// <summary>True where the hand-off works: Linux on a 64-bit process.</summary>
    public static bool IsSupported => OperatingSystem.IsLinux() && IntPtr.Size == 8;

    [LibraryImport("libc", EntryPoint = "dup", SetLastError = true)]
    private static partial int Dup(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int CloseFd(int fd);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "recvmsg", SetLastError = true)]
    private static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint Signal(int signal, nint handler);

    /// <summary>
    /// Gives <paramref name="signal"/> its default action back when the process started with it ignored (as under
    /// <c>nohup</c>, which ignores SIGHUP): .NET leaves a signal that was ignored at start-up ignored and never calls
    /// its <c>PosixSignalRegistration</c> handler. True when it was ignored.
    /// </summary>
    public static bool UnignoreSignal(int signal)
    {
        const nint Default = 0, Ignore = 1;
        var previous = Signal(signal, Default);
        if (previous == Ignore)
        {
            return true;
        }
        // It was not ignored: put back what was there (a handler the runtime installed, or the default). Called once,
        // at start-up before any listener exists; between the two calls the signal has its default action.
        Signal(signal, previous);
        return false;
    }

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    private static bool _mallocTrimMissing;

    /// <summary>
    /// Gives the C heap's free pages back to the system (glibc's malloc_trim(0), which also releases free pages in the
    /// middle of every arena): what the JIT and the runtime freed after a burst stays resident otherwise. Does nothing
    /// where there is no such call (not Linux, or a C library without it, as musl).
    /// </summary>
    public static void TrimNativeHeap()
    {
        if (!OperatingSystem.IsLinux() || _mallocTrimMissing)
        {
            return;
        }
        try
        {
            MallocTrim(0);
        }
        catch (Exception ex) when (ex is EntryPointNotFoundException or DllNotFoundException)
        {
            _mallocTrimMissing = true;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    /// <summary>A new descriptor for the same open socket (without FD_CLOEXEC, as dup(2) makes it).</summary>
    public static int DupOrThrow(nint fd)
    {
        var copy = Dup((int)fd);
        return copy >= 0 ? copy : throw new IOException($"dup({fd}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void Close(int fd) => CloseFd(fd);

    /// <summary>
    /// Removes <paramref name="fd"/> from every epoll set of this process (EPOLL_CTL_DEL; sets it is not in answer
    /// ENOENT). close(2) removes a descriptor from epoll only when the last descriptor of the open file goes, so a
    /// dup of a shared socket closed by .NET would otherwise stay registered, and the next dup that gets the same
    /// number fails to register (EEXIST).
    /// </summary>
    public static void RemoveFromEpollSets(int fd)
    {
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(entry).LinkTarget;
            }
            catch (IOException)
            {
                continue;
            }
            if (target == "anon_inode:[eventpoll]" && int.TryParse(Path.GetFileName(entry), out var epfd))
            {
                var none = default(Server.Epoll.EpollNative.EpollEvent);
                Server.Epoll.EpollNative.Ctl(epfd, Server.Epoll.EpollNative.EpollCtlDel, fd, ref none);
            }
        }
    }

    public static uint EffectiveUserId => GetEuid();

    /// <summary>The (pid, uid) of the process at the other end of a connected Unix socket (SO_PEERCRED).</summary>
    public static (int Pid, uint Uid) PeerCredentials(System.Net.Sockets.Socket socket)
    {
        Span<byte> cred = stackalloc byte[12];
        var length = socket.GetRawSocketOption(SolSocket, SoPeerCred, cred);
        if (length < 12)
        {
            return (0, uint.MaxValue);
        }
        return (MemoryMarshal.Read<int>(cred), MemoryMarshal.Read<uint>(cred[4..]));
    }

    /// <summary>Sends <paramref name="payload"/> with <paramref name="fds"/> attached (SCM_RIGHTS), all in one message.</summary>
    public static void SendWithDescriptors(nint socketFd, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds)
    {
        var controlLength = ControlSpace(fds.Length);
        var control = stackalloc byte[controlLength];
        new Span<byte>(control, controlLength).Clear();
        *(nuint*)control = (nuint)(16 + (fds.Length * 4));
        *(int*)(control + 8) = SolSocket;
        *(int*)(control + 12) = ScmRights;
        for (var i = 0; i < fds.Length; i++)
        {
            ((int*)(control + 16))[i] = fds[i];
        }
        fixed (byte* data = payload)
        {
            var iov = new IoVec { Base = data, Length = (nuint)payload.Length };
            var msg = new MsgHdr { Iov = &iov, IovLength = 1, Control = fds.Length > 0 ? control : null, ControlLength = fds.Length > 0 ? (nuint)controlLength : 0 };
            var sent = SendMsg((int)socketFd, &msg, 0);
            if (sent != payload.Length)
            {
                throw new IOException($"sendmsg failed: returned {sent}, errno {Marshal.GetLastPInvokeError()}");
            }
        }
    }

    /// <summary>
    /// Receives one message into <paramref name="buffer"/>; descriptors that came with it are added to
    /// <paramref name="fds"/> (close-on-exec set). Returns the number of bytes read (0 at end of stream).
    /// </summary>
    public static int ReceiveWithDescriptors(nint socketFd, Span<byte> buffer, List<int> fds, int maxDescriptors = 64)
    {
        var controlLength = ControlSpace(maxDescriptors);
        var control = stackalloc byte[controlLength];
        fixed (byte* data = buffer)
        {
            var iov = new IoVec { Base = data, Length = (nuint)buffer.Length };
            var msg = new MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)controlLength };
            var read = RecvMsg((int)socketFd, &msg, MsgCmsgCloexec);
            if (read < 0)
            {
                throw new IOException($"recvmsg failed: errno {Marshal.GetLastPInvokeError()}");
            }
            // Walk the control messages (CMSG_FIRSTHDR/CMSG_NXTHDR).
            var offset = 0;
            while (offset + 16 <= (int)msg.ControlLength)
            {
                var header = control + offset;
                var length = (int)*(nuint*)header;
                if (length < 16)
                {
                    break;
                }
                if (*(int*)(header + 8) == SolSocket && *(int*)(header + 12) == ScmRights)
                {
                    var count = (length - 16) / 4;
                    for (var i = 0; i < count; i++)
                    {
                        fds.Add(((int*)(header + 16))[i]);
                    }
                }
                offset += (length + 7) & ~7;
            }
            return (int)read;
        }
    }

    /// <summary>CMSG_SPACE(count * sizeof(int)) on LP64.</summary>
    private static int ControlSpace(int count) => 16 + (((count * 4) + 7) & ~7);
}
