using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Portico.Hosting;
using Portico.Observability;
using static Portico.Tests.Observability.MetricsTestHelpers;

namespace Portico.Tests.Observability;

public sealed class MetricsEndpointTests
{
    private static DefaultHttpContext Request(string method)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = method;
        context.Request.Path = "/metrics";
        context.Response.Body = new MemoryStream();
        return context;
    }

    private static string Body(HttpContext context) => Encoding.UTF8.GetString(((MemoryStream)context.Response.Body).ToArray());

    [Fact]
    public async Task Get_WritesExpositionWithVersionedContentTypeAndLength()
    {
        var snapshot = Snapshot();
        var metrics = new GatewayMetrics(processMetrics: false);
        metrics.RecordRateLimitHit();
        var context = Request("GET");

        await MetricsEndpoint.HandleAsync(context, metrics, snapshot);

        Assert.Equal(200, context.Response.StatusCode);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", context.Response.ContentType);
        var body = Body(context);
        Assert.Equal(Encoding.UTF8.GetByteCount(body), context.Response.ContentLength);
        Assert.StartsWith("# HELP pingora_requests_total ", body, StringComparison.Ordinal);
        Assert.Contains("\npingora_rate_limit_hits_total 1\n", body, StringComparison.Ordinal);
        Assert.Contains("\npingora_upstream_health_status{upstream=\"api\",server=\"127.0.0.1:3001\"} 1\n", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Head_HeadersOnly()
    {
        var context = Request("HEAD");

        await MetricsEndpoint.HandleAsync(context, new GatewayMetrics(processMetrics: false), Snapshot());

        Assert.Equal(200, context.Response.StatusCode);
        Assert.True(context.Response.ContentLength > 0);
        Assert.Equal("", Body(context));
    }

    [Theory]
    [InlineData("POST")]
    [InlineData("DELETE")]
    public async Task OtherMethods_Get405WithAllow(string method)
    {
        var context = Request(method);

        await MetricsEndpoint.HandleAsync(context, new GatewayMetrics(processMetrics: false), Snapshot());

        Assert.Equal(405, context.Response.StatusCode);
        Assert.Equal("GET, HEAD", context.Response.Headers.Allow.ToString());
        Assert.Equal("", Body(context));
    }

    [Fact]
    public async Task CreateHandler_MetricsPathScrapesAppOtherPaths404()
    {
        var app = new Portico.Gateway.GatewayApp(Snapshot(), Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        app.Metrics.RecordRateLimitHit();
        var handler = MetricsEndpoint.CreateHandler(app, "/metrics");

        var scrape = Request("GET");
        await handler(scrape);
        var other = Request("GET");
        other.Request.Path = "/metrics/x";
        await handler(other);

        Assert.Equal(200, scrape.Response.StatusCode);
        Assert.Contains("\npingora_rate_limit_hits_total 1\n", Body(scrape), StringComparison.Ordinal);
        Assert.Equal(404, other.Response.StatusCode);
        Assert.Equal("", Body(other));
    }

    [Fact]
    public async Task CountConnections_WhileConnectionRuns_ActiveIsOneThenZero()
    {
        var metrics = new GatewayMetrics(processMetrics: false);
        var release = new TaskCompletionSource();
        long during = -1;
        ConnectionDelegate inner = async _ =>
        {
            during = metrics.ConnectionsActive.Unlabeled.Value;
            await release.Task;
        };
        var counted = MetricsEndpoint.CountConnections(metrics)(inner);

        var running = counted(new DefaultConnectionContext());
        Assert.Equal(1, during);
        Assert.Equal(1, metrics.ConnectionsActive.Unlabeled.Value);
        release.SetResult();
        await running;

        Assert.Equal(0, metrics.ConnectionsActive.Unlabeled.Value);
        Assert.Equal(1, metrics.ConnectionsAccepted.Unlabeled.Value);
    }

    [Fact]
    public async Task CountConnections_ConnectionFails_StillDecrements()
    {
        var metrics = new GatewayMetrics(processMetrics: false);
        var counted = MetricsEndpoint.CountConnections(metrics)(_ => throw new IOException("reset"));

        await Assert.ThrowsAsync<IOException>(() => counted(new DefaultConnectionContext()));

        Assert.Equal(0, metrics.ConnectionsActive.Unlabeled.Value);
    }
}
