using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class RandomPolicyTests
{
    [Fact]
    public void Select_TwoServers_AlwaysTheLessLoaded()
    {
        var servers = TestServers.Equal(2);
        TestServers.Load(servers[0], 10);
        var policy = new RandomPolicy(servers, new Random(42));

        for (var i = 0; i < 1000; i++)
        {
            Assert.Same(servers[1], policy.Select(0, null));
        }
    }

    [Fact]
    public void Select_PowerOfTwoChoices_MostLoadedNeverPickedAndLeastLoadedPreferred()
    {
        var servers = TestServers.Equal(3);
        TestServers.Load(servers[1], 5);
        TestServers.Load(servers[2], 10);
        var policy = new RandomPolicy(servers, new Random(42));
        var counts = new int[3];

        for (var i = 0; i < 3000; i++)
        {
            counts[policy.Select(0, null)!.Index]++;
        }

        // The idle server wins every pair it is in (2 of 3 pairs), the busiest none.
        Assert.Equal(0, counts[2]);
        Assert.InRange(counts[0], 1800, 2200);
        Assert.Equal(3000, counts[0] + counts[1]);
    }

    [Fact]
    public void Select_Idle_SpreadsAcrossServers()
    {
        var servers = TestServers.Equal(4);
        var policy = new RandomPolicy(servers, new Random(42));
        var counts = new int[4];

        for (var i = 0; i < 4000; i++)
        {
            counts[policy.Select(0, null)!.Index]++;
        }

        Assert.All(counts, count => Assert.InRange(count, 800, 1200));
    }

    [Fact]
    public void Select_Weighted_IdleHeavierServerWins()
    {
        var servers = TestServers.Create(1, 4);
        var policy = new RandomPolicy(servers, new Random(42));

        Assert.Same(servers[1], policy.Select(0, null));

        // (4 + 1) / 4 = 1.25 on b against (0 + 1) / 1 = 1 on a.
        TestServers.Load(servers[1], 4);
        Assert.Same(servers[0], policy.Select(0, null));
    }

    [Fact]
    public void Select_SomeUnavailable_NeverPicksThemAndStillCompares()
    {
        var servers = TestServers.Equal(5);
        servers[0].State.SetHealthy(false);
        servers[3].State.SetDraining(true);
        TestServers.Load(servers[4], 3);
        var policy = new RandomPolicy(servers, new Random(5));
        var counts = new int[5];

        for (var i = 0; i < 3000; i++)
        {
            var server = policy.Select(0, null)!;
            Assert.True(server.State.IsAvailable);
            counts[server.Index]++;
        }

        Assert.Equal(0, counts[0]);
        Assert.Equal(0, counts[3]);
        Assert.Equal(0, counts[4]);
        Assert.InRange(counts[1], 1200, 1800);
    }
}
