using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class RoundRobinPolicyTests
{
    [Fact]
    public void Select_EqualServers_ExactDistributionOverNTimesK()
    {
        const int k = 250;
        var servers = TestServers.Create(1, 7, 3, 1);
        var policy = new RoundRobinPolicy(servers);
        var counts = new int[servers.Length];

        for (var i = 0; i < servers.Length * k; i++)
        {
            counts[policy.Select(0, null)!.Index]++;
        }

        // Weights are ignored by round_robin.
        Assert.All(counts, count => Assert.Equal(k, count));
    }

    [Fact]
    public void Select_InTurn_FollowsListOrder()
    {
        var servers = TestServers.Equal(3);
        var policy = new RoundRobinPolicy(servers);

        var order = new int[7];
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = policy.Select(0, null)!.Index;
        }

        Assert.Equal([0, 1, 2, 0, 1, 2, 0], order);
    }

    [Fact]
    public void Select_UnavailableServer_NextOneTakesItsTurn()
    {
        var servers = TestServers.Equal(3);
        servers[1].State.SetHealthy(false);
        var policy = new RoundRobinPolicy(servers);

        var order = new int[6];
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = policy.Select(0, null)!.Index;
        }

        Assert.Equal([0, 2, 2, 0, 2, 2], order);
    }

    [Fact]
    public async Task Select_Concurrent_ExactDistribution()
    {
        const int perTask = 30_000;
        var servers = TestServers.Equal(3);
        var policy = new RoundRobinPolicy(servers);
        var counts = new int[servers.Length];

        var tasks = new Task[4];
        for (var t = 0; t < tasks.Length; t++)
        {
            tasks[t] = Task.Run(() =>
            {
                for (var i = 0; i < perTask; i++)
                {
                    Interlocked.Increment(ref counts[policy.Select(0, null)!.Index]);
                }
            });
        }

        await Task.WhenAll(tasks);

        Assert.All(counts, count => Assert.Equal(tasks.Length * perTask / servers.Length, count));
    }
}
