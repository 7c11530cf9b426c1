using System.Net;
using BenchmarkDotNet.Attributes;
using Portico.Config;
using Portico.Upstreams;

namespace Portico.Benchmarks;

/// <summary>
/// <see cref="LoadBalancingPolicy.Select"/> of every policy over 8 servers (one unhealthy, so the skip path runs),
/// alternating no exclusion and a retry excluding one server. Allocated must stay 0 B.
/// </summary>
[MemoryDiagnoser]
public class LoadBalancingBenchmarks
{
    private const int Operations = 1024;

    private readonly ulong[] _keys = new ulong[Operations];
    private ServerModel[] _servers = [];
    private LoadBalancingPolicy _policy = null!;

    [Params("round_robin", "weighted_round_robin", "least_connections", "ip_hash", "random")]
    public string Policy { get; set; } = "round_robin";

    [GlobalSetup]
    public void Setup()
    {
        int[] weights = [100, 80, 50, 50, 20, 10, 5, 1];
        _servers = new ServerModel[weights.Length];
        for (var i = 0; i < weights.Length; i++)
        {
            _servers[i] = new ServerModel(
                new UpstreamServerConfig { Host = $"10.0.0.{i + 1}", Port = 8080, Weight = weights[i] }, i);
            for (var r = 0; r < i % 3; r++)
            {
                _servers[i].State.OnRequestStart();
            }
        }

        _servers[3].State.SetHealthy(false);
        _policy = LoadBalancingPolicyFactory.Create(Policy, _servers);

        var random = new Random(42);
        var address = new byte[4];
        for (var i = 0; i < _keys.Length; i++)
        {
            random.NextBytes(address);
            _keys[i] = KetamaRing.HashKey(new IPAddress(address));
        }
    }

    [Benchmark(OperationsPerInvoke = Operations)]
    public ServerModel? Select()
    {
        ServerModel? last = null;
        var keys = _keys;
        for (var i = 0; i < keys.Length; i++)
        {
            last = _policy.Select(keys[i], (i & 7) == 0 ? _servers[0] : null);
        }

        return last;
    }
}
