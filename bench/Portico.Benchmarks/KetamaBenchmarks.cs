using System.Net;
using BenchmarkDotNet.Attributes;
using Portico.Upstreams;

namespace Portico.Benchmarks;

/// <summary>
/// The consistent hash alone: hashing a client address, and ring lookups over 10 nodes (1,600 points) for 1,024
/// random client keys, so the binary search sees unpredictable branches as with real traffic.
/// </summary>
[MemoryDiagnoser]
public class KetamaBenchmarks
{
    private readonly IPAddress _v4 = IPAddress.Parse("198.51.100.23");
    private readonly IPAddress _v6 = IPAddress.Parse("2001:db8:85a3::8a2e:370:7334");
    private const int Operations = 1024;

    private readonly ulong[] _keys = new ulong[Operations];
    private KetamaRing _ring = null!;

    [GlobalSetup]
    public void Setup()
    {
        var names = new string[10];
        var weights = new int[10];
        for (var i = 0; i < names.Length; i++)
        {
            names[i] = $"10.0.0.{i + 1}:8080";
            weights[i] = 1;
        }

        _ring = new KetamaRing(names, weights);
        var random = new Random(42);
        var address = new byte[4];
        for (var i = 0; i < _keys.Length; i++)
        {
            random.NextBytes(address);
            _keys[i] = KetamaRing.HashKey(new IPAddress(address));
        }
    }

    [Benchmark]
    public ulong HashKeyIPv4() => KetamaRing.HashKey(_v4);

    [Benchmark]
    public ulong HashKeyIPv6() => KetamaRing.HashKey(_v6);

    [Benchmark(OperationsPerInvoke = Operations)]
    public int Lookup()
    {
        var node = 0;
        var keys = _keys;
        for (var i = 0; i < keys.Length; i++)
        {
            node ^= _ring.Lookup(keys[i]);
        }

        return node;
    }
}
