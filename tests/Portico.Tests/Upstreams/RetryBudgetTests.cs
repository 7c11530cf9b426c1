using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class RetryBudgetTests
{
    private static readonly RetryBudgetOptions NoFloor = new() { MinRetriesPerSecond = 0 };

    private readonly ManualTimeProvider _time = new(TimeSpan.FromSeconds(4_321.5));

    [Fact]
    public void Options_DefaultsAreFinagles()
    {
        var options = new RetryBudgetOptions();

        Assert.Equal(0.2, options.Ratio);
        Assert.Equal(10, options.MinRetriesPerSecond);
        Assert.Equal(TimeSpan.FromSeconds(10), options.Window);
    }

    [Fact]
    public void ZeroTraffic_FloorAlone_AllowsMinRetriesPerSecondTimesWindow()
    {
        var budget = new RetryBudget(new RetryBudgetOptions(), _time);

        Assert.Equal(100, budget.Available);
        Assert.Equal(100, Drain(budget));
        Assert.False(budget.TryAcquireRetry());
        Assert.Equal(0, budget.Available);
    }

    [Fact]
    public void HundredRequests_NoFloor_AllowTwentyRetries()
    {
        var budget = new RetryBudget(NoFloor, _time);
        RecordRequests(budget, 100);

        Assert.Equal(20, Drain(budget));
    }

    [Fact]
    public void HundredRequests_WithFloor_AllowTwentyPlusFloor()
    {
        var budget = new RetryBudget(new RetryBudgetOptions(), _time);
        RecordRequests(budget, 100);

        Assert.Equal(120, budget.Available);
        Assert.Equal(120, Drain(budget));
    }

    [Fact]
    public void ZeroTraffic_NoFloor_AllowsNothing()
    {
        var budget = new RetryBudget(NoFloor, _time);

        Assert.False(budget.TryAcquireRetry());
    }

    [Fact]
    public void FewRequests_RatioRoundsDown()
    {
        var budget = new RetryBudget(NoFloor, _time);

        // 4 × 0.2 = 0.8 retries: none; the fifth request completes one.
        RecordRequests(budget, 4);
        Assert.False(budget.TryAcquireRetry());
        RecordRequests(budget, 1);
        Assert.True(budget.TryAcquireRetry());
        Assert.False(budget.TryAcquireRetry());
    }

    [Fact]
    public void Ratio_WithoutExactBinaryForm_IsExact()
    {
        // 0.1 × 30 is 3.0000000000000004 in doubles; in thousandths it is exactly 3.
        var budget = new RetryBudget(NoFloor with { Ratio = 0.1 }, _time);
        RecordRequests(budget, 30);

        Assert.Equal(3, Drain(budget));
    }

    [Fact]
    public void RefusedRetry_UsesNoBudget()
    {
        var budget = new RetryBudget(NoFloor, _time);
        RecordRequests(budget, 5);
        Assert.True(budget.TryAcquireRetry());
        for (var i = 0; i < 10; i++)
        {
            Assert.False(budget.TryAcquireRetry());
        }

        // Five more requests fund exactly one more retry; the refusals above did not count.
        RecordRequests(budget, 5);
        Assert.True(budget.TryAcquireRetry());
        Assert.False(budget.TryAcquireRetry());
    }

    [Fact]
    public void SpentRetries_ExpireWithTheWindow()
    {
        var budget = new RetryBudget(new RetryBudgetOptions(), _time);
        Assert.Equal(100, Drain(budget));

        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.False(budget.TryAcquireRetry());

        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(100, Drain(budget));
    }

    [Fact]
    public void Requests_ExpireWithTheWindow()
    {
        var budget = new RetryBudget(NoFloor, _time);
        RecordRequests(budget, 100);

        _time.Advance(TimeSpan.FromSeconds(10));

        Assert.False(budget.TryAcquireRetry());
        Assert.Equal(0, budget.Available);
    }

    [Fact]
    public void SteadyTraffic_RetriesTrackTheRatio()
    {
        var budget = new RetryBudget(NoFloor, _time);
        var allowed = 0;

        // 100 requests a second for a minute, each second trying 50 retries (an upstream failing half the time).
        for (var second = 0; second < 60; second++)
        {
            RecordRequests(budget, 100);
            for (var i = 0; i < 50; i++)
            {
                allowed += budget.TryAcquireRetry() ? 1 : 0;
            }

            _time.Advance(TimeSpan.FromSeconds(1));
        }

        // 20% of 6,000 requests, give or take the first window filling and bucket edges.
        Assert.InRange(allowed, 1100, 1300);
    }

    [Fact]
    public void CustomWindow_ScalesTheFloor()
    {
        var budget = new RetryBudget(new RetryBudgetOptions { MinRetriesPerSecond = 3, Window = TimeSpan.FromSeconds(2) }, _time);

        Assert.Equal(6, Drain(budget));
    }

    [Theory]
    [InlineData(-0.1, 10, 10)]
    [InlineData(1000.5, 10, 10)]
    [InlineData(double.NaN, 10, 10)]
    [InlineData(0.2, -1, 10)]
    [InlineData(0.2, 10, 0)]
    public void Constructor_OptionOutOfRange_Throws(double ratio, int minRetriesPerSecond, int windowSeconds)
    {
        var options = new RetryBudgetOptions
        {
            Ratio = ratio,
            MinRetriesPerSecond = minRetriesPerSecond,
            Window = TimeSpan.FromSeconds(windowSeconds),
        };

        Assert.Throws<ArgumentOutOfRangeException>(() => new RetryBudget(options, _time));
    }

    [Fact]
    public void Concurrent_Retries_OvershootByAtMostTheRacingThreads()
    {
        const int Threads = 8;
        var budget = new RetryBudget(new RetryBudgetOptions(), _time);
        var allowed = 0;

        Parallel.For(0, 10_000, new ParallelOptions { MaxDegreeOfParallelism = Threads }, _ =>
        {
            if (budget.TryAcquireRetry())
            {
                Interlocked.Increment(ref allowed);
            }
        });

        // Check-then-record lets each racing thread through once more; the first slot claim may lose as many.
        Assert.InRange(allowed, 100, 100 + (2 * Threads));
    }

    private static void RecordRequests(RetryBudget budget, int count)
    {
        for (var i = 0; i < count; i++)
        {
            budget.RecordRequest();
        }
    }

    private static int Drain(RetryBudget budget)
    {
        var allowed = 0;
        while (allowed < 100_000 && budget.TryAcquireRetry())
        {
            allowed++;
        }

        return allowed;
    }
}
