using System.Net;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Observability;

/// <summary>
/// The real gateway's Prometheus listener: traffic through the data plane shows up under the seed's names, health and
/// breaker gauges follow the servers, and the scrape passes promtool (where it is installed, as in CI).
/// </summary>
public sealed partial class MetricsScrapeTests
{
    [Fact]
    public async Task Scrape_AfterTraffic_CountsRequestsHealthAndReuse_PassesPromtool()
    {
        await using var good = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var dead = Ports.GetFree();
        var port = Ports.GetFree();
        var metricsPort = Ports.GetFree();
        var yaml = $"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              enabled: false
            monitoring:
              prometheus:
                enabled: true
                listen_address: "127.0.0.1"
                listen_port: {metricsPort}
            upstreams:
              - name: backend
                health_check:
                  interval_seconds: 1
                  unhealthy_threshold: 1
                  path: /
                servers: ["{good.Address}", "127.0.0.1:{dead}"]
            routes:
              - name: api
                path: /api/*
                upstream: backend
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        // Let the first probe mark the dead server down, so no request is retried onto it.
        await Task.Delay(2500);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/api/x"));
        }
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"http://127.0.0.1:{port}/nowhere")).StatusCode);
        }

        using var scrapeResponse = await client.GetAsync($"http://127.0.0.1:{metricsPort}/metrics");
        var scrape = await scrapeResponse.Content.ReadAsStringAsync();

        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", scrapeResponse.Content.Headers.ContentType?.ToString());
        Assert.Contains("pingora_requests_total{method=\"GET\",route=\"api\",status_code=\"200\"} 10\n", scrape, StringComparison.Ordinal);
        Assert.Contains("pingora_requests_total{method=\"GET\",route=\"-\",status_code=\"404\"} 3\n", scrape, StringComparison.Ordinal);
        Assert.Contains($"pingora_upstream_health_status{{upstream=\"backend\",server=\"{good.Address}\"}} 1\n", scrape, StringComparison.Ordinal);
        Assert.Contains($"pingora_upstream_health_status{{upstream=\"backend\",server=\"127.0.0.1:{dead}\"}} 0\n", scrape, StringComparison.Ordinal);
        Assert.Contains($"pingora_circuit_breaker_state{{upstream=\"backend\",server=\"{good.Address}\"}} 0\n", scrape, StringComparison.Ordinal);
        Assert.Contains("pingora_request_duration_seconds_count{route=\"api\"} 10\n", scrape, StringComparison.Ordinal);
        // One keep-alive client: the ten requests reuse the gateway's upstream connection.
        var created = long.Parse(Value(scrape, "pingora_upstream_connections_created_total{upstream=\"backend\"}"));
        Assert.InRange(created, 1, 2);
        Assert.Equal("10", Value(scrape, "pingora_upstream_requests_total{upstream=\"backend\"}"));
        Assert.True(long.Parse(Value(scrape, "pingora_connections_active")) >= 1, scrape);

        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await client.PostAsync($"http://127.0.0.1:{metricsPort}/metrics", new StringContent(""))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"http://127.0.0.1:{metricsPort}/other")).StatusCode);

        if (File.Exists("/usr/bin/promtool"))
        {
            var check = await ExternalTool.RunAsync("/usr/bin/promtool", ["check", "metrics"], TimeSpan.FromSeconds(60), stdin: scrape);
            Assert.True(check.ExitCode == 0 && check.StdOut.Trim().Length == 0 && check.StdErr.Trim().Length == 0,
                $"promtool check metrics:\n{check}\n--- scrape ---\n{scrape}");
        }
    }

    private static string Value(string scrape, string series)
    {
        var match = Regex.Match(scrape, "^" + Regex.Escape(series) + " (\\S+)$", RegexOptions.Multiline);
        Assert.True(match.Success, $"{series} not in the scrape:\n{scrape}");
        return match.Groups[1].Value;
    }
}
