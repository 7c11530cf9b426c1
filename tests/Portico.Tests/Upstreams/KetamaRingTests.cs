using System.Net;
using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class KetamaRingTests
{
    [Fact]
    public void Constructor_EqualWeights_160PointsPerServer()
    {
        var ring = new KetamaRing(["a:80", "b:80", "c:80"], [1, 1, 1]);

        Assert.Equal(3, ring.NodeCount);
        Assert.Equal(480, ring.PointCount);
    }

    [Fact]
    public void Constructor_Weights_PointsProportionalToWeightOverMean()
    {
        // Mean weight 2: the weight-3 node gets 240 points, the weight-1 node 80.
        var ring = new KetamaRing(["a:80", "b:80"], [3, 1]);

        Assert.Equal(320, ring.PointCount);
        var counts = new int[2];
        var random = new Random(9);
        for (var i = 0; i < 100_000; i++)
        {
            counts[ring.Lookup((ulong)random.NextInt64())]++;
        }

        Assert.InRange(counts[0] / 100_000.0, 0.70, 0.80);
    }

    [Fact]
    public void Lookup_EmptyRing_ReturnsMinusOne()
    {
        var ring = new KetamaRing([], []);

        Assert.Equal(-1, ring.Lookup(123));
        Assert.Equal(-1, ring.Lookup(123, new AcceptAll()));
    }

    [Fact]
    public void Lookup_FilterRejectsOwner_WalksToNextDifferentNode()
    {
        var ring = new KetamaRing(["a:80", "b:80", "c:80"], [1, 1, 1]);
        var random = new Random(4);
        for (var i = 0; i < 1000; i++)
        {
            var key = (ulong)random.NextInt64();
            var owner = ring.Lookup(key);

            var next = ring.Lookup(key, new Reject(owner));

            Assert.NotEqual(owner, next);
            Assert.InRange(next, 0, 2);
            Assert.Equal(-1, ring.Lookup(key, new RejectAll()));
        }
    }

    [Fact]
    public void HashKey_IPv4MappedToIPv6_SameAsIPv4()
    {
        var v4 = IPAddress.Parse("192.0.2.33");

        Assert.Equal(KetamaRing.HashKey(v4), KetamaRing.HashKey(v4.MapToIPv6()));
        Assert.NotEqual(KetamaRing.HashKey(v4), KetamaRing.HashKey(IPAddress.Parse("192.0.2.34")));
        Assert.NotEqual(KetamaRing.HashKey(v4), KetamaRing.HashKey(IPAddress.Parse("2001:db8::1")));
    }

    [Fact]
    public void HashKey_Bytes_IsFnv1aWithFmix64()
    {
        // FNV-1a 64 of "" is the offset basis; fmix64 of it pins the finaliser, so a change of hash is noticed
        // (it would remap every ip_hash client).
        var expected = Fmix64(14695981039346656037UL);

        Assert.Equal(expected, KetamaRing.HashKey([]));
        Assert.Equal(KetamaRing.HashKey("abc"u8), KetamaRing.HashKey("abc"u8.ToArray()));
    }

    [Fact]
    public void HashKey_IPAddress_DoesNotAllocate()
    {
        var ip = IPAddress.Parse("2001:db8::42");
        KetamaRing.HashKey(ip);

        AllocationAssert.Zero(() => KetamaRing.HashKey(ip), 1000);
    }

    private static ulong Fmix64(ulong hash)
    {
        hash ^= hash >> 33;
        hash *= 0xff51afd7ed558ccdUL;
        hash ^= hash >> 33;
        hash *= 0xc4ceb93fe53a87cbUL;
        hash ^= hash >> 33;
        return hash;
    }

    private readonly struct AcceptAll : IKetamaNodeFilter
    {
        public bool IsEligible(int node) => true;
    }

    private readonly struct RejectAll : IKetamaNodeFilter
    {
        public bool IsEligible(int node) => false;
    }

    private readonly struct Reject(int rejected) : IKetamaNodeFilter
    {
        public bool IsEligible(int node) => node != rejected;
    }
}
