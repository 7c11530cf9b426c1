using Portico.Threading;

namespace Portico.Upstreams;

/// <summary>
/// The read timeouts and client aborts of Portico's own HTTP/1.1 client, checked by one periodic scan of the open
/// upstream connections instead of a timer and two cancellation registrations per request (as Kestrel's heartbeat and
/// HAProxy's per-connection expiry dates do).
/// </summary>
/// <remarks>
/// A connection joins the set when it opens and leaves it when it closes (under a lock, once each). For an exchange,
/// the request path only writes the connection's deadline and the client's abort token; the scan closes a connection
/// whose deadline has passed or whose client went away, which ends any pending send or receive. The scan runs every
/// <see cref="MaxPeriodMs"/> ms, or a quarter of the smallest read timeout seen when that is shorter (down to
/// <see cref="MinPeriodMs"/>), so a timeout fires within that period after it is due. Measured before this (a pooled source, <c>CancelAfter</c> and two registrations per request): 2.5–3 % of
/// the proxy's CPU at 256 connections.
/// </remarks>
internal static class UpstreamWatchdog
{
    internal const int MaxPeriodMs = 100;
    internal const int MinPeriodMs = 5;

    private static readonly Portico.Threading.SlotSet<UpstreamConnection> Connections = new();
    private static readonly Lock Gate = new();
    private static Thread? _thread;
    private static int _periodMs = MaxPeriodMs;

    /// <summary>The scan period now, in milliseconds.</summary>
    internal static int PeriodMs => Volatile.Read(ref _periodMs);

    public static void Add(UpstreamConnection connection)
    {
        Connections.Add(connection);
        if (_thread is null)
        {
            lock (Gate)
            {
                if (_thread is null)
                {
                    // Its own thread, not a timer: a timer callback wakes a thread-pool worker, which then spins with
                    // sched_yield for work before it sleeps, on a proxy's one busy core 10 times a second (about 1 % of
                    // the CPU at c256 in a profile).
                    _thread = ServiceThread.Start("portico-watchdog", static () => Run());
                }
            }
        }
    }

    public static void Remove(UpstreamConnection connection) => Connections.Remove(connection);

    /// <summary>Makes the scan at least four times as frequent as <paramref name="timeoutMs"/> (rarely: per new smallest timeout).</summary>
    public static void NoteTimeout(long timeoutMs)
    {
        var wanted = (int)Math.Clamp(timeoutMs / 4, MinPeriodMs, MaxPeriodMs);
        if (wanted >= Volatile.Read(ref _periodMs))
        {
            return;
        }
        lock (Gate)
        {
            if (wanted < _periodMs)
            {
                _periodMs = wanted;
            }
        }
    }

    private static void Run()
    {
        while (true)
        {
            Thread.Sleep(Volatile.Read(ref _periodMs));
            try
            {
                Scan();
            }
            catch (Exception ex)
            {
                // A close that throws is a bug; the watchdog must outlive it.
                Console.Error.WriteLine("portico: unhandled exception in the upstream watchdog: " + ex);
            }
        }
    }

    /// <summary>One pass: closes every connection whose deadline passed or whose client went away.</summary>
    internal static void Scan()
    {
        // Outside the set's lock: closing a connection removes it from the set.
        Connections.ForEach(static (connection, now) => connection.Expire(now), Environment.TickCount64);
    }
}
