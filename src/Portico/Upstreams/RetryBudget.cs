using Portico.Threading;

namespace Portico.Upstreams;

/// <summary>Settings of one <see cref="RetryBudget"/>. The defaults are Finagle's <c>RetryBudget()</c> defaults.</summary>
public sealed record RetryBudgetOptions
{
    /// <summary>
    /// Retries allowed per original request in the window, in [0, 1000] with a resolution of 0.001. Defaults to 0.2
    /// (Finagle's <c>percentCanRetry</c>): retries add at most 20% load to a struggling upstream.
    /// </summary>
    public double Ratio { get; init; } = 0.2;

    /// <summary>
    /// Retries per second allowed on top of the ratio, so that a client with little traffic (or just started) can
    /// still retry; counted over the window, so the floor is <c>MinRetriesPerSecond × Window</c> retries (100 with the
    /// defaults). Zero for none. Defaults to 10, Finagle's <c>minRetriesPerSec</c>.
    /// </summary>
    public int MinRetriesPerSecond { get; init; } = 10;

    /// <summary>How long requests and retries count; split into 10 buckets. Defaults to 10 s, Finagle's <c>ttl</c>.</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// Bounds retries to a share of recent traffic, in the style of Finagle's retry budget: a retry is allowed while
/// the retries in the last <see cref="RetryBudgetOptions.Window"/> stay within
/// <c>Ratio × requests + MinRetriesPerSecond × Window</c>. Lock-free; no allocation after construction.
/// </summary>
/// <remarks>
/// <para>
/// Why a budget on top of a per-request retry count: when an upstream fails every request, a count of 1 doubles its
/// load and a count of 3 quadruples it, just when it can least take it (a retry storm). The budget keeps retries a
/// fixed fraction of traffic, so a widespread failure costs at most <c>Ratio</c> extra load, while isolated failures
/// still retry freely. Envoy's <c>retry_budget</c> bounds concurrent retries against active requests instead; a
/// rate over a window needs no active-request gauge and behaves the same under steady load.
/// </para>
/// <para>
/// Call <see cref="RecordRequest"/> for each original request and <see cref="TryAcquireRetry"/> before each retry;
/// do not record retries as requests, or each retry would fund the next. Arithmetic is in integer thousandths, as
/// Finagle's token bucket, so 100 requests at 0.2 allow exactly 20 retries with no rounding surprise.
/// </para>
/// <para>
/// The check and the recording of a retry are two steps; threads that check at the same moment may all pass and
/// overshoot the budget by at most one retry each. That is harmless for a limit meant to stop storms, not to count
/// exactly (see <see cref="RollingCounter"/> on why counts are approximate).
/// </para>
/// </remarks>
public sealed class RetryBudget
{
    private const long Scale = 1000;

    private readonly TimeProvider _timeProvider;
    /// <summary>First: original requests; second: retries.</summary>
    private readonly RollingCounter _counter;
    private readonly long _depositPerRequest;
    private readonly long _floor;

    /// <summary>Creates a budget with no traffic recorded (the floor alone is available).</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public RetryBudget(RetryBudgetOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        if (!(options.Ratio >= 0 && options.Ratio <= 1000))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Ratio, "Ratio must be in [0, 1000].");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(options.MinRetriesPerSecond, nameof(options.MinRetriesPerSecond));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.Window, TimeSpan.Zero, nameof(options.Window));

        _timeProvider = timeProvider;
        Options = options;
        _depositPerRequest = (long)Math.Round(options.Ratio * Scale);
        _floor = (long)Math.Round(options.MinRetriesPerSecond * options.Window.TotalSeconds) * Scale;
        _counter = new RollingCounter(options.Window, timeProvider.TimestampFrequency);
    }

    /// <summary>The options the budget was created with.</summary>
    public RetryBudgetOptions Options { get; }

    /// <summary>Retries still allowed now (zero when spent), for metrics and tests.</summary>
    public long Available
    {
        get
        {
            _counter.Sum(Now(), out var requests, out var retries);
            return Math.Max(0, (Allowance(requests) / Scale) - retries);
        }
    }

    /// <summary>Counts one original request (not a retry). Call once per request, when it is received.</summary>
    public void RecordRequest() => _counter.IncrementFirst(Now());

    // The system clock through the loop's time (Threading.LoopClock: no clock read per request on an own loop); any
    // other provider (tests) as it is.
    private long Now() => ReferenceEquals(_timeProvider, TimeProvider.System) ? LoopClock.Timestamp : _timeProvider.GetTimestamp();

    /// <summary>
    /// True when the budget has room for one more retry, which is then counted; false when spent (nothing is
    /// counted, so a refused retry does not use budget).
    /// </summary>
    public bool TryAcquireRetry()
    {
        var now = Now();
        _counter.Sum(now, out var requests, out var retries);
        if ((retries + 1) * Scale > Allowance(requests))
        {
            return false;
        }

        _counter.IncrementSecond(now);
        return true;
    }

    private long Allowance(long requests) => (requests * _depositPerRequest) + _floor;
}
