using Portico.Observability;
using Portico.Observability.Metrics;
using static Portico.Tests.Observability.MetricsTestHelpers;

namespace Portico.Tests.Observability;

// Recording runs once per request, so it must not allocate once a label set has been seen, and concurrent
// recording must not lose counts. Allocation is measured on the current thread only, so parallel tests do not
// disturb it, and by AllocationAssert (warmed up, smallest of three runs): a raw measurement once saw 6,984 bytes
// from a one-off tier-up in CI.
public sealed class RecordingCostTests
{
    private const int Recordings = 10_000;

    [Fact]
    public void Counter_SeenLabelSet_LookupAndIncrementAllocateNothing()
    {
        var counter = new Counter("c_total", "h", "method", "route", "status_code");
        var method = "GET";
        var route = "api";
        var status = "200";
        counter.WithLabels(method, route, status).Inc();   // first use creates the cell (allocates once)
        long calls = 1;

        AllocationAssert.Zero(() =>
        {
            counter.WithLabels(method, route, status).Inc();
            calls++;
        }, Recordings);

        Assert.Equal(calls, counter.WithLabels(method, route, status).Value);
    }

    [Fact]
    public void Histogram_Observe_AllocatesNothing()
    {
        var cell = new Histogram("h_seconds", "h", Histogram.LatencyBuckets, "route").WithLabels("api");
        cell.Observe(0.001);
        long calls = 1;

        AllocationAssert.Zero(() =>
        {
            cell.Observe(calls * 1e-6);
            calls++;
        }, Recordings);

        Assert.Equal(calls, cell.Count);
    }

    [Fact]
    public void RecordRequest_SeenRouteMethodStatus_AllocatesNothing()
    {
        var snapshot = Snapshot();
        var metrics = new GatewayMetrics(processMetrics: false);
        metrics.Bind(snapshot);
        var route = snapshot.Routes.Routes.Single(r => r.Name == "api");
        var session = Session("POST", 201, attempts: 2, upstreamStatus: 201, upstreamHeaderTime: TimeSpan.FromMilliseconds(2),
            requestBytes: 10, responseBytes: 20);
        var duration = TimeSpan.FromMilliseconds(3);
        var peer = snapshot.PeerFor(route.Upstream!, route.Upstream!.Servers[0]);
        metrics.RecordRequest(session, route, route.Upstream, duration);
        metrics.RecordConnectError(peer);

        long calls = 1;

        AllocationAssert.Zero(() =>
        {
            metrics.RecordRequest(session, route, route.Upstream, duration);
            metrics.RecordConnectError(peer);
            calls++;
        }, Recordings);

        Assert.Equal(calls, metrics.Requests.WithLabels("POST", "api", "201").Value);
        Assert.Equal(2 * calls, metrics.UpstreamRequests.WithLabels("api").Value);
        Assert.Equal(calls, metrics.UpstreamRetries.WithLabels("api").Value);
        Assert.Equal(20L * calls, metrics.ResponseBodyBytes.WithLabels("api").Value);
        Assert.Equal(calls, metrics.UpstreamConnectErrors.WithLabels("api", "127.0.0.1:3001").Value);
    }

    [Fact]
    public void RecordRequest_UnboundRoute_FoundByNameWithoutAllocating()
    {
        // A snapshot the app never bound (a library user's own): the cells are looked up by name instead.
        var snapshot = Snapshot();
        var metrics = new GatewayMetrics(processMetrics: false);
        var route = snapshot.Routes.Routes.Single(r => r.Name == "web");
        var session = Session();
        long calls = 0;

        AllocationAssert.Zero(() =>
        {
            metrics.RecordRequest(session, route, null, TimeSpan.Zero);
            calls++;
        }, Recordings);

        Assert.Equal(calls, metrics.Requests.WithLabels("GET", "web", "200").Value);
    }

    [Fact]
    public async Task Recording_ManyThreads_TotalsExact()
    {
        const int threads = 8;
        const int perThread = 50_000;
        var snapshot = Snapshot();
        var metrics = new GatewayMetrics(processMetrics: false);
        metrics.Bind(snapshot);
        var route = snapshot.Routes.Routes.Single(r => r.Name == "api");
        using var start = new Barrier(threads);

        var workers = Enumerable.Range(0, threads).Select(t => Task.Factory.StartNew(() =>
        {
            // Each thread uses its own status too, so cells are created concurrently as well as incremented.
            var shared = Session(attempts: 1, upstreamStatus: 200, upstreamHeaderTime: TimeSpan.FromMilliseconds(1), responseBytes: 3);
            var own = Session(status: 500 + t);
            start.SignalAndWait();
            for (var i = 0; i < perThread; i++)
            {
                metrics.RecordRequest(shared, route, route.Upstream, TimeSpan.FromMilliseconds(1));
                metrics.RecordRequest(own, route, null, TimeSpan.FromMilliseconds(1));
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        await Task.WhenAll(workers);

        Assert.Equal(threads * perThread, metrics.Requests.WithLabels("GET", "api", "200").Value);
        for (var t = 0; t < threads; t++)
        {
            Assert.Equal(perThread, metrics.Requests.WithLabels("GET", "api", (500 + t).ToString(System.Globalization.CultureInfo.InvariantCulture)).Value);
        }
        var duration = metrics.RequestDuration.WithLabels("api");
        Assert.Equal(2L * threads * perThread, duration.Count);
        Assert.Equal(2.0 * threads * perThread * 0.001, duration.Sum, 3);
        Assert.Equal(3L * threads * perThread, metrics.ResponseBodyBytes.WithLabels("api").Value);
        Assert.Equal(threads * perThread, metrics.UpstreamLatency.WithLabels("api").Count);
        Assert.Equal(1 + threads, Samples(Scrape(metrics, snapshot)).Count(s => s.StartsWith("pingora_requests_total{method=\"GET\",route=\"api\"", StringComparison.Ordinal)));
    }
}
