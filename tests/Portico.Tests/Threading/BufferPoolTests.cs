using Portico.Threading;

namespace Portico.Tests.Threading;

// The request path's buffer pools: with hundreds of requests in flight, a request must get a pooled buffer back, not
// a new array (the shared ArrayPool keeps only 32 of a size per core, so the 2 KiB request-head buffer was allocated
// anew for nearly every request at c256).
public sealed class BufferPoolTests
{
    [Fact]
    public void Rent_ManyInFlight_GetsTheSameBuffersBackAfterReturn()
    {
        var pool = BufferPool.UpstreamRequestHead;
        var first = new byte[600][];
        for (var i = 0; i < first.Length; i++)
        {
            first[i] = pool.Rent();
            Assert.Equal(pool.Size, first[i].Length);
        }
        foreach (var buffer in first)
        {
            pool.Return(buffer);
        }

        var returned = new HashSet<byte[]>(first, ReferenceEqualityComparer.Instance);
        var reused = 0;
        var second = new byte[600][];
        for (var i = 0; i < second.Length; i++)
        {
            second[i] = pool.Rent();
            if (returned.Contains(second[i]))
            {
                reused++;
            }
        }
        foreach (var buffer in second)
        {
            pool.Return(buffer);
        }

        // Other tests may use this pool at the same time; nearly all must still come back (the shared pool: ~32).
        Assert.True(reused >= 500, $"only {reused} of 600 buffers were reused");
    }

    [Fact]
    public void Rent_MoreThanTheSize_ComesFromTheSharedPool_AndGoesBackThere()
    {
        var pool = BufferPool.Connection;
        var big = pool.Rent(pool.Size + 1);
        Assert.True(big.Length > pool.Size);
        pool.Return(big);   // another size: to the shared pool, never handed out as a pool-sized buffer
        for (var i = 0; i < 100; i++)
        {
            var buffer = pool.Rent();
            Assert.Equal(pool.Size, buffer.Length);
            pool.Return(buffer);
        }
    }

    [Fact]
    public void Rent_AtMostTheSize_IsExactlyTheSize()
    {
        foreach (var pool in new[] { BufferPool.Connection, BufferPool.UpstreamRequestHead, BufferPool.UpstreamResponseHead })
        {
            var buffer = pool.Rent(pool.Size);
            Assert.Equal(pool.Size, buffer.Length);
            pool.Return(buffer);
        }
    }
}
