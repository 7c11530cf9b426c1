using System.Net;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>Live-traffic failures on the real gateway: idempotent retries after a reset, and passive ejection.</summary>
public sealed class PassiveHealthAndRetryTests
{
    private static string Config(int port, params string[] servers) => Config(port, 3, servers);

    private static string Config(int port, int maxFails, params string[] servers) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
        admin:
          enabled: false
        logging:
          level: warn
        upstreams:
          - name: backend
            load_balance_strategy: round_robin
            max_retries: 1
            health_check:
              enabled: false
              unhealthy_threshold: {maxFails}
            servers: [{string.Join(", ", servers.Select(s => $"\"{s}\""))}]
        """;

    [Fact]
    public async Task ResetBeforeAnswer_IdempotentRetriedOnAnotherServer_PostNot()
    {
        await using var reset = ResettingUpstream.Start();
        await using var good = await TestUpstream.StartAsync(c => c.Response.WriteAsync("good"));
        var port = Ports.GetFree();
        // Passive ejection would take the resetting server out after a few failures; keep it in for this test.
        await using var gateway = await GatewayProcess.StartAsync(Config(port, 1000, reset.Address, good.Address), port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/x";

        // Round robin sends every other first attempt to the resetting server; a GET must still always succeed.
        for (var i = 0; i < 4; i++)
        {
            var response = await client.GetAsync(url);
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"GET {i}: {response.StatusCode}\n{gateway.Output}");
        }
        Assert.True(reset.Requests >= 1, "the resetting server was never tried");

        // A POST with a body that reaches the resetting server must not be replayed: the client gets 502.
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 4; i++)
        {
            var response = await client.PostAsync(url, new StringContent(new string('x', 100), Encoding.UTF8));
            statuses.Add(response.StatusCode);
        }
        Assert.Contains(HttpStatusCode.BadGateway, statuses);
        Assert.Contains(HttpStatusCode.OK, statuses);
    }

    [Fact]
    public async Task RetryOnStatus_503RetriedForGetAndIdempotentRoute_PostAndExhaustedRetriesDeliverTheAnswer()
    {
        await using var busy = await TestUpstream.StartAsync(c =>
        {
            c.Response.StatusCode = 503;
            c.Response.Headers["X-From"] = "busy";
            return c.Response.WriteAsync("restarting");
        });
        await using var good = await TestUpstream.StartAsync(c => c.Response.WriteAsync("good"));
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              enabled: false
            logging:
              level: warn
            upstreams:
              - name: backend
                load_balance_strategy: round_robin
                max_retries: 1
                retry_on_status: [503]
                health_check:
                  enabled: false
                  unhealthy_threshold: 1000
                servers: ["{busy.Address}", "{good.Address}"]
              - name: only-busy
                max_retries: 2
                retry_on_status: [503]
                health_check:
                  enabled: false
                  unhealthy_threshold: 1000
                servers: ["{busy.Address}"]
            routes:
              - path: /search
                upstream: backend
                idempotent: true
              - path: /busy
                upstream: only-busy
              - path: /*
                upstream: backend
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };

        // GETs: round robin sends every other first attempt to the busy server; the 503 is retried on the good one.
        for (var i = 0; i < 6; i++)
        {
            var response = await client.GetAsync($"http://127.0.0.1:{port}/x");
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"GET {i}: {response.StatusCode}\n{gateway.Output}");
            Assert.Equal("good", await response.Content.ReadAsStringAsync());
        }
        Assert.True(busy.Requests >= 2, $"the busy server was tried {busy.Requests} times");

        // A POST is not idempotent: the 503 reaches the client as the upstream sent it.
        var postStatuses = new List<HttpStatusCode>();
        for (var i = 0; i < 4; i++)
        {
            var response = await client.PostAsync($"http://127.0.0.1:{port}/x", new StringContent(""));
            postStatuses.Add(response.StatusCode);
            if (response.StatusCode == HttpStatusCode.ServiceUnavailable)
            {
                Assert.Equal("busy", response.Headers.GetValues("X-From").Single());
                Assert.Equal("restarting", await response.Content.ReadAsStringAsync());
            }
        }
        Assert.Contains(HttpStatusCode.ServiceUnavailable, postStatuses);

        // The same POST on a route marked idempotent is retried.
        for (var i = 0; i < 4; i++)
        {
            var response = await client.PostAsync($"http://127.0.0.1:{port}/search", new StringContent(""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        // When every attempt answers 503, the last answer goes to the client unchanged (not a gateway error).
        var before = busy.Requests;
        var last = await client.GetAsync($"http://127.0.0.1:{port}/busy");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, last.StatusCode);
        Assert.Equal("restarting", await last.Content.ReadAsStringAsync());
        Assert.Equal(3, busy.Requests - before);
    }

    [Fact]
    public async Task Server5xx_EjectedAfterThreeInARow_TrafficGoesToHealthyServer()
    {
        await using var failing = await TestUpstream.StartAsync(c =>
        {
            c.Response.StatusCode = 500;
            return c.Response.WriteAsync("broken");
        });
        await using var good = await TestUpstream.StartAsync(c => c.Response.WriteAsync("good"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, failing.Address, good.Address), port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/x";

        for (var i = 0; i < 6; i++)
        {
            await client.GetAsync(url);
        }
        // Three 500s in a row (round robin alternates) eject the failing server: the next 20 requests all succeed.
        Assert.Equal(3, failing.Requests);
        for (var i = 0; i < 20; i++)
        {
            var response = await client.GetAsync(url);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Equal(3, failing.Requests);
        await gateway.WaitForOutputAsync("ejected", TimeSpan.FromSeconds(5));
    }
}
