namespace Portico.Upstreams;

/// <summary>
/// Two event counts (called <em>first</em> and <em>second</em>; the owner gives them meaning) over a rolling time
/// window, kept in a ring of buckets. Lock-free and allocation-free after construction. Used by
/// <see cref="CircuitBreaker"/> (successes, failures) and <see cref="RetryBudget"/> (requests, retries).
/// </summary>
/// <remarks>
/// <para>
/// The window is split into <see cref="BucketCount"/> buckets of <c>window / BucketCount</c> each. A bucket is
/// stamped with the absolute index of the time slice it counts (<c>timestamp / ticksPerBucket</c>); slice
/// <c>i</c> lives in slot <c>i % BucketCount</c>. A slot is reset lazily by the first writer of a newer slice, which
/// wins a compare-and-swap on the stamp; readers skip slots whose stamp is outside the window. So there is no timer
/// and no clean-up pass, and an idle counter costs nothing. The sum covers the current, partial slice and the
/// <c>BucketCount - 1</c> before it, i.e. between <c>window - window / BucketCount</c> and <c>window</c> of history:
/// an event leaves the window between 90% and 100% of <c>window</c> after it happened.
/// </para>
/// <para>
/// Counts are approximate under concurrency, by design, as in Hystrix's <c>HealthCounts</c> and Finagle's retry
/// budget. A writer that passed the stamp check just before another thread reset the slot for a new slice loses
/// its increment (or, descheduled for a whole window, adds it to the newer slice); a sum read while a slot is being
/// reset sees part of it. Each such race costs at most one event per racing thread, at a slice boundary, which is
/// noise against the hundreds of events that the thresholds built on this counter compare (a minimum of requests
/// for an error rate, a ratio of requests for retries). It may seem more correct to pack stamp and counts into one
/// 128-bit compare-and-swap, or to take a lock on reset, but the first is not portable and the second puts a lock on
/// the request path; the decisions do not need exact counts.
/// </para>
/// <para>
/// Timestamps are in the units of <see cref="TimeProvider.GetTimestamp"/>; the caller reads the clock once and
/// passes the value, so one request does not read the clock twice and tests need no clock at all.
/// </para>
/// </remarks>
internal sealed class RollingCounter
{
    /// <summary>Buckets per window; 10, as Hystrix's <c>metrics.rollingStats.numBuckets</c> default.</summary>
    public const int BucketCount = 10;

    /// <summary>Stamp of a slot that counts nothing: below any slice index, so the first writer always resets it.</summary>
    private const long EmptyStamp = long.MinValue;

    private readonly Bucket[] _buckets = new Bucket[BucketCount];
    private readonly long _ticksPerBucket;
    /// <summary>The slice index last computed by division; see <see cref="SliceOf"/>.</summary>
    private long _lastSlice;

    /// <summary>Creates an empty counter.</summary>
    /// <param name="window">How much history <see cref="Sum"/> covers; positive.</param>
    /// <param name="timestampFrequency">Timestamp ticks per second, <see cref="TimeProvider.TimestampFrequency"/>.</param>
    public RollingCounter(TimeSpan window, long timestampFrequency)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timestampFrequency, 0);

        // Through double: window ticks times frequency overflows a long for windows over about 15 minutes at the 1 GHz
        // Stopwatch frequency of Linux. Precision does not matter at this scale.
        _ticksPerBucket = Math.Max(1L, (long)(window.TotalSeconds * timestampFrequency / BucketCount));
        Window = window;
        Clear();
    }

    /// <summary>The window the counter was created with.</summary>
    public TimeSpan Window { get; }

    /// <summary>Counts one <em>first</em> event at <paramref name="timestamp"/>.</summary>
    public void IncrementFirst(long timestamp)
    {
        var slot = Claim(timestamp);
        if (slot >= 0)
        {
            Interlocked.Increment(ref _buckets[slot].First);
        }
    }

    /// <summary>Counts one <em>second</em> event at <paramref name="timestamp"/>.</summary>
    public void IncrementSecond(long timestamp)
    {
        var slot = Claim(timestamp);
        if (slot >= 0)
        {
            Interlocked.Increment(ref _buckets[slot].Second);
        }
    }

    /// <summary>Sums both counts over the window that ends at <paramref name="timestamp"/>.</summary>
    public void Sum(long timestamp, out long first, out long second)
    {
        var current = SliceOf(timestamp);
        var oldest = current - BucketCount;
        first = 0;
        second = 0;
        var buckets = _buckets;
        for (var i = 0; i < buckets.Length; i++)
        {
            ref var bucket = ref buckets[i];
            var stamp = Volatile.Read(ref bucket.Stamp);
            if (stamp > oldest && stamp <= current)
            {
                // Volatile.Read, not Interlocked.Read: the latter is a locked compare-exchange that writes the cache
                // line, which would make every reader contend with the writers.
                first += Volatile.Read(ref bucket.First);
                second += Volatile.Read(ref bucket.Second);
            }
        }
    }

    /// <summary>
    /// Forgets all events. Concurrent increments may survive or be lost (see the remarks on the type); callers clear
    /// on a state change, when a stray event or two does not matter.
    /// </summary>
    public void Clear()
    {
        var buckets = _buckets;
        for (var i = 0; i < buckets.Length; i++)
        {
            // Only the stamp: the next writer of the slot resets the counts when it claims it.
            Volatile.Write(ref buckets[i].Stamp, EmptyStamp);
        }
    }

    /// <summary>
    /// The slot counting the slice of <paramref name="timestamp"/>, reset first if it still holds an older slice; -1
    /// when a newer slice already owns the slot (this thread was descheduled for a whole window), and the event is
    /// dropped rather than counted in the wrong slice.
    /// </summary>
    private int Claim(long timestamp)
    {
        var index = SliceOf(timestamp);
        // Unsigned remainder keeps the slot in range should a clock ever return a negative timestamp.
        var slot = (int)((ulong)index % BucketCount);
        ref var bucket = ref _buckets[slot];
        while (true)
        {
            var stamp = Volatile.Read(ref bucket.Stamp);
            if (stamp == index)
            {
                return slot;
            }

            if (stamp > index)
            {
                return -1;
            }

            if (Interlocked.CompareExchange(ref bucket.Stamp, index, stamp) == stamp)
            {
                // This thread owns the reset. Exchange rather than a plain store: a long store is not atomic on 32-bit.
                Interlocked.Exchange(ref bucket.First, 0);
                Interlocked.Exchange(ref bucket.Second, 0);
                return slot;
            }

            // Another thread moved the stamp first; look again (it is now this slice, or a newer one).
        }
    }

    /// <summary>
    /// <c>timestamp / _ticksPerBucket</c>, usually without dividing: a 64-bit division by a variable costs tens of
    /// cycles on many x64 cores, as much as the rest of a report, while consecutive calls nearly always fall in the
    /// slice of the previous call. So the last slice is remembered and checked with a multiply. The hint is only a
    /// hint: a racing thread may overwrite it with an older slice, which costs the next caller one division, never a
    /// wrong answer, because the check itself is exact.
    /// </summary>
    private long SliceOf(long timestamp)
    {
        var hint = Volatile.Read(ref _lastSlice);
        if ((ulong)(timestamp - (hint * _ticksPerBucket)) < (ulong)_ticksPerBucket)
        {
            return hint;
        }

        var slice = timestamp / _ticksPerBucket;
        Volatile.Write(ref _lastSlice, slice);
        return slice;
    }

    private struct Bucket
    {
        public long Stamp;
        public long First;
        public long Second;
    }
}
