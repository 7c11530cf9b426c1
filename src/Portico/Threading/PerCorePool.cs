namespace Portico.Threading;

/// <summary>
/// A lock-free pool of objects of one kind: a slot array per core (<see cref="Thread.GetCurrentProcessorId"/>), each
/// used as a stack whose top is only a hint; an object is taken or put with one atomic exchange on a slot, so a stale
/// hint costs a probe and never hands out an object twice. A core whose stack is empty takes from the others' and one
/// whose stack is full gives to them, as objects are often rented on one core (say the client's loop) and returned on
/// another (the upstream's); beyond that an object is left to the GC. Used for the async boxes of the request path
/// (<see cref="PooledValueTaskBuilder"/>) and the request path's buffers (<see cref="BufferPool"/>), which .NET's shared
/// pools keep only a few dozen of (a few hundred requests in flight allocated one of each per request).
/// </summary>
internal sealed class PerCorePool<T> where T : class
{
    private const int Probes = 3;

    private readonly Stack[] _stacks;

    public PerCorePool(int slotsPerCore)
    {
        SlotsPerCore = slotsPerCore;
        _stacks = new Stack[Math.Max(1, Environment.ProcessorCount)];
        for (var i = 0; i < _stacks.Length; i++)
        {
            _stacks[i] = new Stack(slotsPerCore);
        }
    }

    public int SlotsPerCore { get; }

    /// <summary>
    /// Slots per core for a pool meant to hold <paramref name="total"/> objects in all (at least
    /// <paramref name="minimumPerCore"/> a core): a process pinned to one core has one stack, and one of 512 slots
    /// left every request past the 512th in flight (c1000) allocating its object anew.
    /// </summary>
    public static int PerCoreFor(int total, int minimumPerCore = 64) =>
        Math.Max(minimumPerCore, total / Math.Max(1, Environment.ProcessorCount));

    /// <summary>An object from the pool, or null when it has none to hand.</summary>
    public T? Rent()
    {
        var stacks = _stacks;
        var home = (uint)Thread.GetCurrentProcessorId() % (uint)stacks.Length;
        var item = stacks[home].TryTake();
        for (var i = 1; item is null && i < stacks.Length; i++)
        {
            item = stacks[(home + i) % (uint)stacks.Length].TryTake();
        }
        return item;
    }

    /// <summary>Offers an object (one nobody else holds) to the pool; a full pool leaves it to the GC.</summary>
    public void Return(T item)
    {
        var stacks = _stacks;
        var home = (uint)Thread.GetCurrentProcessorId() % (uint)stacks.Length;
        if (stacks[home].TryPut(item))
        {
            return;
        }
        for (var i = 1; i < stacks.Length; i++)
        {
            if (stacks[(home + i) % (uint)stacks.Length].TryPut(item))
            {
                return;
            }
        }
    }

    /// <summary>Drops everything pooled (the idle trim: memory a burst needed goes back once the process is quiet).</summary>
    public void Clear()
    {
        foreach (var stack in _stacks)
        {
            stack.Clear();
        }
    }

    /// <summary>One core's slots. Padded, so two cores' hints are not on one cache line.</summary>
    private sealed class Stack(int size)
    {
        // Slots are structs: a ref to an element of a T[] (T a class, the code shared between instantiations) costs a
        // covariance check (CastHelpers.LdelemaRef, 0.4 % of the CPU at c64 in perf); a ref into a struct array does not.
        private readonly Slot[] _slots = new Slot[size];
        private int _top;   // slots below it are probably full, from it up probably empty
#pragma warning disable CS0169, IDE0051 // never read: it only keeps the next object off this one's cache line
        private CacheLinePadding _padding;
#pragma warning restore CS0169, IDE0051

        public T? TryTake()
        {
            var slots = _slots;
            var top = Volatile.Read(ref _top);
            for (var probe = 0; probe < Probes; probe++)
            {
                var i = top - 1 - probe;
                if ((uint)i >= (uint)slots.Length)
                {
                    break;
                }
                if (Volatile.Read(ref slots[i].Item) is not null && Interlocked.Exchange(ref slots[i].Item, null) is { } item)
                {
                    Volatile.Write(ref _top, i);
                    return item;
                }
            }
            // Empty here: move the hint down, so a hint left too high by racing puts finds the objects below it.
            Volatile.Write(ref _top, Math.Max(0, top - Probes));
            return null;
        }

        public bool TryPut(T item)
        {
            var slots = _slots;
            var top = Volatile.Read(ref _top);
            for (var probe = 0; probe < Probes; probe++)
            {
                var i = top + probe;
                if ((uint)i >= (uint)slots.Length)
                {
                    break;
                }
                if (Volatile.Read(ref slots[i].Item) is null && Interlocked.CompareExchange(ref slots[i].Item, item, null) is null)
                {
                    Volatile.Write(ref _top, i + 1);
                    return true;
                }
            }
            // Full here: move the hint up, so a hint left too low by racing takes finds the free slots above it.
            Volatile.Write(ref _top, Math.Min(slots.Length, top + Probes));
            return false;
        }

        public void Clear()
        {
            for (var i = 0; i < _slots.Length; i++)
            {
                Volatile.Write(ref _slots[i].Item, null);
            }
            Volatile.Write(ref _top, 0);
        }

        private struct Slot
        {
            public T? Item;
        }
    }
}

[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 128)]
internal struct CacheLinePadding;
