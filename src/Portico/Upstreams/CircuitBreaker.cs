using Portico.Config;

namespace Portico.Upstreams;

/// <summary>
/// State of a <see cref="CircuitBreaker"/>. The numeric values are exported as the metric
/// <c>pingora_circuit_breaker_state</c>; do not renumber.
/// </summary>
public enum CircuitState
{
    /// <summary>Requests flow; outcomes are counted in the rolling window.</summary>
    Closed = 0,

    /// <summary>Requests are refused until <see cref="CircuitBreakerOptions.OpenTimeout"/> has passed.</summary>
    Open = 1,

    /// <summary>A few probe requests are let through to decide between closing and opening again.</summary>
    HalfOpen = 2,
}

/// <summary>Settings of one <see cref="CircuitBreaker"/>; build from YAML with <see cref="From"/>.</summary>
public sealed record CircuitBreakerOptions
{
    /// <summary>
    /// Error rate in (0, 1] that opens the breaker when exceeded (strictly: a rate equal to it keeps the breaker
    /// closed). The seed configuration uses 0.1.
    /// </summary>
    public required double ErrorThreshold { get; init; }

    /// <summary>How long the breaker stays open before it lets probes through. The seed configuration uses 60 s.</summary>
    public required TimeSpan OpenTimeout { get; init; }

    /// <summary>Requests that must be in the window before the error rate is believed; at least 1.</summary>
    public required int MinRequests { get; init; }

    /// <summary>Length of the rolling window over which the error rate is computed; split into 10 buckets.</summary>
    public required TimeSpan Window { get; init; }

    /// <summary>
    /// Probe requests let through when half-open, and the successes (with no failure between) that close the
    /// breaker; at least 1. Defaults to 3: enough to not close on one lucky request, few enough to not flood a server
    /// that is still down.
    /// </summary>
    public int HalfOpenProbes { get; init; } = 3;

    /// <summary>Maps the YAML <c>circuit_breaker</c> block (validated by the config validator) to options.</summary>
    public static CircuitBreakerOptions From(CircuitBreakerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new CircuitBreakerOptions
        {
            ErrorThreshold = config.ErrorThreshold,
            OpenTimeout = TimeSpan.FromSeconds(config.TimeoutSeconds),
            MinRequests = config.MinRequests,
            Window = TimeSpan.FromSeconds(config.WindowSeconds),
        };
    }
}

/// <summary>
/// A circuit breaker for one upstream server, on the error rate over a rolling window, with half-open probing.
/// Lock-free; no allocation after construction.
/// </summary>
/// <remarks>
/// <para>
/// Use: call <see cref="TryAcquire"/> before sending a request to the server; when it returns true, report exactly
/// one of <see cref="OnSuccess"/>, <see cref="OnFailure"/> or <see cref="Release"/> when the request ends (in a
/// <c>finally</c>). When it returns false, pick another server. What counts as a failure (connect error, timeout,
/// 5xx) is the caller's choice.
/// </para>
/// <para>
/// <b>Closed</b>: every request passes. Outcomes go into a <see cref="RollingCounter"/> over
/// <see cref="CircuitBreakerOptions.Window"/>. After a failure, when the window holds at least
/// <see cref="CircuitBreakerOptions.MinRequests"/> requests and failures / requests is above
/// <see cref="CircuitBreakerOptions.ErrorThreshold"/>, the breaker opens. The rate is checked on failures only, as
/// Polly v8 does: a success cannot raise the rate, so the common path stays a clock read and one interlocked
/// increment. The one case this delays is a success that brings the count up to the minimum while the rate is
/// already too high; the next failure opens the breaker.
/// </para>
/// <para>
/// <b>Open</b>: <see cref="TryAcquire"/> returns false until <see cref="CircuitBreakerOptions.OpenTimeout"/> has
/// passed since the breaker opened; the first call after that moves it to half-open.
/// </para>
/// <para>
/// <b>HalfOpen</b>: at most <see cref="CircuitBreakerOptions.HalfOpenProbes"/> probes are let through. A probe's
/// failure opens the breaker again, with a new timeout; <see cref="CircuitBreakerOptions.HalfOpenProbes"/> successes
/// close it with an empty window, so failures from before the outage cannot reopen it. A probe slot is held until its
/// success (successes count towards closing) or its <see cref="Release"/>; a probe that is never reported holds its
/// slot until a failure reopens the breaker, which is why every acquire must be paired with a report. A timer that
/// reclaims lost probes was considered and rejected: it has to guess how long a probe may legitimately take, and a
/// guess shorter than the upstream read timeout would keep the breaker from ever closing.
/// </para>
/// <para>
/// Transitions: the state is an <see cref="int"/> changed by compare-and-swap, so exactly one thread performs each
/// transition. The winner first moves the state to a private transitioning value, writes the opened-at timestamp
/// and resets the probe counters and window, then publishes the new state with a release write; a reader that sees
/// the new state therefore sees its fields. While transitioning (a few nanoseconds) <see cref="TryAcquire"/> refuses
/// and reports are ignored.
/// </para>
/// <para>
/// Outcomes are not tied to the state they were acquired in (that would need a token from
/// <see cref="TryAcquire"/>). A request admitted while closed that ends after the breaker opened is ignored while
/// open; if it ends only after the timeout, in half-open, its failure reopens the breaker (conservative) and its
/// success counts as a probe success (it is evidence that the server answered). Such a request must outlive
/// <see cref="CircuitBreakerOptions.OpenTimeout"/>, so this is rare; resilience4j has the same behaviour.
/// </para>
/// </remarks>
public sealed class CircuitBreaker
{
    /// <summary>Added to the target state while a transition writes its fields; see the remarks on the type.</summary>
    private const int Transitioning = 4;

    private readonly TimeProvider _timeProvider;
    private readonly RollingCounter _window;
    private readonly double _errorThreshold;
    private readonly long _minRequests;
    private readonly long _openTimeoutTicks;
    private readonly int _halfOpenProbes;

    private int _state = (int)CircuitState.Closed;
    /// <summary>Timestamp of the last move to Open; written only by the winner of that transition.</summary>
    private long _openedAt;
    /// <summary>Probe slots taken in this half-open period: acquired probes not released.</summary>
    private int _probeSlots;
    /// <summary>Probe successes in this half-open period.</summary>
    private int _probeSuccesses;
    private long _transitions;

    /// <summary>Creates a closed breaker.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public CircuitBreaker(CircuitBreakerOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        if (!(options.ErrorThreshold > 0 && options.ErrorThreshold <= 1))
        {
            throw new ArgumentOutOfRangeException(
                nameof(options), options.ErrorThreshold, "ErrorThreshold must be in (0, 1].");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(options.OpenTimeout, TimeSpan.Zero, nameof(options.OpenTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MinRequests, 1, nameof(options.MinRequests));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.Window, TimeSpan.Zero, nameof(options.Window));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.HalfOpenProbes, 1, nameof(options.HalfOpenProbes));

        _timeProvider = timeProvider;
        Options = options;
        _errorThreshold = options.ErrorThreshold;
        _minRequests = options.MinRequests;
        _halfOpenProbes = options.HalfOpenProbes;
        var frequency = timeProvider.TimestampFrequency;
        // Through double: OpenTimeout ticks times a 1 GHz frequency overflows a long beyond about 15 minutes.
        _openTimeoutTicks = (long)Math.Ceiling(options.OpenTimeout.TotalSeconds * frequency);
        _window = new RollingCounter(options.Window, frequency);
    }

    /// <summary>The options the breaker was created with.</summary>
    public CircuitBreakerOptions Options { get; }

    /// <summary>
    /// The current state. A breaker in Open whose timeout has passed still reports Open until the next
    /// <see cref="TryAcquire"/> moves it to HalfOpen.
    /// </summary>
    public CircuitState State => (CircuitState)(Volatile.Read(ref _state) & ~Transitioning);

    /// <summary>State changes since creation (Closed → Open → HalfOpen → Closed is 3), for metrics and tests.</summary>
    public long Transitions => Volatile.Read(ref _transitions);

    /// <summary>
    /// While open, the time left until probes are let through (zero once it has passed); null in any other state.
    /// Suits a <c>Retry-After</c> header when every server of an upstream is open.
    /// </summary>
    public TimeSpan? OpenRemaining
    {
        get
        {
            if (Volatile.Read(ref _state) != (int)CircuitState.Open)
            {
                return null;
            }

            var elapsed = _timeProvider.GetTimestamp() - Volatile.Read(ref _openedAt);
            var remaining = _openTimeoutTicks - elapsed;
            // As TimeProvider.GetElapsedTime: through a double ratio, which is exact when the frequency is TimeSpan's.
            return remaining <= 0
                ? TimeSpan.Zero
                : new TimeSpan((long)(remaining * ((double)TimeSpan.TicksPerSecond / _timeProvider.TimestampFrequency)));
        }
    }

    /// <summary>
    /// Asks to send one request. True when closed, or when half-open and a probe slot is free (the call that finds
    /// the open timeout passed moves the breaker to half-open). A true result must be followed by exactly one of
    /// <see cref="OnSuccess"/>, <see cref="OnFailure"/> or <see cref="Release"/>.
    /// </summary>
    public bool TryAcquire()
    {
        var state = Volatile.Read(ref _state);
        if (state == (int)CircuitState.Closed)
        {
            return true;
        }

        if (state == (int)CircuitState.Open)
        {
            var now = _timeProvider.GetTimestamp();
            if (now - Volatile.Read(ref _openedAt) < _openTimeoutTicks)
            {
                return false;
            }

            // Several threads may find the timeout passed; one moves the breaker, and all of them (the winner too)
            // then compete for probe slots below like any half-open caller.
            TryTransition(CircuitState.Open, CircuitState.HalfOpen, now);
            state = Volatile.Read(ref _state);
            if (state == (int)CircuitState.Closed)
            {
                return true;
            }
        }

        if (state != (int)CircuitState.HalfOpen)
        {
            return false;
        }

        while (true)
        {
            var slots = Volatile.Read(ref _probeSlots);
            if (slots >= _halfOpenProbes)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _probeSlots, slots + 1, slots) == slots)
            {
                return true;
            }
        }
    }

    /// <summary>Reports that an acquired request succeeded.</summary>
    public void OnSuccess()
    {
        var state = Volatile.Read(ref _state);
        if (state == (int)CircuitState.Closed)
        {
            _window.IncrementFirst(_timeProvider.GetTimestamp());
        }
        else if (state == (int)CircuitState.HalfOpen)
        {
            // Equality, not >=: exactly one thread sees the count reach the target and closes the breaker.
            if (Interlocked.Increment(ref _probeSuccesses) == _halfOpenProbes)
            {
                TryTransition(CircuitState.HalfOpen, CircuitState.Closed, _timeProvider.GetTimestamp());
            }
        }

        // Open or transitioning: a request admitted before the breaker opened; its outcome no longer matters.
    }

    /// <summary>Reports that an acquired request failed; may open the breaker.</summary>
    public void OnFailure()
    {
        var state = Volatile.Read(ref _state);
        if (state == (int)CircuitState.Closed)
        {
            var now = _timeProvider.GetTimestamp();
            _window.IncrementSecond(now);
            _window.Sum(now, out var successes, out var failures);
            var total = successes + failures;
            // Division, not failures > threshold * total: division is correctly rounded, so a rate of exactly
            // 10 / 100 equals the literal 0.1 and stays closed, as documented on ErrorThreshold.
            if (total >= _minRequests && (double)failures / total > _errorThreshold)
            {
                TryTransition(CircuitState.Closed, CircuitState.Open, now);
            }
        }
        else if (state == (int)CircuitState.HalfOpen)
        {
            TryTransition(CircuitState.HalfOpen, CircuitState.Open, _timeProvider.GetTimestamp());
        }
    }

    /// <summary>
    /// Gives back an acquired request without an outcome: the request was never sent, or the downstream went away
    /// before the upstream answered. Frees the probe slot when half-open; does nothing otherwise.
    /// </summary>
    public void Release()
    {
        if (Volatile.Read(ref _state) != (int)CircuitState.HalfOpen)
        {
            return;
        }

        while (true)
        {
            var slots = Volatile.Read(ref _probeSlots);
            // Never below zero: a request acquired while closed may be released in half-open.
            if (slots <= 0 || Interlocked.CompareExchange(ref _probeSlots, slots - 1, slots) == slots)
            {
                return;
            }
        }
    }

    private bool TryTransition(CircuitState from, CircuitState to, long now)
    {
        if (Interlocked.CompareExchange(ref _state, (int)to | Transitioning, (int)from) != (int)from)
        {
            return false;
        }

        switch (to)
        {
            case CircuitState.Open:
                Volatile.Write(ref _openedAt, now);
                break;
            case CircuitState.HalfOpen:
                Volatile.Write(ref _probeSlots, 0);
                Volatile.Write(ref _probeSuccesses, 0);
                break;
            case CircuitState.Closed:
                _window.Clear();
                break;
        }

        Interlocked.Increment(ref _transitions);
        // Release write: a thread that reads the new state also sees the fields written above.
        Volatile.Write(ref _state, (int)to);
        return true;
    }
}
