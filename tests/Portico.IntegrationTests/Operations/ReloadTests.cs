using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>SIGHUP reload on the real gateway: a good file is swapped in, a bad one is rejected and the old one keeps serving.</summary>
public sealed class ReloadTests
{
    private static string Config(int port, int upstreamPort, bool watch = false) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
          watch_config: {(watch ? "true" : "false")}
        admin:
          enabled: false
        upstreams:
          backend:
            servers: ["127.0.0.1:{upstreamPort}"]
        """;

    [Fact]
    public async Task Sighup_ValidFile_SwapsUpstream_BadFile_KeepsServing()
    {
        await using var a = await TestUpstream.StartAsync(c => c.Response.WriteAsync("A"));
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("B"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, a.Port), port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/";
        Assert.Equal("A", await client.GetStringAsync(url));

        await gateway.WriteConfigAsync(Config(port, b.Port));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("generation 2", TimeSpan.FromSeconds(10));
        Assert.Equal("B", await client.GetStringAsync(url));

        await gateway.WriteConfigAsync(Config(port, b.Port) + "\nnonsense_key: 1\n");
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("rejected", TimeSpan.FromSeconds(10));
        Assert.True(gateway.Output.Contains("nonsense_key", StringComparison.Ordinal), gateway.Output);
        Assert.Equal("B", await client.GetStringAsync(url));
        Assert.False(gateway.HasExited);
    }

    [Fact]
    public async Task WatchConfig_FileChange_ReloadsWithoutSignal()
    {
        await using var a = await TestUpstream.StartAsync(c => c.Response.WriteAsync("A"));
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("B"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, a.Port, watch: true), port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        Assert.Equal("A", await client.GetStringAsync($"http://127.0.0.1:{port}/"));

        await gateway.WriteConfigAsync(Config(port, b.Port, watch: true));
        await gateway.WaitForOutputAsync("generation 2", TimeSpan.FromSeconds(10));
        Assert.Equal("B", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
    }

    [Fact]
    public async Task TwentyReloadsUnderLoad_NoRequestFails()
    {
        await using var a = await TestUpstream.StartAsync(c => c.Response.WriteAsync("A"));
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("B"));
        var port = Ports.GetFree();
        // Access log off: thousands of lines would only slow the log polling; reload lines stay visible.
        await using var gateway = await GatewayProcess.StartAsync(Config(port, a.Port), port,
            new Dictionary<string, string> { ["PORTICO_LOG"] = "info,Portico.AccessLog=warn" });
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/";
        using var stop = new CancellationTokenSource();
        var ok = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        // Four client loops keep requests in flight while the config flips between two upstreams 20 times.
        var loops = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var body = await client.GetStringAsync(url);
                    if (body is "A" or "B")
                    {
                        Interlocked.Increment(ref ok);
                    }
                    else
                    {
                        failures.Enqueue("unexpected body " + body);
                    }
                }
                catch (Exception ex)
                {
                    failures.Enqueue(ex.Message);
                }
            }
        })).ToArray();

        for (var i = 2; i <= 21; i++)
        {
            await gateway.WriteConfigAsync(Config(port, i % 2 == 0 ? b.Port : a.Port));
            gateway.Signal(GatewayProcess.SIGHUP);
            await gateway.WaitForOutputAsync($"generation {i})", TimeSpan.FromSeconds(10));
        }
        stop.Cancel();
        await Task.WhenAll(loops);

        Assert.True(failures.IsEmpty, $"{failures.Count} failed requests, e.g. {failures.FirstOrDefault()}");
        Assert.True(ok > 100, $"only {ok} requests ran during the reloads");
        Assert.True(a.Requests > 0 && b.Requests > 0);
    }
}
