using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

/// <summary>Behaviour every policy shares: availability, exclusion, the factory.</summary>
public sealed class LoadBalancingPolicyTests
{
    public static TheoryData<string> PolicyNames => ["round_robin", "weighted_round_robin", "least_connections", "ip_hash", "random"];

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Create_KnownName_ReturnsPolicyWithThatName(string name)
    {
        var policy = LoadBalancingPolicyFactory.Create(name, TestServers.Equal(2), new Random(1));

        Assert.Equal(name, policy.Name);
        Assert.Equal(2, policy.Servers.Length);
    }

    [Fact]
    public void Create_UnknownName_ThrowsArgumentException()
    {
        var error = Assert.Throws<ArgumentException>(() => LoadBalancingPolicyFactory.Create("fastest", TestServers.Equal(2)));

        Assert.Contains("fastest", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_UnavailableServers_NeverPicked(string name)
    {
        var servers = TestServers.Create(3, 1, 2, 1);
        servers[0].State.SetHealthy(false);
        servers[2].State.SetDraining(true);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(7));

        var picked = new HashSet<ServerModel>();
        for (var i = 0; i < 2000; i++)
        {
            var server = policy.Select((ulong)i * 0x9E3779B97F4A7C15UL, exclude: null);
            Assert.NotNull(server);
            Assert.True(server.State.IsAvailable, $"{name} picked unavailable {server}");
            picked.Add(server);
        }

        Assert.Equal(2, picked.Count);
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_Exclude_NeverPicksExcludedWhenOthersAvailable(string name)
    {
        var servers = TestServers.Create(1, 5, 1);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(3));

        for (var i = 0; i < 1000; i++)
        {
            var server = policy.Select((ulong)i * 0x9E3779B97F4A7C15UL, exclude: servers[1]);
            Assert.NotNull(server);
            Assert.NotSame(servers[1], server);
        }
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_ExcludedIsOnlyAvailable_FallsBackToExcluded(string name)
    {
        var servers = TestServers.Equal(3);
        servers[0].State.SetHealthy(false);
        servers[2].State.SetHealthy(false);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(3));

        for (var i = 0; i < 100; i++)
        {
            Assert.Same(servers[1], policy.Select((ulong)i, exclude: servers[1]));
        }
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_SingleServerExcluded_FallsBackToIt(string name)
    {
        var servers = TestServers.Equal(1);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(3));

        Assert.Same(servers[0], policy.Select(42, exclude: servers[0]));
        Assert.Same(servers[0], policy.Select(42, exclude: null));
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_ExcludedAlsoUnavailable_ReturnsNull(string name)
    {
        var servers = TestServers.Equal(2);
        servers[0].State.SetHealthy(false);
        servers[1].State.SetDraining(true);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(3));

        Assert.Null(policy.Select(42, exclude: servers[1]));
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_AllUnavailable_ReturnsNull(string name)
    {
        var servers = TestServers.Create(1, 2, 3);
        foreach (var server in servers)
        {
            server.State.SetHealthy(false);
        }

        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(3));

        for (var i = 0; i < 10; i++)
        {
            Assert.Null(policy.Select((ulong)i, exclude: null));
        }
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_NoServers_ReturnsNull(string name)
    {
        var policy = LoadBalancingPolicyFactory.Create(name, [], new Random(3));

        Assert.Null(policy.Select(42, exclude: null));
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_ServerRecovers_PickedAgain(string name)
    {
        var servers = TestServers.Equal(2);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(3));
        servers[0].State.SetHealthy(false);
        servers[1].State.SetHealthy(false);
        Assert.Null(policy.Select(42, exclude: null));

        servers[1].State.SetHealthy(true);

        Assert.Same(servers[1], policy.Select(42, exclude: null));
    }

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public void Select_SteadyState_DoesNotAllocate(string name)
    {
        var servers = TestServers.Create(5, 1, 1, 3);
        servers[2].State.SetHealthy(false);
        var policy = LoadBalancingPolicyFactory.Create(name, servers, new Random(11));
        for (var i = 0; i < 1000; i++)
        {
            policy.Select((ulong)i, servers[0]);
        }

        var n = 0UL;
        AllocationAssert.Zero(() =>
        {
            policy.Select(n * 0x9E3779B97F4A7C15UL, (n & 1) == 0 ? null : servers[0]);
            n++;
        });
    }
}
