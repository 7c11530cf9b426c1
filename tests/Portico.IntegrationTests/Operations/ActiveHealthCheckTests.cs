using System.Net;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>Active health checks on the real gateway: a failing server leaves the balancer and comes back.</summary>
public sealed class ActiveHealthCheckTests
{
    [Fact]
    public async Task FailingHealthEndpoint_ServerLeavesBalancer_ThenReturns()
    {
        var aHealthy = false;
        var aTraffic = 0;
        await using var a = await TestUpstream.StartAsync(c =>
        {
            if (c.Request.Path == "/health")
            {
                c.Response.StatusCode = Volatile.Read(ref aHealthy) ? 200 : 500;
                return Task.CompletedTask;
            }
            Interlocked.Increment(ref aTraffic);
            return c.Response.WriteAsync("a");
        });
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("b"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              enabled: false
            health_check:
              interval_seconds: 1
              timeout_seconds: 1
              healthy_threshold: 1
              unhealthy_threshold: 1
              path: /health
            upstreams:
              backend:
                servers: ["{a.Address}", "{b.Address}"]
            """, port);

        // The first probe comes within ~1 s (interval plus up to 10 % jitter); wait for the transition in the log.
        await gateway.WaitForOutputAsync(a.Address, TimeSpan.FromSeconds(10));
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/x";
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("b", await client.GetStringAsync(url));
        }
        Assert.Equal(0, Volatile.Read(ref aTraffic));

        Volatile.Write(ref aHealthy, true);
        // Polls until a probe has brought the server back (bounded: the interval is 1 s).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (Volatile.Read(ref aTraffic) == 0 && DateTime.UtcNow < deadline)
        {
            await client.GetStringAsync(url);
            await Task.Delay(100);
        }
        Assert.True(Volatile.Read(ref aTraffic) > 0, "server a never came back:\n" + gateway.Output);
    }
}
