using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Portico.Routing;

namespace Portico.Benchmarks;

/// <summary>
/// <see cref="RouteTable.Match"/> on seed 001's routes (/oauth/*, /admin/*, /kline/*, /flow/*, /test/*, /*): a hit
/// on the first route tried, one in the middle, and the catch-all. Allocated must stay 0 B.
/// </summary>
[MemoryDiagnoser]
public class RouteTableBenchmarks
{
    private readonly HeaderDictionary _headers = new() { ["Accept"] = "application/json", ["User-Agent"] = "bench" };
    private RouteTable _table = null!;

    [Params("/oauth/token", "/kline/BTC-USD/1m", "/adminx")]
    public string Path { get; set; } = "/";

    [GlobalSetup]
    public void Setup()
    {
        (string Name, string Path, string Upstream)[] seed =
        [
            ("oauth", "/oauth/*", "oauth-service"),
            ("admin", "/admin/*", "admin-portal"),
            ("kline", "/kline/*", "kline-service"),
            ("flow", "/flow/*", "flow-service"),
            ("test", "/test/*", "test-service"),
            ("catch-all", "/*", "admin-portal"),
        ];
        var routes = new RouteModel[seed.Length];
        for (var i = 0; i < seed.Length; i++)
        {
            routes[i] = new RouteModel { Name = seed[i].Name, Path = seed[i].Path, UpstreamName = seed[i].Upstream, Order = i };
        }

        _table = RouteTable.Build(routes);
    }

    [Benchmark]
    public RouteModel? Match() => _table.Match("gateway.example.com:8080", "GET", Path, _headers);
}
