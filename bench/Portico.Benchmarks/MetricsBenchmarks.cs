using System.Net;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Portico.Config;
using Portico.Gateway;
using Portico.Observability;
using Portico.Observability.Metrics;
using Portico.Proxy;
using Portico.Routing;
using Portico.Upstreams;

namespace Portico.Benchmarks;

/// <summary>
/// The per-request cost of metrics, single-threaded: what the logging phase records for one proxied request
/// (requests_total, duration histogram, body bytes, upstream attempts and latency), and its parts. All must allocate
/// nothing. A scrape of a small config is measured for reference (once per scrape interval, not per request).
/// </summary>
[MemoryDiagnoser]
public class MetricsBenchmarks
{
    private GatewayMetrics _metrics = null!;
    private GatewaySnapshot _snapshot = null!;
    private RouteModel _route = null!;
    private UpstreamModel _upstream = null!;
    private ProxySession _session = null!;
    private CounterCell _counter = null!;
    private Counter _family = null!;
    private HistogramCell _histogram = null!;
    private PooledBufferWriter _buffer = null!;
    private readonly TimeSpan _duration = TimeSpan.FromMilliseconds(3.2);

    [GlobalSetup]
    public void Setup()
    {
        var result = ConfigLoader.LoadYaml("""
            upstreams:
              - name: api
                servers: ["127.0.0.1:3001", "127.0.0.1:3002"]
              - name: web
                servers: ["127.0.0.1:3003"]
            routes:
              - name: api
                path: "/api/*"
                upstream: api
              - name: web
                path: "/*"
                upstream: web
            """);
        _snapshot = GatewayCompiler.Compile(result.Config!);
        _metrics = new GatewayMetrics(processMetrics: false);
        _metrics.Bind(_snapshot);
        _route = _snapshot.Routes.Routes.First(r => r.Name == "api");
        _upstream = _route.Upstream!;

        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Loopback;
        http.Request.Method = "GET";
        http.Response.StatusCode = 200;
        _session = new ProxySession(http, "bench")
        {
            Attempts = 1,
            UpstreamStatus = 200,
            UpstreamHeaderTime = TimeSpan.FromMilliseconds(2.5),
            ResponseBodyBytes = 100,
        };
        _metrics.RecordRequest(_session, _route, _upstream, _duration);

        _family = _metrics.Requests;
        _counter = _family.WithLabels("GET", "api", "200");
        _histogram = _metrics.RequestDuration.WithLabels("api");
        _buffer = new PooledBufferWriter();
    }

    [GlobalCleanup]
    public void Cleanup() => _buffer.Dispose();

    /// <summary>Everything the logging phase records for one proxied request.</summary>
    [Benchmark(Baseline = true)]
    public void RecordRequest() => _metrics.RecordRequest(_session, _route, _upstream, _duration);

    [Benchmark]
    public void CounterInc() => _counter.Inc();

    [Benchmark]
    public void HistogramObserve() => _histogram.Observe(0.0032);

    /// <summary>A lookup by label values (what a caller without a cached cell pays), then the increment.</summary>
    [Benchmark]
    public void CounterWithLabelsInc() => _family.WithLabels("GET", "api", "200").Inc();

    /// <summary>One scrape of this config (no process metrics), into a reused pooled buffer.</summary>
    [Benchmark]
    public int Scrape()
    {
        _buffer.Clear();
        _metrics.WriteTo(_buffer, _snapshot);
        return _buffer.WrittenCount;
    }
}
