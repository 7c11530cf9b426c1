using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Portico.Hosting;

/// <summary>
/// Zero-downtime upgrade by socket hand-off, as HAProxy's <c>expose-fd listeners</c> and Envoy's hot restart: the
/// running process serves a Unix socket (<c>server.upgrade_socket</c>); a new process started with
/// <c>--upgrade</c> connects to it and receives every listening socket (SCM_RIGHTS), starts accepting on them, and
/// says READY; the old process then stops accepting and drains. Both accept from the same kernel sockets, so not
/// one connection is refused or reset during the switch.
/// <para>Protocol (one connection, text lines):</para>
/// <code>
/// new → old   PORTICO-TAKEOVER 1
/// old → new   [4-byte length] "pid=N\n" + one listener key per line, with the descriptors attached in that order
/// new → old   READY            (after its servers accept on the sockets)
/// old → new   DRAINING         (the old process has released the upgrade socket path and begins its drain)
/// </code>
/// Only a peer running as the same user (or root) is served (SO_PEERCRED).
/// </summary>
internal sealed partial class UpgradeHandoff : IAsyncDisposable
{
    private const string Hello = "PORTICO-TAKEOVER 1";
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    private readonly Socket _listener;
    private readonly string _path;
    private readonly ListenSockets _sockets;
    private readonly Func<int, Task> _onTakenOver;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private int _closed;

    private UpgradeHandoff(Socket listener, string path, ListenSockets sockets, Func<int, Task> onTakenOver, ILogger logger)
    {
        _listener = listener;
        _path = path;
        _sockets = sockets;
        _onTakenOver = onTakenOver;
        _logger = logger;
    }

    /// <summary>
    /// Serves the hand-off on <paramref name="path"/>. <paramref name="onTakenOver"/> runs (with the new process's
    /// pid) once a new process has the sockets and accepts on them: the caller drains and exits.
    /// </summary>
    public static UpgradeHandoff Listen(string path, ListenSockets sockets, Func<int, Task> onTakenOver, ILogger logger)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        if (File.Exists(path))
        {
            // A stale file (its process is gone; a live one was ruled out by ProbeRunning).
            File.Delete(path);
        }
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            listener.Listen(4);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        var handoff = new UpgradeHandoff(listener, path, sockets, onTakenOver, logger);
        _ = handoff.AcceptLoopAsync();
        return handoff;
    }

    /// <summary>
    /// The pid of a live process serving <paramref name="path"/>, or null when there is none (a stale file is
    /// removed).
    /// </summary>
    public static int? ProbeRunning(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
            }
            return null;
        }
        return UnixNative.PeerCredentials(probe).Pid;
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested || Volatile.Read(ref _closed) == 1)
            {
                return;
            }
            catch (SocketException ex)
            {
                Log.AcceptFailed(_logger, ex.Message);
                continue;
            }
            // One take-over at a time: the next connection waits until this one is done.
            await ServeAsync(connection);
        }
    }

    private async Task ServeAsync(Socket connection)
    {
        using (connection)
        {
            try
            {
                var (pid, uid) = UnixNative.PeerCredentials(connection);
                if (uid != UnixNative.EffectiveUserId && uid != 0)
                {
                    Log.Refused(_logger, pid, uid);
                    return;
                }
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                timeout.CancelAfter(TimeSpan.FromSeconds(10));
                var hello = await ReadLineAsync(connection, timeout.Token);
                if (hello != Hello)
                {
                    // A probe (another process checking whether this one runs) or a stranger: nothing to do.
                    return;
                }
                var sockets = _sockets.Snapshot();
                var text = new StringBuilder().Append("pid=").Append(Environment.ProcessId).Append('\n');
                var fds = new int[sockets.Count];
                for (var i = 0; i < sockets.Count; i++)
                {
                    text.Append(sockets[i].Key).Append('\n');
                    fds[i] = (int)sockets[i].Handle;
                }
                var body = Encoding.UTF8.GetBytes(text.ToString());
                var message = new byte[4 + body.Length];
                BitConverter.TryWriteBytes(message, body.Length);
                body.CopyTo(message, 4);
                UnixNative.SendWithDescriptors(connection.Handle, message, fds);
                Log.SocketsSent(_logger, sockets.Count, pid);

                timeout.CancelAfter(ReadyTimeout);
                var ready = await ReadLineAsync(connection, timeout.Token);
                if (ready != "READY")
                {
                    Log.TakeoverAbandoned(_logger, pid);
                    return;
                }
                // The new process accepts on the sockets: release the path for it, confirm, and drain.
                Close();
                await connection.SendAsync("DRAINING\n"u8.ToArray(), SocketFlags.None);
                Log.TakenOver(_logger, pid);
                await _onTakenOver(pid);
            }
            catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException)
            {
                Log.TakeoverFailed(_logger, ex.Message);
            }
        }
    }

    private static async Task<string?> ReadLineAsync(Socket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[256];
        var length = 0;
        while (length < buffer.Length)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(length, 1), SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                return null;
            }
            if (buffer[length] == (byte)'\n')
            {
                return Encoding.ASCII.GetString(buffer, 0, length);
            }
            length++;
        }
        return null;
    }

    /// <summary>Stops serving the hand-off and removes the socket file (at shutdown, or once taken over).</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 1)
        {
            return;
        }
        _stop.Cancel();
        _listener.Dispose();
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
        }
    }

    public ValueTask DisposeAsync()
    {
        Close();
        _stop.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The new process's side: connects to the running process on <paramref name="path"/>, receives its listening
    /// sockets into <paramref name="sockets"/>, and returns the open connection, on which
    /// <see cref="Takeover.Confirm"/> later says READY.
    /// </summary>
    public static Takeover Receive(string path, ListenSockets sockets, TimeSpan timeout)
    {
        var connection = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            connection.Connect(new UnixDomainSocketEndPoint(path));
            connection.Send(Encoding.ASCII.GetBytes(Hello + "\n"));
            if (!connection.Poll(timeout, SelectMode.SelectRead))
            {
                throw new IOException($"no answer from the running process on {path} within {timeout.TotalSeconds:0} s");
            }
            var buffer = new byte[64 * 1024];
            var fds = new List<int>();
            var read = UnixNative.ReceiveWithDescriptors(connection.Handle, buffer, fds);
            if (read < 4)
            {
                CloseAll(fds);
                throw new IOException($"the running process on {path} closed the hand-off without sending its sockets");
            }
            var bodyLength = BitConverter.ToInt32(buffer, 0);
            while (read < 4 + bodyLength)
            {
                var more = connection.Receive(buffer, read, 4 + bodyLength - read, SocketFlags.None);
                if (more == 0)
                {
                    CloseAll(fds);
                    throw new IOException("the hand-off message was cut short");
                }
                read += more;
            }
            var lines = Encoding.UTF8.GetString(buffer, 4, bodyLength).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            var oldPid = 0;
            var keys = new List<string>();
            foreach (var line in lines)
            {
                if (line.StartsWith("pid=", StringComparison.Ordinal))
                {
                    _ = int.TryParse(line.AsSpan(4), out oldPid);
                }
                else
                {
                    keys.Add(line);
                }
            }
            if (keys.Count != fds.Count)
            {
                CloseAll(fds);
                throw new IOException($"the hand-off named {keys.Count} listeners but carried {fds.Count} sockets");
            }
            for (var i = 0; i < keys.Count; i++)
            {
                sockets.Adopt(keys[i], new Socket(new SafeSocketHandle(fds[i], ownsHandle: true)));
            }
            return new Takeover(connection, oldPid, keys);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private static void CloseAll(List<int> fds)
    {
        foreach (var fd in fds)
        {
            UnixNative.Close(fd);
        }
    }

    /// <summary>An adopted set of sockets whose old owner waits for READY.</summary>
    internal sealed class Takeover(Socket connection, int oldPid, IReadOnlyList<string> keys) : IDisposable
    {
        public int OldPid { get; } = oldPid;

        public IReadOnlyList<string> Keys { get; } = keys;

        /// <summary>Says READY and waits for the old process to release the upgrade socket path (DRAINING).</summary>
        public bool Confirm(TimeSpan timeout)
        {
            connection.Send("READY\n"u8);
            if (!connection.Poll(timeout, SelectMode.SelectRead))
            {
                return false;
            }
            var buffer = new byte[16];
            var read = connection.Receive(buffer);
            return read >= 8 && Encoding.ASCII.GetString(buffer, 0, read).StartsWith("DRAINING", StringComparison.Ordinal);
        }

        public void Dispose() => connection.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 120, Level = LogLevel.Warning, Message = "Upgrade socket: accept failed: {Message}")]
        public static partial void AcceptFailed(ILogger logger, string message);

        [LoggerMessage(EventId = 121, Level = LogLevel.Warning, Message = "Upgrade socket: refused process {Pid} running as uid {Uid} (only the same user or root may take over)")]
        public static partial void Refused(ILogger logger, int pid, uint uid);

        [LoggerMessage(EventId = 122, Level = LogLevel.Information, Message = "Upgrade: sent {Count} listening sockets to process {Pid}; waiting for it to accept on them")]
        public static partial void SocketsSent(ILogger logger, int count, int pid);

        [LoggerMessage(EventId = 123, Level = LogLevel.Warning, Message = "Upgrade: process {Pid} did not confirm the take-over; this process keeps serving")]
        public static partial void TakeoverAbandoned(ILogger logger, int pid);

        [LoggerMessage(EventId = 124, Level = LogLevel.Information, Message = "Upgrade: process {Pid} took over the listeners; draining this process")]
        public static partial void TakenOver(ILogger logger, int pid);

        [LoggerMessage(EventId = 125, Level = LogLevel.Warning, Message = "Upgrade: take-over failed ({Message}); this process keeps serving")]
        public static partial void TakeoverFailed(ILogger logger, string message);
    }
}
