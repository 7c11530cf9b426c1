using System.Collections.Concurrent;

namespace Portico.Proxy;

/// <summary>
/// Pooled cancellation sources for the per-attempt read timeout. A linked source plus <c>CancelAfter</c> per request
/// cost a source, a timer and two registrations (about 8 % of the bytes a proxied request allocated, measured with
/// GC allocation ticks); a source that ended uncancelled is reset (<see cref="CancellationTokenSource.TryReset"/>,
/// which also stops its timer and drops its callbacks) and reused, keeping its timer.
/// </summary>
internal static class TimeoutSource
{
    private const int MaxPooled = 1024;
    private static readonly ConcurrentQueue<CancellationTokenSource> Pool = new();
    private static int _pooled;

    /// <summary>
    /// A source that is cancelled when <paramref name="linkedTo"/> is, or after <paramref name="timeout"/>; dispose the
    /// lease to return it.
    /// </summary>
    public static Lease Rent(CancellationToken linkedTo, TimeSpan timeout)
    {
        if (Pool.TryDequeue(out var source))
        {
            Interlocked.Decrement(ref _pooled);
        }
        else
        {
            source = new CancellationTokenSource();
        }
        var registration = linkedTo.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), source);
        source.CancelAfter(timeout);
        return new Lease(source, registration);
    }

    private static void Return(CancellationTokenSource source)
    {
        if (source.TryReset())
        {
            if (Interlocked.Increment(ref _pooled) <= MaxPooled)
            {
                Pool.Enqueue(source);
                return;
            }
            Interlocked.Decrement(ref _pooled);
        }
        source.Dispose();
    }

    /// <summary>A rented source; <see cref="Dispose"/> unlinks it and returns it to the pool.</summary>
    public readonly struct Lease(CancellationTokenSource source, CancellationTokenRegistration registration) : IDisposable
    {
        public CancellationTokenSource Source { get; } = source;

        public void Dispose()
        {
            // Waits for a running link callback, so the source is not cancelled after it was reset.
            registration.Dispose();
            Return(Source);
        }
    }
}
