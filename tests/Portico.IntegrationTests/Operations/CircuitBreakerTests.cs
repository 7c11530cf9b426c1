using System.Net;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>The circuit breaker on the real gateway: opens on errors, probes half-open after its timeout, closes.</summary>
public sealed class CircuitBreakerTests
{
    [Fact]
    public async Task ErrorRateOverThreshold_Opens_ThenHalfOpenProbeCloses()
    {
        var aFailing = true;
        await using var a = await TestUpstream.StartAsync(c =>
        {
            c.Response.StatusCode = Volatile.Read(ref aFailing) ? 503 : 200;
            return c.Response.WriteAsync("a");
        });
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("b"));
        var port = Ports.GetFree();
        // Passive ejection is pushed out of the way (threshold 1000) so only the breaker acts.
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              enabled: false
            upstreams:
              - name: backend
                max_retries: 0
                health_check:
                  enabled: false
                  unhealthy_threshold: 1000
                circuit_breaker:
                  error_threshold: 0.5
                  timeout_seconds: 2
                  min_requests: 4
                  window_seconds: 30
                servers: ["{a.Address}", "{b.Address}"]
            """, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/x";

        // Round robin: a gets every other request; after 4 of its requests fail (100 % > 50 %) its breaker opens.
        for (var i = 0; i < 8; i++)
        {
            await client.GetAsync(url);
        }
        await gateway.WaitForOutputAsync("Circuit breaker opened", TimeSpan.FromSeconds(5));
        var aBefore = a.Requests;
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("b", await client.GetStringAsync(url));
        }
        Assert.Equal(aBefore, a.Requests);

        // After timeout_seconds, half-open probes reach a again; a is fixed, so 3 successful probes close it.
        Volatile.Write(ref aFailing, false);
        await Task.Delay(TimeSpan.FromSeconds(2.2)); // the breaker's open timeout, 2 s, must pass first
        var aAnswers = 0;
        for (var i = 0; i < 20; i++)
        {
            var body = await client.GetStringAsync(url);
            aAnswers += body == "a" ? 1 : 0;
        }
        Assert.True(aAnswers >= 8, $"a answered {aAnswers} of 20 after recovering:\n{gateway.Output}");
    }
}
