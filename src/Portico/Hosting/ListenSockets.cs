using System.Net;
using System.Net.Sockets;

namespace Portico.Hosting;

/// <summary>
/// The process's listening sockets, owned here rather than by Kestrel, so that a listener can outlive the Kestrel
/// server that accepts on it. Three things need that:
/// <list type="bullet">
/// <item>a reload that changes a listener's settings (TLS certificate, limits) starts a new server on the same
/// socket before the old one stops: one accept queue, so no connection is refused or reset in between;</item>
/// <item>the zero-downtime upgrade hands these sockets to a new process (<see cref="UpgradeHandoff"/>);</item>
/// <item>the old process can then stop accepting without disturbing the socket the new one accepts on.</item>
/// </list>
/// Each Kestrel server gets its own dup(2) of the socket. Before handing it over, <c>shutdown(SHUT_WR)</c> is called
/// on it: on a listening socket Linux does nothing for that, but .NET then closes the descriptor with a plain
/// close(2) when Kestrel disposes it, instead of the abortive close (SO_LINGER 0, which accepted connections would
/// inherit) it otherwise uses for a socket with a pending accept.
/// </summary>
public sealed class ListenSockets : IDisposable
{
    private readonly Dictionary<string, Socket> _sockets = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    /// <summary>How many connections may wait to be accepted (listen(2) backlog).</summary>
    public int Backlog { get; init; } = 1024;

    /// <summary>The key of an endpoint: "127.0.0.1:8080", "[::]:443".</summary>
    public static string KeyOf(EndPoint endpoint) => endpoint.ToString() ?? "";

    /// <summary>Takes ownership of a listening socket received from another process.</summary>
    public void Adopt(string key, Socket socket)
    {
        lock (_lock)
        {
            if (!_sockets.TryAdd(key, socket))
            {
                socket.Dispose();
            }
        }
    }

    /// <summary>The listening socket for <paramref name="endpoint"/>, bound now if there is none yet.</summary>
    public Socket GetOrBind(IPEndPoint endpoint)
    {
        var key = KeyOf(endpoint);
        lock (_lock)
        {
            if (_sockets.TryGetValue(key, out var existing))
            {
                return existing;
            }
            var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                if (endpoint.AddressFamily == AddressFamily.InterNetworkV6 && endpoint.Address.Equals(IPAddress.IPv6Any))
                {
                    socket.DualMode = true;
                }
                // As Kestrel and nginx: rebinding right after a restart must not wait for TIME_WAIT to expire.
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                socket.Bind(endpoint);
                socket.Listen(Backlog);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            _sockets[key] = socket;
            return socket;
        }
    }

    /// <summary>
    /// For Kestrel's <c>SocketTransportOptions.CreateBoundListenSocket</c>: a descriptor of its own for the shared
    /// socket of <paramref name="endpoint"/>. Where descriptors cannot be shared (not Linux), a plain bound socket.
    /// </summary>
    public Socket CreateForKestrel(EndPoint endpoint)
    {
        if (endpoint is not IPEndPoint ip)
        {
            throw new NotSupportedException($"only IP listeners are supported, not {endpoint}");
        }
        if (!UnixNative.IsSupported)
        {
            throw new PlatformNotSupportedException("shared listening sockets need Linux");
        }
        var master = GetOrBind(ip);
        var fd = UnixNative.DupOrThrow(master.Handle);
        Socket copy;
        try
        {
            copy = new KestrelListenSocket(new SafeSocketHandle(fd, ownsHandle: true), fd);
        }
        catch
        {
            UnixNative.Close(fd);
            throw;
        }
        copy.Shutdown(SocketShutdown.Send);
        return copy;
    }

    /// <summary>Closes the sockets whose keys are not in <paramref name="keep"/> (listeners removed by a reload).</summary>
    public void CloseExcept(IReadOnlyCollection<string> keep)
    {
        List<Socket> closing = [];
        lock (_lock)
        {
            List<string> keys = [];
            foreach (var (key, socket) in _sockets)
            {
                if (!keep.Contains(key))
                {
                    keys.Add(key);
                    closing.Add(socket);
                }
            }
            foreach (var key in keys)
            {
                _sockets.Remove(key);
            }
        }
        foreach (var socket in closing)
        {
            socket.Dispose();
        }
    }

    /// <summary>The sockets as (key, descriptor) pairs, for the hand-off to a new process.</summary>
    public List<(string Key, nint Handle)> Snapshot()
    {
        lock (_lock)
        {
            List<(string, nint)> list = [];
            foreach (var (key, socket) in _sockets)
            {
                list.Add((key, socket.Handle));
            }
            return list;
        }
    }

    /// <summary>Closes every socket this process holds (a process that received them keeps its own).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var socket in _sockets.Values)
            {
                socket.Dispose();
            }
            _sockets.Clear();
        }
    }

    /// <summary>
    /// Kestrel's descriptor of a shared listening socket. On dispose it first leaves .NET's epoll set explicitly:
    /// the socket stays open (other descriptors hold it), so close(2) alone would leave the registration behind.
    /// </summary>
    private sealed class KestrelListenSocket(SafeSocketHandle handle, int fd) : Socket(handle)
    {
        private int _disposed;

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                UnixNative.RemoveFromEpollSets(fd);
            }
            base.Dispose(disposing);
        }
    }
}
