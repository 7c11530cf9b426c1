using Portico.Admin;
using Portico.Tests.Upstreams;
using Portico.Upstreams;

namespace Portico.Tests.Admin;

public sealed class ServerRatesTests
{
    private static void Requests(ServerState state, int count, int failures = 0)
    {
        for (var i = 0; i < count; i++)
        {
            state.OnRequestStart();
            state.OnRequestEnd();
        }
        for (var i = 0; i < failures; i++)
        {
            state.ReportFailure(maxFails: 1000, TimeSpan.FromSeconds(10));
        }
    }

    [Fact]
    public void RatesOf_NeverSampled_IsZero()
    {
        var rates = new ServerRates(new ManualTimeProvider(TimeSpan.FromHours(1)));
        var state = new ServerState();
        Requests(state, 10);
        Assert.Equal((0, 0), rates.RatesOf(state));
    }

    [Fact]
    public void RatesOf_LessThanASecondOfHistory_IsZero()
    {
        var time = new ManualTimeProvider(TimeSpan.FromHours(1));
        var rates = new ServerRates(time);
        var state = new ServerState();
        rates.Sample([state]);
        time.Advance(TimeSpan.FromMilliseconds(10));
        Requests(state, 5);
        Assert.Equal((0, 0), rates.RatesOf(state));
    }

    [Fact]
    public void RatesOf_CountsSinceTheOldestSample_IncludingRequestsSinceTheLast()
    {
        var time = new ManualTimeProvider(TimeSpan.FromHours(1));
        var rates = new ServerRates(time);
        var state = new ServerState();
        rates.Sample([state]);
        for (var second = 0; second < 4; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            Requests(state, 10, failures: 1);
            rates.Sample([state]);
        }
        time.Advance(TimeSpan.FromSeconds(1));
        Requests(state, 10, failures: 1);

        var (requests, failures) = rates.RatesOf(state);
        Assert.Equal(10, requests, 3);
        Assert.Equal(1, failures, 3);
    }

    [Fact]
    public void RatesOf_OldSamplesLeaveTheWindow()
    {
        var time = new ManualTimeProvider(TimeSpan.FromHours(1));
        var rates = new ServerRates(time);
        var state = new ServerState();
        // A burst, then ServerRates.Capacity quiet seconds: the burst is older than the oldest sample kept.
        Requests(state, 1000);
        rates.Sample([state]);
        for (var second = 0; second < ServerRates.Capacity; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            rates.Sample([state]);
        }
        Assert.Equal((0, 0), rates.RatesOf(state));

        Requests(state, 90);
        time.Advance(TimeSpan.FromSeconds(1));
        // Oldest kept sample is 10 s old (9 in the ring since, plus the second that just passed).
        Assert.Equal(9, rates.RatesOf(state).RequestsPerSecond, 3);
    }

    [Fact]
    public void RatesOf_EachServerHasItsOwnHistory()
    {
        var time = new ManualTimeProvider(TimeSpan.FromHours(1));
        var rates = new ServerRates(time);
        var busy = new ServerState();
        var idle = new ServerState();
        rates.Sample([busy, idle]);
        time.Advance(TimeSpan.FromSeconds(2));
        Requests(busy, 40);
        Assert.Equal(20, rates.RatesOf(busy).RequestsPerSecond, 3);
        Assert.Equal(0, rates.RatesOf(idle).RequestsPerSecond);
    }
}
