using System.Buffers.Binary;
using System.Net;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;

namespace Portico.Upstreams;

/// <summary>
/// Decides, during <see cref="KetamaRing.Lookup{TFilter}(ulong, TFilter)"/>, whether a node may take the key.
/// A struct so the generic lookup is specialised per filter: no delegate, no boxing, no allocation.
/// </summary>
public interface IKetamaNodeFilter
{
    /// <summary>True when the node (its position in the list the ring was built from) may be chosen.</summary>
    bool IsEligible(int node);
}

/// <summary>
/// A consistent hash ring in the style of libketama (and Pingora's <c>pingora-ketama</c>): each node owns points on
/// a 32-bit circle, and a key belongs to the first point at or after its hash, wrapping around. Adding or removing a
/// node moves only the keys of the arcs that node gains or loses, about 1/n of them.
/// </summary>
/// <remarks>
/// <para>
/// Points, as libketama: a node of weight <c>w</c> gets <c>floor(w / totalWeight * 40 * nodeCount)</c> MD5 digests
/// (at least one) of the string <c>"name-i"</c> (UTF-8, <c>i</c> from 0), and each 16-byte digest gives 4 points
/// (its 4-byte groups read little-endian). A node of mean weight thus owns 160 points. MD5 is used only to place
/// points, at construction, so that rings agree with other libketama-compatible clients given the same names; it is
/// not used per request.
/// </para>
/// <para>
/// Points are kept in a sorted <see cref="uint"/> array, looked up by binary search. Equal points are ordered by
/// node name, so the ring does not depend on the order of the list it was built from.
/// </para>
/// <para>This type stands alone (no ASP.NET, no server model) so it can be tested and benchmarked by itself.</para>
/// </remarks>
public sealed class KetamaRing
{
    /// <summary>Digests per node of mean weight; 4 points each, so 160 points (libketama's constant).</summary>
    private const int DigestsPerMeanWeight = 40;

    // FNV-1a 64-bit parameters (http://www.isthe.com/chongo/tech/comp/fnv/).
    private const ulong FnvOffsetBasis = 14695981039346656037UL;
    private const ulong FnvPrime = 1099511628211UL;

    private readonly uint[] _points;
    private readonly int[] _nodes;

    /// <summary>Builds the ring. <paramref name="names"/> identify nodes ("host:port"); weights below 1 count as 1.</summary>
    /// <exception cref="ArgumentException">The two lists differ in length.</exception>
    public KetamaRing(IReadOnlyList<string> names, IReadOnlyList<int> weights)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(weights);
        if (names.Count != weights.Count)
        {
            throw new ArgumentException("names and weights must have the same length.", nameof(weights));
        }

        NodeCount = names.Count;
        long totalWeight = 0;
        for (var i = 0; i < weights.Count; i++)
        {
            totalWeight += Math.Max(1, weights[i]);
        }

        var entries = new List<(uint Point, string Name, int Node)>();
        Span<byte> digest = stackalloc byte[16];
        for (var node = 0; node < names.Count; node++)
        {
            var weight = Math.Max(1, weights[node]);
            // libketama: floor(pct * 40 * n) with pct = weight / total; integer arithmetic gives the same floor.
            var digests = (int)Math.Max(1, (long)weight * DigestsPerMeanWeight * NodeCount / totalWeight);
            for (var k = 0; k < digests; k++)
            {
                MD5.HashData(Encoding.UTF8.GetBytes($"{names[node]}-{k}"), digest);
                for (var h = 0; h < 4; h++)
                {
                    entries.Add((BinaryPrimitives.ReadUInt32LittleEndian(digest.Slice(h * 4, 4)), names[node], node));
                }
            }
        }

        entries.Sort(static (a, b) =>
        {
            var byPoint = a.Point.CompareTo(b.Point);
            if (byPoint != 0)
            {
                return byPoint;
            }

            var byName = string.CompareOrdinal(a.Name, b.Name);
            return byName != 0 ? byName : a.Node.CompareTo(b.Node);
        });

        _points = new uint[entries.Count];
        _nodes = new int[entries.Count];
        for (var i = 0; i < entries.Count; i++)
        {
            _points[i] = entries[i].Point;
            _nodes[i] = entries[i].Node;
        }
    }

    /// <summary>Number of nodes the ring was built from.</summary>
    public int NodeCount { get; }

    /// <summary>Number of points on the circle (160 per node of mean weight).</summary>
    public int PointCount => _points.Length;

    /// <summary>Maps a 64-bit key to the ring's 32-bit space by folding: the high half XOR the low half.</summary>
    public static uint Fold(ulong key) => (uint)(key ^ (key >> 32));

    /// <summary>The node owning <paramref name="key"/>, or -1 when the ring is empty.</summary>
    public int Lookup(ulong key) => _points.Length == 0 ? -1 : _nodes[FirstPointAtOrAfter(Fold(key))];

    /// <summary>
    /// The node owning <paramref name="key"/> among those <paramref name="filter"/> accepts: the owner of the first
    /// point at or after the key's hash, walking clockwise past points of rejected nodes. Returns -1 when no node is
    /// accepted. Allocation-free; each rejected node is asked once when there are at most 64 nodes.
    /// </summary>
    public int Lookup<TFilter>(ulong key, TFilter filter)
        where TFilter : struct, IKetamaNodeFilter
    {
        var points = _points;
        var nodes = _nodes;
        if (points.Length == 0)
        {
            return -1;
        }

        var index = FirstPointAtOrAfter(Fold(key));
        // Remember rejected nodes (a bit each for the first 64) so a ring of 160 points per node does not ask the
        // filter 160 times per rejected node, and so the walk stops once every node has been rejected.
        ulong rejected = 0;
        var rejectedCount = 0;
        for (var step = 0; step < points.Length; step++)
        {
            var node = nodes[index];
            if (node < 64)
            {
                var bit = 1UL << node;
                if ((rejected & bit) == 0)
                {
                    if (filter.IsEligible(node))
                    {
                        return node;
                    }

                    rejected |= bit;
                    if (++rejectedCount == NodeCount)
                    {
                        return -1;
                    }
                }
            }
            else if (filter.IsEligible(node))
            {
                return node;
            }

            if (++index == points.Length)
            {
                index = 0;
            }
        }

        return -1;
    }

    /// <summary>
    /// A fast non-cryptographic 64-bit hash: FNV-1a 64 over the bytes, then MurmurHash3's <c>fmix64</c> finaliser.
    /// </summary>
    /// <remarks>
    /// FNV-1a alone mixes the last bytes of its input poorly into the high bits, and client addresses often differ
    /// only in their last byte; the finaliser gives full avalanche, so folding to 32 bits keeps keys spread around
    /// the ring. It may seem simpler to reuse MD5 as libketama does for keys, but that costs far more per request.
    /// </remarks>
    public static ulong HashKey(ReadOnlySpan<byte> data)
    {
        var hash = FnvOffsetBasis;
        foreach (var b in data)
        {
            hash ^= b;
            hash *= FnvPrime;
        }

        // MurmurHash3 fmix64.
        hash ^= hash >> 33;
        hash *= 0xff51afd7ed558ccdUL;
        hash ^= hash >> 33;
        hash *= 0xc4ceb93fe53a87cbUL;
        hash ^= hash >> 33;
        return hash;
    }

    /// <summary>
    /// <see cref="HashKey(ReadOnlySpan{byte})"/> of the address bytes (4 for IPv4, 16 for IPv6; the scope id is
    /// ignored), without allocating. An IPv4-mapped IPv6 address (<c>::ffff:a.b.c.d</c>, as a dual-mode socket
    /// reports IPv4 clients) hashes as its IPv4 address, so a client keeps its server whichever socket it came on.
    /// </summary>
    public static ulong HashKey(IPAddress ip)
    {
        ArgumentNullException.ThrowIfNull(ip);
        Span<byte> bytes = stackalloc byte[16];
        if (!ip.TryWriteBytes(bytes, out var written))
        {
            // Unreachable: no address is longer than 16 bytes.
            return 0;
        }

        if (written == 16 && ip.IsIPv4MappedToIPv6)
        {
            return HashKey(bytes.Slice(12, 4));
        }

        return HashKey(bytes[..written]);
    }

    /// <summary>Index of the first point at or after <paramref name="hash"/>, wrapping to 0 past the last.</summary>
    private int FirstPointAtOrAfter(uint hash)
    {
        // A lower bound, not Array.BinarySearch: with equal points that may return any of them, and the ring must
        // pick the same one (the first) every time. Written branch-free: the range always halves and the base moves
        // by `half` masked with the comparison. Client hashes are random, so a branching search mispredicts about
        // every other step; the JIT does not turn `first = less ? first + half : first` into a cmov inside a loop
        // (checked with DOTNET_JitDisasm on .NET 10), hence the mask. See bench/ KetamaBenchmarks.Lookup.
        var points = _points;
        var first = 0;
        var length = points.Length;
        while (length > 1)
        {
            var half = length >> 1;
            first += half & -Unsafe.BitCast<bool, byte>(points[first + half] < hash);
            length -= half;
        }

        first += Unsafe.BitCast<bool, byte>(points[first] < hash);
        return first == points.Length ? 0 : first;
    }
}
