using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Portico.IntegrationTests.Operations;

/// <summary>
/// Zero-downtime upgrade by socket hand-off on the real binary: a new process started with --upgrade (or by SIGUSR2)
/// takes over the listening sockets while the old one drains; sd_notify messages for systemd.
/// </summary>
public sealed partial class UpgradeTests(ITestOutputHelper output)
{
    private static string Config(int port, int adminPort, int upstreamPort) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
          graceful_timeout_seconds: 10
        admin:
          listen_port: {adminPort}
        upstreams:
          backend:
            health_check: {"{"}enabled: false{"}"}
            servers: ["127.0.0.1:{upstreamPort}"]
        """;

    private static readonly Dictionary<string, string> QuietAccessLog = new() { ["PORTICO_LOG"] = "info,Portico.AccessLog=warn" };

    [Fact]
    public async Task Upgrade_UnderLoad_NewProcessTakesOverAndOldDrains_NoRequestFails()
    {
        await using var upstream = await TestUpstream.StartAsync(async c =>
        {
            await Task.Delay(5);
            await c.Response.WriteAsync("ok");
        });
        var port = Ports.GetFree();
        var adminPort = Ports.GetFree();
        await using var old = await GatewayProcess.StartAsync(Config(port, adminPort, upstream.Port), port, QuietAccessLog);
        using var load = new LoadLoops(port);
        await Task.Delay(1000);

        await using var next = GatewayProcess.Start(["--config", old.ConfigPath, "--upgrade"], env: QuietAccessLog);
        await next.WaitForOutputAsync("Portico listening", TimeSpan.FromSeconds(30));
        await old.WaitForOutputAsync("took over the listeners", TimeSpan.FromSeconds(10));
        // As an operator (or systemd) would: SIGTERM the old process; it is draining already, and may be done and gone
        // (a late signal must not change its exit code from 0).
        old.TrySignal(GatewayProcess.SIGTERM);
        var oldExited = await old.WaitForExitAsync(TimeSpan.FromSeconds(12));
        var okBeforeEnd = load.Ok;
        await Task.Delay(1500);
        await load.StopAsync();

        output.WriteLine($"upgrade under load: {load.Ok} requests ok, {load.Failures.Count} failed; {load.Ok - okBeforeEnd} after the old process exited");
        Assert.True(load.Failures.IsEmpty, $"{load.Failures.Count} failed requests, e.g. {load.Failures.FirstOrDefault()}\nold:\n{old.Output}\nnew:\n{next.Output}");
        Assert.True(oldExited && old.ExitCode == 0, $"old process: exited={oldExited} code={(oldExited ? old.ExitCode : 0)}\n{old.Output}");
        Assert.True(load.Ok > okBeforeEnd, "no request was served after the old process exited");
        Assert.True(load.Ok > 200, $"only {load.Ok} requests ran");
        Assert.Contains($"from process {old.Pid}", next.Output, StringComparison.Ordinal);
        using var admin = new HttpClient();
        Assert.Equal("{\"status\":\"ok\"}\n", await admin.GetStringAsync($"http://127.0.0.1:{adminPort}/health"));
        Assert.False(next.HasExited);
    }

    [Fact]
    public async Task Sigusr2_StartsTheBinaryOnDisk_WhichTakesOver()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var port = Ports.GetFree();
        var adminPort = Ports.GetFree();
        await using var old = await GatewayProcess.StartAsync(Config(port, adminPort, upstream.Port), port, QuietAccessLog);
        using var load = new LoadLoops(port);
        await Task.Delay(500);

        old.Signal(SIGUSR2);
        await old.WaitForOutputAsync("SIGUSR2: started process", TimeSpan.FromSeconds(10));
        var childPid = int.Parse(StartedPid().Match(old.Output).Groups[1].Value);
        try
        {
            var exited = await old.WaitForExitAsync(TimeSpan.FromSeconds(30));
            await Task.Delay(1000);
            await load.StopAsync();

            Assert.True(exited && old.ExitCode == 0, $"the old process did not hand over and exit:\n{old.Output}");
            Assert.True(load.Failures.IsEmpty, $"{load.Failures.Count} failed requests, e.g. {load.Failures.FirstOrDefault()}\n{old.Output}");
            using var client = new HttpClient();
            Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
            Assert.Contains($"from process {old.Pid}", old.Output, StringComparison.Ordinal);
        }
        finally
        {
            using var child = System.Diagnostics.Process.GetProcessById(childPid);
            child.Kill();
            await child.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task SecondProcessWithoutUpgrade_RefusesToStart_AndNamesTheRunningOne()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var port = Ports.GetFree();
        await using var first = await GatewayProcess.StartAsync(Config(port, Ports.GetFree(), upstream.Port), port);

        await using var second = GatewayProcess.Start(["--config", first.ConfigPath]);
        Assert.True(await second.WaitForExitAsync(TimeSpan.FromSeconds(30)), second.Output);

        Assert.Equal(1, second.ExitCode);
        Assert.Contains($"another portico (pid {first.Pid})", second.Output, StringComparison.Ordinal);
        Assert.Contains("--upgrade", second.Output, StringComparison.Ordinal);
        using var client = new HttpClient();
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
    }

    [Fact]
    public async Task SystemdNotify_ReadyReloadingStopping_WithMainPid()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var socketPath = Path.Combine(Path.GetTempPath(), $"portico-notify-{Guid.NewGuid():N}.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(socketPath));
        try
        {
            var port = Ports.GetFree();
            await using var gateway = await GatewayProcess.StartAsync(Config(port, Ports.GetFree(), upstream.Port), port,
                new Dictionary<string, string> { ["NOTIFY_SOCKET"] = socketPath });

            var ready = await ReceiveAsync(notify);
            Assert.Contains("READY=1", ready, StringComparison.Ordinal);
            Assert.Contains($"MAINPID={gateway.Pid}", ready, StringComparison.Ordinal);

            gateway.Signal(GatewayProcess.SIGHUP);
            Assert.Equal("RELOADING=1", await ReceiveAsync(notify));
            Assert.Equal("READY=1", await ReceiveAsync(notify));

            gateway.Signal(GatewayProcess.SIGTERM);
            Assert.Equal("STOPPING=1", await ReceiveAsync(notify));
            Assert.True(await gateway.WaitForExitAsync(TimeSpan.FromSeconds(15)));
        }
        finally
        {
            File.Delete(socketPath);
        }
    }

    private static async Task<string> ReceiveAsync(Socket socket)
    {
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
        return Encoding.UTF8.GetString(buffer, 0, read);
    }

    private const int SIGUSR2 = 12;

    [GeneratedRegex(@"SIGUSR2: started process (\d+)")]
    private static partial Regex StartedPid();
}

/// <summary>
/// Client loops against the gateway until stopped: two on keep-alive connections (as browsers and service clients)
/// and two opening a new connection per request (Connection: close), which exercises the accept queue.
/// </summary>
internal sealed class LoadLoops : IDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task[] _loops;
    private readonly HttpClient _keepAlive = new() { Timeout = TimeSpan.FromSeconds(15) };
    private int _ok;

    public LoadLoops(int port, int keepAliveLoops = 2, int newConnectionLoops = 2)
    {
        var url = $"http://127.0.0.1:{port}/";
        var loops = new List<Task>();
        for (var i = 0; i < keepAliveLoops; i++)
        {
            loops.Add(Task.Run(() => RunAsync(_keepAlive, url, close: false)));
        }
        for (var i = 0; i < newConnectionLoops; i++)
        {
            loops.Add(Task.Run(async () =>
            {
                using var client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.Zero }) { Timeout = TimeSpan.FromSeconds(15) };
                await RunAsync(client, url, close: true);
            }));
        }
        _loops = [.. loops];
    }

    public int Ok => Volatile.Read(ref _ok);

    public ConcurrentQueue<string> Failures { get; } = new();

    private async Task RunAsync(HttpClient client, string url, bool close)
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, url);
                if (close)
                {
                    request.Headers.ConnectionClose = true;
                }
                using var response = await client.SendAsync(request);
                var body = await response.Content.ReadAsStringAsync();
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    Interlocked.Increment(ref _ok);
                }
                else
                {
                    Failures.Enqueue($"{(int)response.StatusCode} {body}");
                }
            }
            catch (Exception ex)
            {
                Failures.Enqueue(ex.GetType().Name + ": " + ex.Message + (ex.InnerException is { } inner ? " / " + inner.Message : ""));
            }
        }
    }

    public async Task StopAsync()
    {
        _stop.Cancel();
        await Task.WhenAll(_loops);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _keepAlive.Dispose();
        _stop.Dispose();
    }
}
