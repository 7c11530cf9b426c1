using BenchmarkDotNet.Attributes;
using Portico.Upstreams;

namespace Portico.Benchmarks;

/// <summary>
/// The per-request cost of the circuit breaker and the retry budget, single-threaded, on the system clock: the
/// closed-state admit and success report (every proxied request), a failure report (which also sums the window),
/// and the retry budget's request count and retry check. All must allocate nothing.
/// </summary>
[MemoryDiagnoser]
public class CircuitBreakerBenchmarks
{
    private CircuitBreaker _breaker = null!;
    private CircuitBreaker _neverOpens = null!;
    private RetryBudget _budget = null!;

    [GlobalSetup]
    public void Setup()
    {
        var options = new CircuitBreakerOptions
        {
            ErrorThreshold = 0.1,
            OpenTimeout = TimeSpan.FromSeconds(60),
            MinRequests = 20,
            Window = TimeSpan.FromSeconds(10),
        };
        _breaker = new CircuitBreaker(options, TimeProvider.System);
        // A minimum no window reaches, so failures are counted and the rate computed, but the breaker stays closed.
        _neverOpens = new CircuitBreaker(options with { MinRequests = int.MaxValue }, TimeProvider.System);
        _budget = new RetryBudget(new RetryBudgetOptions(), TimeProvider.System);
    }

    /// <summary>The clock read that every report pays once, for reference.</summary>
    [Benchmark]
    public long SystemClock() => TimeProvider.System.GetTimestamp();

    [Benchmark(Baseline = true)]
    public bool TryAcquireOnSuccess()
    {
        if (!_breaker.TryAcquire())
        {
            return false;
        }

        _breaker.OnSuccess();
        return true;
    }

    [Benchmark]
    public bool TryAcquireOnFailure()
    {
        if (!_neverOpens.TryAcquire())
        {
            return false;
        }

        _neverOpens.OnFailure();
        return true;
    }

    [Benchmark]
    public void RetryBudgetRecordRequest() => _budget.RecordRequest();

    [Benchmark]
    public bool RetryBudgetRecordRequestTryAcquireRetry()
    {
        // One request, then a retry check: at 0.2 most checks are refused, as under an outage, after a sum either way.
        _budget.RecordRequest();
        return _budget.TryAcquireRetry();
    }
}
