using System.Net;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.Config;
using Portico.Gateway;
using Portico.Observability;
using Portico.Observability.Metrics;
using Portico.Proxy;

namespace Portico.Tests.Observability;

internal static class MetricsTestHelpers
{
    /// <summary>Two upstreams (one with a circuit breaker), three routes, one of them answered by Portico.</summary>
    public const string GatewayYaml = """
        upstreams:
          - name: api
            max_retries: 2
            servers: ["127.0.0.1:3001", "127.0.0.1:3002"]
            circuit_breaker:
              enabled: true
              error_threshold: 0.5
              timeout_seconds: 60
          - name: web
            servers: ["127.0.0.1:3003"]
        routes:
          - name: api
            path: "/api/*"
            upstream: api
          - name: web
            path: "/*"
            upstream: web
          - name: hello
            path: "/hello"
            respond:
              status: 200
              body: "hi"
        """;

    public static GatewayConfig Config(string yaml)
    {
        var result = ConfigLoader.LoadYaml(yaml);
        Assert.True(result.IsValid, result.ToString());
        return result.Config!;
    }

    public static GatewaySnapshot Snapshot(string yaml = GatewayYaml, GatewaySnapshot? previous = null) =>
        GatewayCompiler.Compile(Config(yaml), previous);

    public static string Render(Action<PrometheusTextWriter> write)
    {
        using var buffer = new PooledBufferWriter(64);
        write(new PrometheusTextWriter(buffer));
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    public static string Scrape(GatewayMetrics metrics, GatewaySnapshot snapshot)
    {
        using var buffer = new PooledBufferWriter();
        metrics.WriteTo(buffer, snapshot);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>The sample lines of a scrape (no comments), for exact-line assertions.</summary>
    public static string[] Samples(string scrape) =>
        scrape.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith('#')).ToArray();

    /// <summary>A finished request as the logging phase sees it.</summary>
    public static ProxySession Session(string method = "GET", int status = 200, int attempts = 0, int upstreamStatus = 0,
        TimeSpan upstreamHeaderTime = default, long requestBytes = 0, long responseBytes = 0)
    {
        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Loopback;
        http.Request.Method = method;
        http.Request.Path = "/";
        http.Response.StatusCode = status;
        return new ProxySession(http, "test")
        {
            Attempts = attempts,
            UpstreamStatus = upstreamStatus,
            UpstreamHeaderTime = upstreamHeaderTime,
            RequestBodyBytes = requestBytes,
            ResponseBodyBytes = responseBytes,
        };
    }
}
