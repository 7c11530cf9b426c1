using System.Buffers;

namespace Portico.Threading;

/// <summary>
/// Byte buffers of one size for the request path, in a lock-free <see cref="PerCorePool{T}"/>. Each of these
/// buffers is held for as long as its request is in flight, so a process proxying a few hundred requests at once
/// holds a few hundred of each; .NET's shared array pool keeps 32 arrays of a size per core, so past that nearly every
/// request allocated new ones (measured: 5.3 KB allocated per request at c256 against 2.7 KB at c64, before the
/// connections' buffers came from here). A request for more than the size, or a return of an array of another
/// size, goes to the shared pool, so callers may mix both. The idle trim empties them (<see cref="ClearAll"/>).
/// </summary>
internal sealed class BufferPool
{
    /// <summary>The own server's receive and send buffers: a request's head stays in its receive buffer until the response is done.</summary>
    public static readonly BufferPool Connection = new(4 * 1024, 2048);

    /// <summary>The upstream request head written by the own HTTP/1.1 client (kept until the response head came, for a retry).</summary>
    public static readonly BufferPool UpstreamRequestHead = new(2 * 1024, 2048);

    /// <summary>
    /// The upstream response head read by the own HTTP/1.1 client (and small bodies behind it); taken once the answer
    /// may be there, so only the requests being answered at the moment hold one.
    /// </summary>
    public static readonly BufferPool UpstreamResponseHead = new(16 * 1024, 1024);

    /// <summary>
    /// Sends held by an epoll loop for the end of its batch: pinned (on the pinned object heap), because the loop hands
    /// their address to the kernel in an io_uring submission (<see cref="Server.Epoll.IoRing"/>).
    /// </summary>
    public static readonly BufferPool Held = new(4 * 1024, 1024, pinned: true);

    private readonly PerCorePool<byte[]> _pool;
    private readonly bool _pinned;

    private BufferPool(int size, int total, bool pinned = false)
    {
        Size = size;
        _pinned = pinned;
        _pool = new PerCorePool<byte[]>(PerCorePool<byte[]>.PerCoreFor(total));
    }

    public int Size { get; }

    /// <summary>A buffer of at least <paramref name="minimum"/> bytes; exactly <see cref="Size"/> when that is enough.</summary>
    public byte[] Rent(int minimum = 0) =>
        minimum <= Size ? _pool.Rent() ?? GC.AllocateUninitializedArray<byte>(Size, _pinned) : ArrayPool<byte>.Shared.Rent(minimum);

    public void Return(byte[] buffer)
    {
        if (buffer.Length == Size)
        {
            _pool.Return(buffer);
        }
        else
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Drops every pooled buffer (the idle trim: memory a burst needed goes back once the process is quiet).</summary>
    public static void ClearAll()
    {
        Connection._pool.Clear();
        UpstreamRequestHead._pool.Clear();
        UpstreamResponseHead._pool.Clear();
        Held._pool.Clear();
    }
}
