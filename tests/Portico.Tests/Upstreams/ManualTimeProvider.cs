namespace Portico.Tests.Upstreams;

/// <summary>
/// A clock that moves only when told, so time-based logic is tested without sleeps. Timestamps are
/// <see cref="TimeSpan"/> ticks (10 MHz) from an arbitrary start; <see cref="Advance"/> is thread-safe.
/// </summary>
/// <remarks>
/// Hand-written rather than Microsoft.Extensions.Time.Testing's FakeTimeProvider to keep the test project free of
/// another package; the code under test needs only timestamps and the UTC clock, not timers.
/// </remarks>
internal sealed class ManualTimeProvider : TimeProvider
{
    private static readonly DateTimeOffset Epoch = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private long _ticks;

    /// <summary>Starts at <paramref name="start"/> after the epoch; a non-zero start catches code that assumes 0.</summary>
    public ManualTimeProvider(TimeSpan start = default)
    {
        _ticks = start.Ticks;
    }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => Volatile.Read(ref _ticks);

    public override DateTimeOffset GetUtcNow() => Epoch.AddTicks(Volatile.Read(ref _ticks));

    public void Advance(TimeSpan delta)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delta, TimeSpan.Zero);
        Interlocked.Add(ref _ticks, delta.Ticks);
    }
}
