namespace Portico.Server;

/// <summary>
/// Gives memory back once the process goes quiet after load, as nginx's memory simply stays small. Two things keep
/// memory a burst used resident in a .NET process that then goes idle: the GC keeps the regions the burst filled
/// committed until the next collection, which on an idle process never comes; and the runtime keeps the JIT's freed
/// 64 KiB scratch blocks in a cache of up to 16 MiB, emptied only when the finalizer thread wakes twice at least 2 s
/// apart, which on an idle process does not happen either. The heartbeat calls <see cref="OnTick"/> once a second;
/// after <see cref="QuietSeconds"/> seconds in which the process allocated almost nothing, following at least
/// <see cref="MinimumAllocated"/> bytes allocated since the last trim, the connections' pooled buffers are dropped
/// (<see cref="Threading.BufferPool"/>) and one aggressive full collection compacts the heap
/// and decommits what is free; the finalizer thread is then woken at that tick and twice more, 3 s apart (so the JIT's
/// cache is flushed twice, which frees it), each of those followed by giving the C heap's free pages back to the
/// system (malloc_trim). Usually done 6 s after the load stopped, at the latest 9 s.
/// </summary>
/// <remarks>
/// Measured with 10,000 idle keep-alive connections after one request each (bench idle scenario, docs/performance.md):
/// 6.6 KiB of RSS per connection without the trim, 4.2–4.5 KiB with the collection alone, 2.5–3.3 KiB with the
/// JIT cache flushed too. The work runs only when nothing is being served, so it delays no request that was already
/// there; on a 30 MB heap the collection takes a few tens of milliseconds. <c>PORTICO_IDLE_TRIM=0</c> turns it off.
/// </remarks>
internal static class IdleTrim
{
    /// <summary>The environment variable that turns the trim off ("0").</summary>
    public const string Variable = "PORTICO_IDLE_TRIM";

    /// <summary>Seconds of quiet before the trim.</summary>
    public const int QuietSeconds = 3;

    /// <summary>Less than this allocated in a second counts as quiet (the heartbeat and a scrape allocate a little).</summary>
    public const long QuietBytesPerSecond = 256 * 1024;

    /// <summary>No trim unless this much was allocated since the last one: a quiet process is left alone.</summary>
    public const long MinimumAllocated = 16L * 1024 * 1024;

    public static bool Enabled { get; } = Environment.GetEnvironmentVariable(Variable) != "0";

    private static long _lastAllocated;
    private static long _allocatedAtTrim;
    private static int _quietTicks;
    private static bool _trimming;

    /// <summary>Called by the heartbeat, on its timer thread, once a second.</summary>
    public static void OnTick()
    {
        if (!Enabled)
        {
            return;
        }
        var allocated = GC.GetTotalAllocatedBytes(precise: false);
        var quiet = allocated - _lastAllocated < QuietBytesPerSecond;
        _quietTicks = quiet ? _quietTicks + 1 : 0;
        _lastAllocated = allocated;
        if (!quiet)
        {
            // Load again: the JIT cache is busy anyway; the next quiet spell starts over.
            _trimming = false;
            return;
        }
        if (_quietTicks == QuietSeconds && allocated - _allocatedAtTrim >= MinimumAllocated)
        {
            _allocatedAtTrim = allocated;
            _trimming = true;
            Threading.BufferPool.ClearAll();   // the buffers a burst needed, free for the collection below
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            ThreadPool.UnsafeQueueUserWorkItem(static _ => WakeFinalizer(trimNativeHeap: false), null);
        }
        else if (_trimming && (_quietTicks == 2 * QuietSeconds || _quietTicks == 3 * QuietSeconds))
        {
            ThreadPool.UnsafeQueueUserWorkItem(static _ => WakeFinalizer(trimNativeHeap: true), null);
            if (_quietTicks == 3 * QuietSeconds)
            {
                _trimming = false;
            }
        }
    }

    /// <summary>
    /// On the thread pool, not the heartbeat (which also runs the connections' timeouts): wakes the finalizer thread,
    /// which is where the runtime flushes the JIT's block cache (one flush moves the cache aside, the next, at least
    /// 2 s later, frees what was moved aside), and waits for it; then gives the C heap's free pages back.
    /// </summary>
    private static void WakeFinalizer(bool trimNativeHeap)
    {
        GC.WaitForPendingFinalizers();
        if (trimNativeHeap)
        {
            Hosting.UnixNative.TrimNativeHeap();
        }
    }
}
