using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Portico.IntegrationTests.Operations;

/// <summary>Zone failover on the real gateway under a steady client loop: the local server dies, then returns.</summary>
public sealed class FailoverTests(ITestOutputHelper output)
{
    [Fact]
    public async Task LocalServerKilledUnderLoad_FailsOverToOtherZone_WithoutFailedRequests()
    {
        var localPort = Ports.GetFree();
        var local = await TestUpstream.StartAsync(c => c.Response.WriteAsync("local"), port: localPort);
        await using var remote = await TestUpstream.StartAsync(c => c.Response.WriteAsync("remote"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
              zone: a
            admin:
              enabled: false
            logging:
              level: warn
            upstreams:
              - name: backend
                servers:
                  - host: 127.0.0.1
                    port: {localPort}
                    zone: a
                  - host: 127.0.0.1
                    port: {remote.Port}
                    zone: b
            """, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var url = $"http://127.0.0.1:{port}/x";
        Assert.Equal("local", await client.GetStringAsync(url));

        var failed = 0;
        var total = 0;
        TimeSpan? firstRemote = null;
        TimeSpan? killedAt = null;
        var clock = Stopwatch.StartNew();
        // A bounded client loop (3 s); the local server is killed after 1 s.
        while (clock.Elapsed < TimeSpan.FromSeconds(3))
        {
            if (killedAt is null && clock.Elapsed > TimeSpan.FromSeconds(1))
            {
                await local.DisposeAsync();
                killedAt = clock.Elapsed;
            }
            total++;
            try
            {
                var response = await client.GetAsync(url);
                var body = await response.Content.ReadAsStringAsync();
                if (!response.IsSuccessStatusCode)
                {
                    failed++;
                }
                else if (body == "remote" && firstRemote is null)
                {
                    firstRemote = clock.Elapsed;
                }
            }
            catch (HttpRequestException)
            {
                failed++;
            }
        }
        var failover = firstRemote!.Value - killedAt!.Value;
        output.WriteLine($"requests {total}, failed {failed}, failover {failover.TotalMilliseconds:0} ms after the kill");
        Assert.Equal(0, failed);
        Assert.True(failover < TimeSpan.FromSeconds(3), $"failover took {failover}");

        // The local server comes back on the same port: traffic moves back (after the 10 s passive ejection at most).
        await using var revived = await TestUpstream.StartAsync(c => c.Response.WriteAsync("local"), port: localPort);
        var deadline = Stopwatch.StartNew();
        string? answer = null;
        while (deadline.Elapsed < TimeSpan.FromSeconds(15) && answer != "local")
        {
            answer = await client.GetStringAsync(url);
            if (answer != "local")
            {
                await Task.Delay(200);
            }
        }
        output.WriteLine($"moved back to the local zone after {deadline.Elapsed.TotalSeconds:0.0} s");
        Assert.Equal("local", answer);
    }

    [Fact]
    public async Task LocalServerHangsUnderLoad_TakenOutAfterItsFirstTimeout_FailuresBounded()
    {
        // A server that accepts connections and never answers: only timeouts reveal it. With read_timeout_ms 500 and
        // unhealthy_threshold 1, its first timed-out request ejects it (passive check) and the active check (every
        // second, its /health hangs too) keeps it out; the other zone takes over.
        var hangs = false;
        var localPort = Ports.GetFree();
        await using var local = await TestUpstream.StartAsync(async c =>
        {
            if (Volatile.Read(ref hangs))
            {
                await Task.Delay(TimeSpan.FromSeconds(30), c.RequestAborted);
            }
            await c.Response.WriteAsync("local");
        }, port: localPort);
        await using var remote = await TestUpstream.StartAsync(c => c.Response.WriteAsync("remote"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
              zone: a
            admin:
              enabled: false
            logging:
              level: warn
            upstreams:
              - name: backend
                read_timeout_ms: 500
                health_check:
                  interval_seconds: 1
                  timeout_seconds: 1
                  unhealthy_threshold: 1
                  healthy_threshold: 1
                  path: /health
                servers:
                  - host: 127.0.0.1
                    port: {localPort}
                    zone: a
                  - host: 127.0.0.1
                    port: {remote.Port}
                    zone: b
            """, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var url = $"http://127.0.0.1:{port}/x";
        Assert.Equal("local", await client.GetStringAsync(url));

        Volatile.Write(ref hangs, true);
        var clock = Stopwatch.StartNew();
        var failed = 0;
        TimeSpan? firstRemote = null;
        while (clock.Elapsed < TimeSpan.FromSeconds(5) && firstRemote is null)
        {
            var response = await client.GetAsync(url);
            if (!response.IsSuccessStatusCode)
            {
                failed++;
            }
            else if (await response.Content.ReadAsStringAsync() == "remote")
            {
                firstRemote = clock.Elapsed;
            }
        }
        output.WriteLine($"hung server: {failed} requests failed (504), traffic on the other zone after {firstRemote?.TotalMilliseconds:0} ms");
        Assert.NotNull(firstRemote);
        Assert.True(firstRemote < TimeSpan.FromSeconds(3), $"failover took {firstRemote}");
        Assert.True(failed <= 5, $"{failed} requests failed");
    }
}
