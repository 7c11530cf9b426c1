using System.Runtime.CompilerServices;
using Portico.Upstreams;

namespace Portico.Admin;

/// <summary>
/// Recent request and failure rates of servers, for the admin API: each server's running totals
/// (<see cref="ServerState.Requests"/>, <see cref="ServerState.Failures"/>) are sampled about once a second into a small
/// ring, and a rate is the difference between the totals now and the oldest sample, over the time between them.
/// </summary>
/// <remarks>
/// <para>
/// The request path only increments the two totals; everything here runs on the admin side. It may seem simpler to
/// keep a rolling window per server on the request path (as the circuit breaker does), but that costs a clock read
/// and a bucket check per request for a number only an operator looks at; sampling totals costs nothing per request.
/// </para>
/// <para>
/// Histories are keyed by the <see cref="ServerState"/> object, which a reload carries over for a server that is still
/// configured, so rates continue across reloads; a server that leaves the config is dropped with its state (weak keys).
/// </para>
/// </remarks>
internal sealed class ServerRates
{
    /// <summary>Samples kept per server: with one a second, the rate covers the last 10 s.</summary>
    public const int Capacity = 10;

    private const double MinimumSeconds = 1.0;

    private readonly ConditionalWeakTable<ServerState, History> _histories = [];
    private readonly TimeProvider _time;

    public ServerRates(TimeProvider time)
    {
        _time = time;
    }

    /// <summary>Records the totals of <paramref name="states"/> now. Called by a timer about once a second.</summary>
    public void Sample(IEnumerable<ServerState> states)
    {
        var now = _time.GetTimestamp();
        foreach (var state in states)
        {
            _histories.GetOrCreateValue(state).Add(now, state.Requests, state.Failures);
        }
    }

    /// <summary>
    /// Requests and failures per second of <paramref name="state"/> since its oldest sample (up to
    /// <see cref="Capacity"/> samples ago); zero until a second of history exists.
    /// </summary>
    public (double RequestsPerSecond, double FailuresPerSecond) RatesOf(ServerState state)
    {
        if (!_histories.TryGetValue(state, out var history))
        {
            return (0, 0);
        }
        return history.RatesUntil(_time.GetTimestamp(), state.Requests, state.Failures, _time.TimestampFrequency);
    }

    private sealed class History
    {
        private readonly Lock _gate = new();
        private readonly long[] _timestamps = new long[Capacity];
        private readonly long[] _requests = new long[Capacity];
        private readonly long[] _failures = new long[Capacity];
        private int _count;
        private int _next;

        public void Add(long timestamp, long requests, long failures)
        {
            lock (_gate)
            {
                _timestamps[_next] = timestamp;
                _requests[_next] = requests;
                _failures[_next] = failures;
                _next = (_next + 1) % Capacity;
                _count = Math.Min(_count + 1, Capacity);
            }
        }

        public (double, double) RatesUntil(long now, long requests, long failures, long frequency)
        {
            lock (_gate)
            {
                if (_count == 0)
                {
                    return (0, 0);
                }
                var oldest = _count < Capacity ? 0 : _next;
                var seconds = (double)(now - _timestamps[oldest]) / frequency;
                if (seconds < MinimumSeconds)
                {
                    // Right after the first sample a handful of requests over a few milliseconds would read as a
                    // huge rate.
                    return (0, 0);
                }
                // Totals only grow; Math.Max guards against a state object that was reset by a test or a future change.
                return (Math.Max(0, requests - _requests[oldest]) / seconds, Math.Max(0, failures - _failures[oldest]) / seconds);
            }
        }
    }
}
