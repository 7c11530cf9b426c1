using Portico.Threading;

namespace Portico.Tests.Threading;

// The lock-free per-core pool behind the pooled async boxes and the connections' receive buffers.
public sealed class PerCorePoolTests
{
    [Fact]
    public void Pool_UnderContention_NeverHandsOutAnItemTwice()
    {
        var pool = new PerCorePool<Item>(512);
        var duplicates = 0;
        var threads = new Thread[4];
        for (var t = 0; t < threads.Length; t++)
        {
            threads[t] = new Thread(() =>
            {
                var held = new List<Item>();
                for (var i = 0; i < 200_000; i++)
                {
                    if ((i & 3) != 3)
                    {
                        var item = pool.Rent() ?? new Item();
                        if (Interlocked.Exchange(ref item.Owned, 1) != 0)
                        {
                            Interlocked.Increment(ref duplicates);
                        }
                        held.Add(item);
                    }
                    if (held.Count > 8 || (i & 3) == 3)
                    {
                        foreach (var item in held)
                        {
                            Volatile.Write(ref item.Owned, 0);
                            pool.Return(item);
                        }
                        held.Clear();
                    }
                }
            });
        }
        foreach (var thread in threads)
        {
            thread.Start();
        }
        foreach (var thread in threads)
        {
            thread.Join();
        }

        Assert.Equal(0, duplicates);
    }

    [Fact]
    public void Pool_KeepsWhatItIsGiven_UpToItsSize()
    {
        var pool = new PerCorePool<Item>(512);
        var capacity = pool.SlotsPerCore * Environment.ProcessorCount;
        var given = new HashSet<Item>();
        for (var i = 0; i < capacity + 10; i++)
        {
            var item = new Item();
            given.Add(item);
            pool.Return(item);
        }

        var back = new HashSet<Item>();
        while (pool.Rent() is { } item)
        {
            Assert.True(back.Add(item));
        }

        Assert.Subset(given, back);
        // The hints are walked, not searched, so a few slots may be missed; nearly all must come back.
        Assert.InRange(back.Count, capacity * 9 / 10, capacity);
    }

    private sealed class Item
    {
        public int Owned;
    }

    [Fact]
    public void Clear_DropsEverything()
    {
        var pool = new PerCorePool<Item>(8);
        for (var i = 0; i < 8; i++)
        {
            pool.Return(new Item());
        }

        pool.Clear();

        Assert.Null(pool.Rent());
        var item = new Item();
        pool.Return(item);
        Assert.Same(item, pool.Rent());
    }
}
