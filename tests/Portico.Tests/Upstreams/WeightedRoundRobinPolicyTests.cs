using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class WeightedRoundRobinPolicyTests
{
    [Fact]
    public void Select_SmoothWeights_MatchesNginxSequence()
    {
        // The example in nginx's changeset "Upstream: smooth weighted round-robin balancing":
        // weights { 5, 1, 1 } give { a, a, b, a, c, a, a }, then the period repeats.
        var servers = TestServers.Create(5, 1, 1);
        var policy = new WeightedRoundRobinPolicy(servers);

        var picks = Picks(policy, 14);

        Assert.Equal("aabacaaaabacaa", picks);
    }

    [Fact]
    public void Select_Seed000Weights100And80_AlternatesSmoothly()
    {
        // Seed 000: api1 weight 100, api2 weight 80. GCD 20 → 5:4, period 9.
        var servers = TestServers.Create(100, 80);
        var policy = new WeightedRoundRobinPolicy(servers);

        Assert.Equal(9, policy.Sequence.Length);
        Assert.Equal("ababababa", Picks(policy, 9));
    }

    [Fact]
    public void Select_Seed000Weights100And80_ExactProportions()
    {
        var servers = TestServers.Create(100, 80);
        var policy = new WeightedRoundRobinPolicy(servers);
        var counts = new int[2];

        for (var i = 0; i < 9 * 1000; i++)
        {
            counts[policy.Select(0, null)!.Index]++;
        }

        Assert.Equal(5000, counts[0]);
        Assert.Equal(4000, counts[1]);
    }

    [Fact]
    public void Sequence_HugePeriod_ScaledDownKeepingEveryServer()
    {
        var servers = TestServers.Create(1_000_000, 999_999, 1);
        var policy = new WeightedRoundRobinPolicy(servers);

        var sequence = policy.Sequence;
        Assert.InRange(sequence.Length, 3, WeightedRoundRobinPolicy.MaxPeriod);
        var counts = new int[3];
        foreach (var server in sequence)
        {
            counts[server.Index]++;
        }

        Assert.Equal(1, counts[2]);
        Assert.InRange(counts[0] - counts[1], -1, 1);
    }

    [Fact]
    public void Select_UnavailableServer_ShareGoesToOthersInProportion()
    {
        var servers = TestServers.Create(5, 1, 1);
        servers[0].State.SetHealthy(false);
        var policy = new WeightedRoundRobinPolicy(servers);
        var counts = new int[3];

        for (var i = 0; i < 7 * 100; i++)
        {
            counts[policy.Select(0, null)!.Index]++;
        }

        Assert.Equal(0, counts[0]);
        Assert.Equal(700, counts[1] + counts[2]);
        Assert.InRange(counts[1], 300, 400);
    }

    private static string Picks(WeightedRoundRobinPolicy policy, int count)
    {
        var picks = new char[count];
        for (var i = 0; i < count; i++)
        {
            picks[i] = (char)('a' + policy.Select(0, null)!.Index);
        }

        return new string(picks);
    }
}
