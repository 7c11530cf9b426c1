using System.Diagnostics;

namespace Portico.Threading;

/// <summary>
/// The time of the request path: on an own epoll loop's thread, a <see cref="Stopwatch"/> timestamp read once when a
/// batch of events comes back from <c>epoll_wait</c> and again every <see cref="EventsPerTick"/> events of it, as
/// nginx and HAProxy keep the time of their loop iteration; anywhere else, the clock itself. A request read a clock
/// about six times (its start, the upstream send, the upstream head, its end, the retry budget, the request id),
/// each a vDSO <c>clock_gettime</c> (0.5 % of the proxy's CPU at c64 under perf, 0.1 % after); on the loop they now
/// cost a thread-static read. A time taken on the loop is early by at most the work of
/// <see cref="EventsPerTick"/> events (tens of microseconds at full load).
/// </summary>
internal static class LoopClock
{
    /// <summary>Events a loop dispatches between two reads of the clock.</summary>
    public const int EventsPerTick = 16;

    private static readonly long TicksPerMillisecond = Math.Max(1, Stopwatch.Frequency / 1000);

    // The loop's time (Stopwatch ticks) on an own loop's thread; 0 on every other thread.
    [ThreadStatic]
    private static long t_timestamp;

    // Unix milliseconds minus Stopwatch milliseconds, so a loop's timestamp gives the wall clock without reading it;
    // re-read from the wall clock once a second (a step of the system clock shows within a second).
    private static long s_unixOffsetMs = UnixOffset(Stopwatch.GetTimestamp());
    private static long s_rebaseAt;

    /// <summary>Now, as <see cref="Stopwatch.GetTimestamp"/>: the loop's time on a loop thread, the clock elsewhere.</summary>
    public static long Timestamp
    {
        get
        {
            var now = t_timestamp;
            return now != 0 ? now : Stopwatch.GetTimestamp();
        }
    }

    /// <summary>Now, in milliseconds since the Unix epoch (UTC).</summary>
    public static long UnixMilliseconds
    {
        get
        {
            var now = t_timestamp;
            return now != 0
                ? (now / TicksPerMillisecond) + Volatile.Read(ref s_unixOffsetMs)
                : DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        }
    }

    /// <summary>
    /// Time since <paramref name="startTimestamp"/> (from <see cref="Timestamp"/>); never negative, as a start taken
    /// off the loop can be later than the loop's time of the batch that ends it.
    /// </summary>
    public static TimeSpan Elapsed(long startTimestamp)
    {
        var ticks = Timestamp - startTimestamp;
        return ticks <= 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(0, ticks);
    }

    /// <summary>Reads the clock for the calling loop thread (the start of a batch, then every few events).</summary>
    public static void Tick()
    {
        var now = Stopwatch.GetTimestamp();
        t_timestamp = now;
        if (now >= Volatile.Read(ref s_rebaseAt))
        {
            Volatile.Write(ref s_unixOffsetMs, UnixOffset(now));
            Volatile.Write(ref s_rebaseAt, now + Stopwatch.Frequency);
        }
    }

    /// <summary>Makes the calling thread read the clock again (a loop thread that stops, and tests).</summary>
    public static void Leave() => t_timestamp = 0;

    private static long UnixOffset(long timestamp) =>
        DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - (timestamp / TicksPerMillisecond);
}
