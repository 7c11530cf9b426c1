using System.Buffers;

namespace Portico.Threading;

/// <summary>A member of a <see cref="SlotSet{T}"/>: its index there, -1 when it is not in one.</summary>
internal interface ISlotted
{
    int Slot { get; set; }
}

/// <summary>
/// The objects a periodic scan visits (the own server's connections for the heartbeat, the upstream connections for
/// the watchdog). Each joins and leaves once, under a lock, in O(1): it keeps its index, and the last member moves into
/// a freed slot. A scan works on a snapshot outside the lock, so what it calls may leave the set.
/// </summary>
internal sealed class SlotSet<T> where T : class, ISlotted
{
    private readonly Lock _gate = new();
    private T?[] _items = new T?[64];
    private int _count;

    public void Add(T item)
    {
        lock (_gate)
        {
            if (item.Slot >= 0)
            {
                return;
            }
            if (_count == _items.Length)
            {
                Array.Resize(ref _items, _items.Length * 2);
            }
            item.Slot = _count;
            _items[_count++] = item;
        }
    }

    public void Remove(T item)
    {
        lock (_gate)
        {
            var slot = item.Slot;
            if (slot < 0)
            {
                return;
            }
            var last = _items[--_count]!;
            _items[slot] = last;
            last.Slot = slot;
            _items[_count] = null;
            item.Slot = -1;
        }
    }

    /// <summary>The members now, in a pooled array (the first <paramref name="count"/>); give it back with <see cref="ReturnSnapshot"/>.</summary>
    public T[] RentSnapshot(out int count)
    {
        lock (_gate)
        {
            count = _count;
            var snapshot = ArrayPool<T>.Shared.Rent(Math.Max(count, 1));
            Array.Copy(_items, snapshot, count);
            return snapshot;
        }
    }

    public static void ReturnSnapshot(T[] snapshot) => ArrayPool<T>.Shared.Return(snapshot, clearArray: true);

    /// <summary>
    /// Calls <paramref name="visit"/> for each member of a snapshot, outside the set's lock: a visit may make its member
    /// (or another) leave the set.
    /// </summary>
    public void ForEach<TState>(Action<T, TState> visit, TState state)
    {
        var snapshot = RentSnapshot(out var count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                visit(snapshot[i], state);
            }
        }
        finally
        {
            ReturnSnapshot(snapshot);
        }
    }
}
