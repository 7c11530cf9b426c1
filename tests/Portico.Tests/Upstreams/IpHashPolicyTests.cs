using System.Net;
using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class IpHashPolicyTests
{
    private const int KeyCount = 100_000;

    [Fact]
    public void Select_TenServers_EachGetsTenPercentWithinThree()
    {
        var servers = TestServers.Equal(10);
        var policy = new IpHashPolicy(servers);
        var counts = new int[10];

        foreach (var key in RandomClientKeys())
        {
            counts[policy.Select(key, null)!.Index]++;
        }

        Assert.All(counts, count => Assert.InRange(count / (double)KeyCount, 0.07, 0.13));
    }

    [Fact]
    public void Select_SameKey_SameServer()
    {
        var policy = new IpHashPolicy(TestServers.Equal(5));
        var key = KetamaRing.HashKey(IPAddress.Parse("198.51.100.7"));

        var first = policy.Select(key, null);

        for (var i = 0; i < 100; i++)
        {
            Assert.Same(first, policy.Select(key, null));
        }
    }

    [Fact]
    public void Select_ServersInDifferentOrder_SameMapping()
    {
        var servers = TestServers.Create(1, 2, 1, 3, 1, 1);
        var reversed = TestServers.Create(1, 2, 1, 3, 1, 1);
        Array.Reverse(reversed);
        var policy = new IpHashPolicy(servers);
        var other = new IpHashPolicy(reversed);

        foreach (var key in RandomClientKeys())
        {
            Assert.Equal(policy.Select(key, null)!.Authority, other.Select(key, null)!.Authority);
        }
    }

    [Fact]
    public void Select_EleventhServerAdded_OnlyAboutOneEleventhMoveAllToNewServer()
    {
        var ten = new IpHashPolicy(TestServers.Equal(10));
        var eleven = new IpHashPolicy(TestServers.Equal(11));
        var newServer = eleven.Servers[10].Authority;
        var moved = 0;

        foreach (var key in RandomClientKeys())
        {
            var before = ten.Select(key, null)!.Authority;
            var after = eleven.Select(key, null)!.Authority;
            if (before != after)
            {
                moved++;
                Assert.Equal(newServer, after);
            }
        }

        Assert.InRange(moved / (double)KeyCount, 0.05, 0.14);
    }

    [Fact]
    public void Select_ServerMarkedUnavailable_OnlyItsKeysMove()
    {
        var servers = TestServers.Equal(10);
        var policy = new IpHashPolicy(servers);
        var keys = RandomClientKeys();
        var before = new ServerModel[keys.Length];
        for (var i = 0; i < keys.Length; i++)
        {
            before[i] = policy.Select(keys[i], null)!;
        }

        servers[4].State.SetHealthy(false);

        var moved = 0;
        for (var i = 0; i < keys.Length; i++)
        {
            var after = policy.Select(keys[i], null)!;
            Assert.NotSame(servers[4], after);
            if (before[i] == servers[4])
            {
                moved++;
            }
            else
            {
                Assert.Same(before[i], after);
            }
        }

        Assert.True(moved > 0);

        // Back in service, it gets exactly its old keys back.
        servers[4].State.SetHealthy(true);
        for (var i = 0; i < keys.Length; i++)
        {
            Assert.Same(before[i], policy.Select(keys[i], null));
        }
    }

    [Fact]
    public void Select_OwnerExcluded_MovesToAnotherServerAndBack()
    {
        var servers = TestServers.Equal(4);
        var policy = new IpHashPolicy(servers);
        var key = KetamaRing.HashKey(IPAddress.Parse("203.0.113.9"));
        var owner = policy.Select(key, null)!;

        var retry = policy.Select(key, owner);

        Assert.NotNull(retry);
        Assert.NotSame(owner, retry);
        Assert.Same(retry, policy.Select(key, owner));
        Assert.Same(owner, policy.Select(key, null));
    }

    /// <summary>Hash keys of 100,000 random IPv4 client addresses (seeded: the same every run).</summary>
    private static ulong[] RandomClientKeys()
    {
        var random = new Random(20240601);
        var keys = new ulong[KeyCount];
        var bytes = new byte[4];
        for (var i = 0; i < keys.Length; i++)
        {
            random.NextBytes(bytes);
            keys[i] = KetamaRing.HashKey(new IPAddress(bytes));
        }

        return keys;
    }
}
