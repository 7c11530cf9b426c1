using Portico.Config;
using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class CircuitBreakerTests
{
    // The seed configuration's error_threshold and timeout_seconds; the config defaults for the others.
    private static readonly CircuitBreakerOptions Seed = new()
    {
        ErrorThreshold = 0.1,
        OpenTimeout = TimeSpan.FromSeconds(60),
        MinRequests = 20,
        Window = TimeSpan.FromSeconds(10),
    };

    // Not on a bucket boundary, and far from zero, so no test depends on where the clock starts.
    private readonly ManualTimeProvider _time = new(TimeSpan.FromSeconds(12_345.678));

    [Fact]
    public void New_IsClosedAndAdmits()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.TryAcquire());
        Assert.Equal(0, breaker.Transitions);
        Assert.Null(breaker.OpenRemaining);
    }

    [Fact]
    public void StateValues_MatchTheExportedMetric()
    {
        Assert.Equal(0, (int)CircuitState.Closed);
        Assert.Equal(1, (int)CircuitState.Open);
        Assert.Equal(2, (int)CircuitState.HalfOpen);
    }

    [Fact]
    public void From_MapsConfig()
    {
        var options = CircuitBreakerOptions.From(new CircuitBreakerConfig
        {
            ErrorThreshold = 0.1,
            TimeoutSeconds = 60,
            MinRequests = 5,
            WindowSeconds = 30,
        });

        Assert.Equal(0.1, options.ErrorThreshold);
        Assert.Equal(TimeSpan.FromSeconds(60), options.OpenTimeout);
        Assert.Equal(5, options.MinRequests);
        Assert.Equal(TimeSpan.FromSeconds(30), options.Window);
        Assert.Equal(3, options.HalfOpenProbes);
    }

    [Theory]
    [InlineData(0.0, 60, 20, 10, 3)]
    [InlineData(-0.1, 60, 20, 10, 3)]
    [InlineData(1.01, 60, 20, 10, 3)]
    [InlineData(double.NaN, 60, 20, 10, 3)]
    [InlineData(0.1, -1, 20, 10, 3)]
    [InlineData(0.1, 60, 0, 10, 3)]
    [InlineData(0.1, 60, 20, 0, 3)]
    [InlineData(0.1, 60, 20, 10, 0)]
    public void Constructor_OptionOutOfRange_Throws(
        double threshold, int timeoutSeconds, int minRequests, int windowSeconds, int probes)
    {
        var options = new CircuitBreakerOptions
        {
            ErrorThreshold = threshold,
            OpenTimeout = TimeSpan.FromSeconds(timeoutSeconds),
            MinRequests = minRequests,
            Window = TimeSpan.FromSeconds(windowSeconds),
            HalfOpenProbes = probes,
        };

        Assert.Throws<ArgumentOutOfRangeException>(() => new CircuitBreaker(options, _time));
    }

    [Fact]
    public void Constructor_ThresholdOne_IsAccepted()
    {
        var breaker = new CircuitBreaker(Seed with { ErrorThreshold = 1 }, _time);

        // A rate can never exceed 1, so such a breaker never opens.
        Record(breaker, successes: 0, failures: 100);
        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Closed_BelowMinRequests_StaysClosedEvenAtAllErrors()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        Record(breaker, successes: 0, failures: 19);

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.TryAcquire());
    }

    [Fact]
    public void Closed_AllErrorsReachingMinRequests_Opens()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        Record(breaker, successes: 0, failures: 20);

        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.False(breaker.TryAcquire());
        Assert.Equal(1, breaker.Transitions);
    }

    [Fact]
    public void Closed_RateExactlyAtThreshold_StaysClosed()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        // 10 / 100 = 0.1 exactly: "above the threshold" is strict.
        Record(breaker, successes: 90, failures: 10);

        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Closed_RateAboveThreshold_Opens()
    {
        var breaker = new CircuitBreaker(Seed, _time);
        Record(breaker, successes: 90, failures: 10);

        // 11 / 101 > 0.1.
        Record(breaker, successes: 0, failures: 1);

        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.False(breaker.TryAcquire());
    }

    [Fact]
    public void Closed_RateBelowThresholdAfterManyRequests_StaysClosed()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        // Interleaved, 5% errors over 1,000 requests.
        for (var i = 0; i < 1000; i++)
        {
            Assert.True(breaker.TryAcquire());
            if (i % 20 == 0)
            {
                breaker.OnFailure();
            }
            else
            {
                breaker.OnSuccess();
            }
        }

        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Closed_SuccessReachingMinRequests_DoesNotOpenUntilNextFailure()
    {
        var breaker = new CircuitBreaker(Seed, _time);
        Record(breaker, successes: 0, failures: 19);

        // The rate is checked on failures only (documented): this success makes 20 requests at 95% errors.
        Record(breaker, successes: 1, failures: 0);
        Assert.Equal(CircuitState.Closed, breaker.State);

        Record(breaker, successes: 0, failures: 1);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Closed_FailuresWithinWindow_StillCount()
    {
        var breaker = new CircuitBreaker(Seed, _time);
        Record(breaker, successes: 0, failures: 19);

        _time.Advance(TimeSpan.FromSeconds(5));
        Record(breaker, successes: 0, failures: 1);

        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void Closed_FailuresOlderThanWindow_Expire()
    {
        var breaker = new CircuitBreaker(Seed, _time);
        Record(breaker, successes: 0, failures: 19);

        _time.Advance(Seed.Window);
        // 20 requests at 5%: closed. Had the 19 old failures stayed, 20 / 39 would open it.
        Record(breaker, successes: 19, failures: 1);

        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Closed_FailuresSpreadOverTime_ExpireBucketByBucket()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        // One failure a second for a minute: never more than 10 in the 10 s window, so never 20 requests.
        for (var i = 0; i < 60; i++)
        {
            Record(breaker, successes: 0, failures: 1);
            _time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Open_RejectsUntilTimeout_ThenHalfOpen()
    {
        var breaker = Opened();

        _time.Advance(TimeSpan.FromSeconds(59.9));
        Assert.False(breaker.TryAcquire());
        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.Equal(TimeSpan.FromMilliseconds(100), breaker.OpenRemaining);

        _time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.Equal(TimeSpan.Zero, breaker.OpenRemaining);
        Assert.True(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        Assert.Null(breaker.OpenRemaining);
        Assert.Equal(2, breaker.Transitions);
    }

    [Fact]
    public void Open_OpenRemaining_CountsDownFromTimeout()
    {
        var breaker = Opened();

        Assert.Equal(TimeSpan.FromSeconds(60), breaker.OpenRemaining);
        _time.Advance(TimeSpan.FromSeconds(45));
        Assert.Equal(TimeSpan.FromSeconds(15), breaker.OpenRemaining);
    }

    [Fact]
    public void Open_LateOutcomes_AreIgnored()
    {
        var breaker = Opened();

        // Requests admitted before the breaker opened, ending now.
        breaker.OnSuccess();
        breaker.OnFailure();
        breaker.Release();
        _time.Advance(TimeSpan.FromSeconds(30));
        breaker.OnFailure();

        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.Equal(1, breaker.Transitions);
        // The late failure did not restart the timeout.
        _time.Advance(TimeSpan.FromSeconds(30));
        Assert.True(breaker.TryAcquire());
    }

    [Fact]
    public void HalfOpen_AdmitsExactlyHalfOpenProbes()
    {
        var breaker = HalfOpen();

        // HalfOpen() took the first probe.
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
    }

    [Fact]
    public void HalfOpen_CustomProbeCount_IsHonoured()
    {
        var breaker = Opened(Seed with { HalfOpenProbes = 5 });
        _time.Advance(Seed.OpenTimeout);

        var admitted = 0;
        for (var i = 0; i < 20; i++)
        {
            admitted += breaker.TryAcquire() ? 1 : 0;
        }

        Assert.Equal(5, admitted);
    }

    [Fact]
    public void HalfOpen_ProbeFailure_ReopensAndRestartsTimeout()
    {
        var breaker = HalfOpen();

        breaker.OnFailure();

        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.Equal(3, breaker.Transitions);
        Assert.Equal(Seed.OpenTimeout, breaker.OpenRemaining);
        _time.Advance(TimeSpan.FromSeconds(59));
        Assert.False(breaker.TryAcquire());
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
    }

    [Fact]
    public void HalfOpen_FailureAfterSomeSuccesses_Reopens()
    {
        var breaker = HalfOpen();
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());

        breaker.OnSuccess();
        breaker.OnSuccess();
        breaker.OnFailure();

        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void HalfOpen_ReopenedThenHalfOpenAgain_HasFreshProbes()
    {
        var breaker = HalfOpen();
        Assert.True(breaker.TryAcquire());
        breaker.OnSuccess();
        breaker.OnFailure();

        _time.Advance(Seed.OpenTimeout);

        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
        // The success from the earlier period does not count: two more close nothing.
        breaker.OnSuccess();
        breaker.OnSuccess();
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        breaker.OnSuccess();
        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void HalfOpen_FewerSuccessesThanProbes_StaysHalfOpenAndAdmitsNoMore()
    {
        var breaker = HalfOpen();
        Assert.True(breaker.TryAcquire());

        breaker.OnSuccess();
        breaker.OnSuccess();

        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        // Two slots hold successes, one an outstanding probe: nothing is free.
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
    }

    [Fact]
    public void HalfOpen_EnoughSuccesses_ClosesWithCleanWindow()
    {
        var breaker = HalfOpen();
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());

        breaker.OnSuccess();
        breaker.OnSuccess();
        breaker.OnSuccess();

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.Equal(3, breaker.Transitions);
        Assert.True(breaker.TryAcquire());
        // The 20 failures that opened it are still inside the 10 s window by time, but were cleared: 19 new failures
        // stay below MinRequests. Had they survived, the first failure here would reopen the breaker.
        Record(breaker, successes: 0, failures: 19);
        Assert.Equal(CircuitState.Closed, breaker.State);
        Record(breaker, successes: 0, failures: 1);
        Assert.Equal(CircuitState.Open, breaker.State);
    }

    [Fact]
    public void HalfOpen_Release_FreesAProbeSlot()
    {
        var breaker = HalfOpen();
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());

        breaker.Release();

        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
    }

    [Fact]
    public void HalfOpen_ReleaseWithoutProbes_DoesNotGrantExtraSlots()
    {
        var breaker = Opened();
        _time.Advance(Seed.OpenTimeout);
        Assert.True(breaker.TryAcquire());
        breaker.Release();

        // Releases of requests acquired while closed: the count does not go below zero.
        breaker.Release();
        breaker.Release();

        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.True(breaker.TryAcquire());
        Assert.False(breaker.TryAcquire());
    }

    [Fact]
    public void Closed_Release_ChangesNothing()
    {
        var breaker = new CircuitBreaker(Seed, _time);
        Assert.True(breaker.TryAcquire());

        breaker.Release();

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.TryAcquire());
    }

    [Fact]
    public void ZeroOpenTimeout_GoesHalfOpenOnNextAcquire()
    {
        var breaker = Opened(Seed with { OpenTimeout = TimeSpan.Zero });

        Assert.True(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
    }

    [Fact]
    public void HalfOpen_ConcurrentAcquires_AdmitExactlyHalfOpenProbes()
    {
        var breaker = Opened(Seed with { HalfOpenProbes = 7 });
        _time.Advance(Seed.OpenTimeout);

        // Many threads find the timeout passed at once: one moves to half-open, all compete for the 7 slots.
        var admitted = 0;
        Parallel.For(0, 10_000, new ParallelOptions { MaxDegreeOfParallelism = 16 }, _ =>
        {
            if (breaker.TryAcquire())
            {
                Interlocked.Increment(ref admitted);
            }
        });

        Assert.Equal(7, admitted);
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        Assert.Equal(2, breaker.Transitions);
    }

    [Fact]
    public void HalfOpen_ConcurrentProbeSuccesses_CloseExactlyOnce()
    {
        const int Probes = 64;
        var breaker = Opened(Seed with { HalfOpenProbes = Probes });
        _time.Advance(Seed.OpenTimeout);
        for (var i = 0; i < Probes; i++)
        {
            Assert.True(breaker.TryAcquire());
        }

        Parallel.For(0, Probes, new ParallelOptions { MaxDegreeOfParallelism = 16 }, _ => breaker.OnSuccess());

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.Equal(3, breaker.Transitions);
    }

    [Fact]
    public void Concurrent_MixedOutcomesFromManyThreads_StayConsistent()
    {
        var breaker = new CircuitBreaker(Seed, _time);
        var admitted = 0;

        // Smoke test: random outcomes at ~20% errors from many threads while the clock moves, through open,
        // half-open and closed again. Counts under races are approximate by design, so the checks are on
        // invariants, not exact numbers.
        Parallel.For(0, 200_000, new ParallelOptions { MaxDegreeOfParallelism = 16 }, i =>
        {
            if (i % 1000 == 0)
            {
                _time.Advance(TimeSpan.FromSeconds(7));
            }

            if (!breaker.TryAcquire())
            {
                return;
            }

            Interlocked.Increment(ref admitted);
            if (i % 5 == 0)
            {
                breaker.OnFailure();
            }
            else
            {
                breaker.OnSuccess();
            }
        });

        Assert.True(Enum.IsDefined(breaker.State));
        Assert.True(breaker.Transitions >= 1, "20% errors over 10% must have opened the breaker at least once");
        Assert.InRange(admitted, 1, 200_000);

        // Whatever state the race left, the breaker still works: time out, probe, close.
        breaker.OnFailure();
        _time.Advance(Seed.OpenTimeout);
        for (var i = 0; i < 2 * Seed.HalfOpenProbes && breaker.State != CircuitState.Closed; i++)
        {
            if (breaker.TryAcquire())
            {
                breaker.OnSuccess();
            }
            else
            {
                breaker.OnFailure();
                _time.Advance(Seed.OpenTimeout);
            }
        }

        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    [Fact]
    public void Concurrent_SuccessesOnly_NeverOpen()
    {
        var breaker = new CircuitBreaker(Seed, _time);

        Parallel.For(0, 100_000, new ParallelOptions { MaxDegreeOfParallelism = 16 }, i =>
        {
            if (i % 5000 == 0)
            {
                _time.Advance(TimeSpan.FromSeconds(1));
            }

            Assert.True(breaker.TryAcquire());
            breaker.OnSuccess();
        });

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.Equal(0, breaker.Transitions);
    }

    private static void Record(CircuitBreaker breaker, int successes, int failures)
    {
        for (var i = 0; i < successes; i++)
        {
            Assert.True(breaker.TryAcquire());
            breaker.OnSuccess();
        }

        for (var i = 0; i < failures; i++)
        {
            Assert.True(breaker.TryAcquire());
            breaker.OnFailure();
        }
    }

    private CircuitBreaker Opened(CircuitBreakerOptions? options = null)
    {
        var breaker = new CircuitBreaker(options ?? Seed, _time);
        Record(breaker, successes: 0, failures: breaker.Options.MinRequests);
        Assert.Equal(CircuitState.Open, breaker.State);
        return breaker;
    }

    /// <summary>An opened breaker whose timeout has passed, after the first probe was admitted.</summary>
    private CircuitBreaker HalfOpen()
    {
        var breaker = Opened();
        _time.Advance(Seed.OpenTimeout);
        Assert.True(breaker.TryAcquire());
        Assert.Equal(CircuitState.HalfOpen, breaker.State);
        return breaker;
    }
}
