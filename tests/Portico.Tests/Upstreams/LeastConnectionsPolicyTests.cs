using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class LeastConnectionsPolicyTests
{
    [Fact]
    public void Select_DifferentLoads_PicksLowestInFlight()
    {
        var servers = TestServers.Equal(3);
        TestServers.Load(servers[0], 2);
        TestServers.Load(servers[1], 1);
        TestServers.Load(servers[2], 3);
        var policy = new LeastConnectionsPolicy(servers);

        for (var i = 0; i < 10; i++)
        {
            Assert.Same(servers[1], policy.Select(0, null));
        }
    }

    [Fact]
    public void Select_Weighted_ComparesInFlightPerWeight()
    {
        // a: 3 in flight / weight 3 = 1; b: 2 / 1 = 2. Fewer raw in-flight on b, but a has more room.
        var servers = TestServers.Create(3, 1);
        TestServers.Load(servers[0], 3);
        TestServers.Load(servers[1], 2);
        var policy = new LeastConnectionsPolicy(servers);

        Assert.Same(servers[0], policy.Select(0, null));
    }

    [Fact]
    public void Select_RequestsStartAndEnd_FollowsLoad()
    {
        var servers = TestServers.Equal(2);
        var policy = new LeastConnectionsPolicy(servers);

        var first = policy.Select(0, null)!;
        first.State.OnRequestStart();
        var second = policy.Select(0, null)!;
        Assert.NotSame(first, second);
        second.State.OnRequestStart();
        second.State.OnRequestStart();
        Assert.Same(first, policy.Select(0, null));

        second.State.OnRequestEnd();
        second.State.OnRequestEnd();
        first.State.OnRequestStart();
        Assert.Same(second, policy.Select(0, null));
    }

    [Fact]
    public void Select_Ties_RotateAcrossEqualServers()
    {
        var servers = TestServers.Equal(4);
        TestServers.Load(servers[3], 1);
        var policy = new LeastConnectionsPolicy(servers);
        var counts = new int[4];

        for (var i = 0; i < 300; i++)
        {
            counts[policy.Select(0, null)!.Index]++;
        }

        Assert.Equal([100, 100, 100, 0], counts);
    }

    [Fact]
    public void Select_LeastLoadedUnavailable_PicksNextLeast()
    {
        var servers = TestServers.Equal(3);
        TestServers.Load(servers[1], 5);
        TestServers.Load(servers[2], 2);
        servers[0].State.SetHealthy(false);
        var policy = new LeastConnectionsPolicy(servers);

        Assert.Same(servers[2], policy.Select(0, null));
        Assert.Same(servers[1], policy.Select(0, servers[2]));
    }
}
