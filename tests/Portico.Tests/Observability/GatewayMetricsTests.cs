using Microsoft.Extensions.Logging.Abstractions;
using Portico.Gateway;
using Portico.Observability;
using Portico.Observability.Metrics;
using Portico.Proxy;
using Portico.Tests.Gateway;
using Portico.Upstreams;
using static Portico.Tests.Observability.MetricsTestHelpers;

namespace Portico.Tests.Observability;

public sealed class GatewayMetricsTests
{
    private static GatewayApp App(GatewaySnapshot snapshot, GatewayMetrics? metrics = null) =>
        new(snapshot, NullLoggerFactory.Instance, metrics ?? new GatewayMetrics(processMetrics: false));

    [Fact]
    public async Task LoggingPhase_ProxiedRequest_RecordsRequestDurationAttemptsAndLatency()
    {
        var app = App(Snapshot());
        var (session, ctx) = await GatewayTestSession.StartAsync(app);   // GET / -> route "web"
        session.Attempts = 2;
        session.UpstreamStatus = 200;
        session.UpstreamHeaderTime = TimeSpan.FromMilliseconds(3);
        session.ResponseBodyBytes = 120;

        await app.LoggingAsync(session, null, ctx);

        var metrics = app.Metrics;
        Assert.Equal(1, metrics.Requests.WithLabels("GET", "web", "200").Value);
        Assert.Equal(1, metrics.RequestDuration.WithLabels("web").Count);
        Assert.Equal(120, metrics.ResponseBodyBytes.WithLabels("web").Value);
        Assert.Equal(2, metrics.UpstreamRequests.WithLabels("web").Value);
        Assert.Equal(1, metrics.UpstreamRetries.WithLabels("web").Value);
        var latency = metrics.UpstreamLatency.WithLabels("web");
        Assert.Equal(1, latency.Count);
        Assert.Equal(0.003, latency.Sum, 6);
        Assert.Equal(1, latency.BucketCount(3));   // (0.0025, 0.005]
    }

    [Fact]
    public void RecordRequest_NoRouteAndUnknownMethod_UsesDashAndOther()
    {
        var metrics = new GatewayMetrics(processMetrics: false);

        metrics.RecordRequest(Session("BREW", 404), null, null, TimeSpan.FromMilliseconds(1));

        Assert.Equal(1, metrics.Requests.WithLabels("_OTHER", GatewayMetrics.NoRoute, "404").Value);
    }

    [Fact]
    public async Task FailToConnect_CountsConnectErrorForThatServer()
    {
        var app = App(Snapshot());
        var (session, ctx) = await GatewayTestSession.StartAsync(app);
        var peer = await app.SelectUpstreamAsync(session, ctx);
        var error = new ProxyError(ProxyErrorKind.ConnectRefused, ProxyErrorSource.Upstream, true, "refused");

        app.FailToConnect(session, peer!, error, ctx);

        Assert.Equal(1, app.Metrics.UpstreamConnectErrors.WithLabels("web", "127.0.0.1:3003").Value);
    }

    [Fact]
    public void Reload_RouteAndUpstreamStillThere_CountersKeepCounting()
    {
        var first = Snapshot();
        var app = App(first);
        var metrics = app.Metrics;
        var api = first.Routes.Routes.Single(r => r.Name == "api");
        metrics.RecordRequest(Session(attempts: 1), api, api.Upstream, TimeSpan.FromMilliseconds(2));
        metrics.RecordConnectError(first.PeerFor(api.Upstream!, api.Upstream!.Servers[0]));

        // The new config drops route "hello", upstream "web" and server 3002, and adds a server to "api".
        var second = Snapshot("""
            upstreams:
              - name: api
                servers: ["127.0.0.1:3001", "127.0.0.1:3009"]
            routes:
              - name: api
                path: "/api/*"
                upstream: api
            """, first);
        app.Swap(second);
        var apiAgain = second.Routes.Routes.Single();
        metrics.RecordRequest(Session(attempts: 1), apiAgain, apiAgain.Upstream, TimeSpan.FromMilliseconds(2));
        metrics.RecordConnectError(second.PeerFor(apiAgain.Upstream!, apiAgain.Upstream!.Servers[0]));

        var samples = Samples(Scrape(metrics, second));
        Assert.Contains("pingora_requests_total{method=\"GET\",route=\"api\",status_code=\"200\"} 2", samples);
        Assert.Contains("pingora_request_duration_seconds_count{route=\"api\"} 2", samples);
        Assert.Contains("pingora_upstream_requests_total{upstream=\"api\"} 2", samples);
        Assert.Contains("pingora_upstream_connect_errors_total{upstream=\"api\",server=\"127.0.0.1:3001\"} 2", samples);
        // Gone from the config, gone from the scrape.
        Assert.DoesNotContain(samples, s => s.Contains("route=\"web\"", StringComparison.Ordinal) || s.Contains("route=\"hello\"", StringComparison.Ordinal));
        Assert.DoesNotContain(samples, s => s.Contains("upstream=\"web\"", StringComparison.Ordinal));
        Assert.DoesNotContain(samples, s => s.Contains("127.0.0.1:3002", StringComparison.Ordinal));
        Assert.Contains("pingora_upstream_health_status{upstream=\"api\",server=\"127.0.0.1:3009\"} 1", samples);
    }

    [Fact]
    public void Reload_RequestStillRunningOnOldSnapshotOfRemovedRoute_DoesNotBringSeriesBack()
    {
        var first = Snapshot();
        var app = App(first);
        var hello = first.Routes.Routes.Single(r => r.Name == "hello");
        app.Swap(Snapshot("upstreams:\n  - name: api\n    servers: [\"127.0.0.1:3001\"]\nroutes:\n  - name: api\n    path: \"/*\"\n    upstream: api\n", first));

        app.Metrics.RecordRequest(Session(status: 201), hello, null, TimeSpan.FromMilliseconds(1));

        Assert.DoesNotContain(Samples(Scrape(app.Metrics, app.Snapshot)), s => s.Contains("route=\"hello\"", StringComparison.Ordinal));
    }

    [Fact]
    public void Bind_SameUpstreamClientAcrossReload_CountsNewConnectionsIntoSameSeries()
    {
        var first = Snapshot();
        var app = App(first);
        var second = Snapshot(GatewayYaml, first);
        app.Swap(second);

        Assert.Same(first.Upstreams["api"].Client, second.Upstreams["api"].Client);
        Assert.Same(app.Metrics.UpstreamConnectionsCreated.WithLabels("api"), second.Upstreams["api"].Client.ConnectionCounter);
    }

    [Fact]
    public void Scrape_HealthAndBreakerGauges_ReadFromSnapshotNow()
    {
        var snapshot = Snapshot();
        var metrics = App(snapshot).Metrics;
        var api = snapshot.Upstreams["api"];
        api.Servers[1].State.SetHealthy(false);
        var breaker = api.Servers[0].State.Breaker!;
        // Open the breaker: enough failures in its window (min_requests defaults apply).
        for (var i = 0; i < 200 && breaker.State != CircuitState.Open; i++)
        {
            if (breaker.TryAcquire())
            {
                breaker.OnFailure();
            }
        }
        Assert.Equal(CircuitState.Open, breaker.State);

        var samples = Samples(Scrape(metrics, snapshot));

        Assert.Contains("pingora_upstream_health_status{upstream=\"api\",server=\"127.0.0.1:3001\"} 1", samples);
        Assert.Contains("pingora_upstream_health_status{upstream=\"api\",server=\"127.0.0.1:3002\"} 0", samples);
        Assert.Contains("pingora_upstream_health_status{upstream=\"web\",server=\"127.0.0.1:3003\"} 1", samples);
        Assert.Contains("pingora_circuit_breaker_state{upstream=\"api\",server=\"127.0.0.1:3001\"} 1", samples);
        Assert.Contains("pingora_circuit_breaker_state{upstream=\"api\",server=\"127.0.0.1:3002\"} 0", samples);
        Assert.Contains("pingora_circuit_breaker_state{upstream=\"web\",server=\"127.0.0.1:3003\"} 0", samples);

        // Passive ejection also counts as unhealthy.
        snapshot.Upstreams["web"].Servers[0].State.ReportFailure(1, TimeSpan.FromMinutes(1));
        Assert.Contains("pingora_upstream_health_status{upstream=\"web\",server=\"127.0.0.1:3003\"} 0", Samples(Scrape(metrics, snapshot)));
    }

    [Fact]
    public void Prefix_FromConfig_MetricsBlockWinsOverMonitoring()
    {
        Assert.Equal("pingora", GatewayMetrics.PrefixOf(MetricsTestHelpers.Config("upstreams: []\n")));
        Assert.Equal("edge", GatewayMetrics.PrefixOf(MetricsTestHelpers.Config("monitoring:\n  prometheus:\n    prefix: edge\n")));
        Assert.Equal("gw", GatewayMetrics.PrefixOf(MetricsTestHelpers.Config("monitoring:\n  prometheus:\n    prefix: edge\nmetrics:\n  prefix: gw\n")));

        var app = new GatewayApp(Snapshot("metrics:\n  prefix: gw\n" + GatewayYaml), NullLoggerFactory.Instance);
        app.Metrics.RecordRateLimitHit();
        var scrape = Scrape(app.Metrics, app.Snapshot);
        Assert.Contains("\ngw_rate_limit_hits_total 1\n", scrape, StringComparison.Ordinal);
        Assert.Contains("\ngw_upstream_health_status{", scrape, StringComparison.Ordinal);
        Assert.DoesNotContain("pingora_", scrape, StringComparison.Ordinal);
        Assert.Contains("\nprocess_cpu_seconds_total ", scrape, StringComparison.Ordinal);
    }

    [Fact]
    public void ConnectionCounting_OpenedAndClosed_GaugeFollows()
    {
        var metrics = new GatewayMetrics(processMetrics: false);
        metrics.ConnectionOpened();
        metrics.ConnectionOpened();
        metrics.ConnectionClosed();

        Assert.Equal(1, metrics.ConnectionsActive.Unlabeled.Value);
        Assert.Equal(2, metrics.ConnectionsAccepted.Unlabeled.Value);
    }
}
