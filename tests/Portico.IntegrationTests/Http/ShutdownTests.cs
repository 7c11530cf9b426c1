using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>SIGTERM drains: in-flight requests finish, new connections are refused, the process exits 0.</summary>
public sealed class ShutdownTests
{
    [Fact]
    public async Task Sigterm_InFlightRequest_CompletesAndProcessExitsZero()
    {
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await RecordingUpstream.StartAsync("slow");
        upstream.Map("/slow", async context =>
        {
            arrived.TrySetResult();
            // The request must still be in flight when SIGTERM arrives: 2 s is the slow upstream of the scenario.
            await Task.Delay(TimeSpan.FromSeconds(2), context.RequestAborted);
            await context.Response.WriteAsync("slow done", context.RequestAborted);
        });
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
              graceful_timeout_seconds: 10
            admin:
              enabled: false
            upstreams:
              slow:
                servers: ["{upstream.Address}"]
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(15) };

        var inFlight = client.GetAsync($"http://127.0.0.1:{port}/slow");
        await arrived.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var clock = Stopwatch.StartNew();
        gateway.Signal(GatewayProcess.SIGTERM);
        var refusedAfter = await WaitUntilRefusedAsync(port, TimeSpan.FromSeconds(5));
        var inFlightDoneBeforeRefusal = inFlight.IsCompleted;
        HttpResponseMessage response;
        try
        {
            response = await inFlight;
        }
        catch (HttpRequestException e)
        {
            var exitedMeanwhile = await gateway.WaitForExitAsync(TimeSpan.FromSeconds(5));
            Assert.Fail($"the in-flight request failed ({e.Message}); new connections refused {refusedAfter} after SIGTERM; " +
                $"process {(exitedMeanwhile ? $"exited with {gateway.ExitCode}" : "still running")} after {clock.Elapsed}:\n{gateway.Output}");
            throw;
        }
        using var disposeResponse = response;
        var body = await response.Content.ReadAsStringAsync();
        var exited = await gateway.WaitForExitAsync(TimeSpan.FromSeconds(12));

        Assert.True(refusedAfter is not null, "new connections were still accepted 5 s after SIGTERM:\n" + gateway.Output);
        Assert.False(inFlightDoneBeforeRefusal, $"the listener closed only after the in-flight request finished ({refusedAfter})");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("slow done", body);
        Assert.True(exited, "portico did not exit within graceful_timeout_seconds:\n" + gateway.Output);
        Assert.True(gateway.ExitCode == 0, $"exit code {gateway.ExitCode}:\n{gateway.Output}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"exit took {clock.Elapsed}");
    }

    [Fact]
    public async Task Sigterm_OpenWebSocket_ClientGetsGoingAway_ProcessExitsZeroWell()
    {
        await using var ws = await BackgroundProcess.StartServerAsync(ExternalTool.Python, ["-c", Operations.ListenerReloadTests.EchoServer]);
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
              graceful_timeout_seconds: 20
            admin:
              enabled: false
            upstreams:
              ws:
                health_check: {"{"}enabled: false{"}"}
                servers: ["127.0.0.1:{ws.Port}"]
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{port}/ws"), CancellationToken.None);
        await socket.SendAsync("hello"u8.ToArray(), WebSocketMessageType.Text, true, CancellationToken.None);
        var buffer = new byte[256];
        var echoed = await socket.ReceiveAsync(buffer, CancellationToken.None);
        Assert.Equal("hello", Encoding.UTF8.GetString(buffer, 0, echoed.Count));

        var clock = Stopwatch.StartNew();
        gateway.Signal(GatewayProcess.SIGTERM);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var result = await socket.ReceiveAsync(buffer, cts.Token);

        Assert.Equal(WebSocketMessageType.Close, result.MessageType);
        Assert.Equal(WebSocketCloseStatus.EndpointUnavailable, socket.CloseStatus);
        Assert.Equal("going away", socket.CloseStatusDescription);
        await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
        Assert.True(await gateway.WaitForExitAsync(TimeSpan.FromSeconds(15)), gateway.Output);
        Assert.True(gateway.ExitCode == 0, $"exit code {gateway.ExitCode}:\n{gateway.Output}");
        // The close handshake ended the tunnel: no wait for the 20 s graceful timeout.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(8), $"exit took {clock.Elapsed}");
    }

    /// <summary>
    /// Issue 3: SIGTERM during a load run loses no request that had started. Eight keep-alive clients keep requests
    /// in flight (the upstream takes 50 ms); after SIGTERM each client runs until its next connection is refused,
    /// which is the only acceptable failure (the request never started). Every request sent on an open connection
    /// must complete with 200.
    /// </summary>
    [Fact]
    public async Task Sigterm_UnderLoad_NoStartedRequestIsLost_ExitZero()
    {
        await using var upstream = await TestUpstream.StartAsync(async c =>
        {
            await Task.Delay(50);
            await c.Response.WriteAsync("ok");
        });
        var port = Ports.GetFree();
        var yaml = OneUpstreamConfig(port, upstream.Address);
        await using var gateway = await GatewayProcess.StartAsync(yaml, port,
            new Dictionary<string, string> { ["PORTICO_LOG"] = "info,Portico.AccessLog=warn" });
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(15) };
        var ok = 0;
        var refused = 0;
        var lost = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var loops = Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            while (true)
            {
                try
                {
                    using var response = await client.GetAsync($"http://127.0.0.1:{port}/");
                    if (response.StatusCode == HttpStatusCode.OK)
                    {
                        Interlocked.Increment(ref ok);
                    }
                    else
                    {
                        lost.Enqueue($"status {(int)response.StatusCode}");
                    }
                }
                // Refused, or reset while connecting (the handshake met the listening socket closing): the request was
                // never sent. A reset after sending comes wrapped in an IOException and counts as lost.
                catch (HttpRequestException e) when (e.InnerException is SocketException { SocketErrorCode: SocketError.ConnectionRefused or SocketError.ConnectionReset })
                {
                    Interlocked.Increment(ref refused);
                    return;
                }
                catch (Exception e)
                {
                    lost.Enqueue(e.ToString());
                    return;
                }
            }
        })).ToArray();
        await Task.Delay(1500);
        var okAtSignal = Volatile.Read(ref ok);
        var clock = Stopwatch.StartNew();
        gateway.Signal(GatewayProcess.SIGTERM);
        var allStopped = await Task.WhenAll(loops).WaitAsync(TimeSpan.FromSeconds(20)).ContinueWith(t => t.IsCompletedSuccessfully);
        var exited = await gateway.WaitForExitAsync(TimeSpan.FromSeconds(15));

        Assert.True(allStopped, "client loops still running 20 s after SIGTERM");
        Assert.True(lost.IsEmpty, $"{lost.Count} started requests lost, e.g. {lost.FirstOrDefault()}\n{gateway.Output}");
        Assert.Equal(8, refused);
        Assert.True(ok > okAtSignal, "no request completed after SIGTERM (the in-flight ones must)");
        Assert.True(exited && gateway.ExitCode == 0, $"exited={exited}:\n{gateway.Output}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"exit took {clock.Elapsed}");
    }

    /// <summary>
    /// A keep-alive connection the client reuses right after SIGTERM is not cut under its request: the request is served
    /// with Connection: close (closing idle connections at once reset such a client, and its request failed instead of
    /// being retried). An idle connection that sends nothing closes within the grace, and the process exits 0 without
    /// waiting for the keep-alive timeout. Both HTTP/1.1 server placements.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("transport")]
    public async Task Sigterm_KeepAliveConnectionReusedRightAfter_ServedWithConnectionClose(string mode)
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var port = Ports.GetFree();
        var yaml = OneUpstreamConfig(port, upstream.Address);
        var env = new Dictionary<string, string> { ["PORTICO_LOG"] = "info,Portico.AccessLog=warn" };
        if (mode.Length > 0)
        {
            env["PORTICO_HTTP1_SERVER"] = mode;
        }
        await using var gateway = await GatewayProcess.StartAsync(yaml, port, env);
        const string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        await using var reused = await RawHttpConnection.ConnectAsync(port);
        await using var idle = await RawHttpConnection.ConnectAsync(port);
        foreach (var connection in new[] { reused, idle })
        {
            Assert.True(await connection.SendAsync(request));
            var first = await connection.ReadResponseAsync();
            Assert.Equal(200, first?.Status);
            Assert.Null(first!.Header("Connection"));
        }

        var clock = Stopwatch.StartNew();
        gateway.Signal(GatewayProcess.SIGTERM);
        await Task.Delay(300);
        Assert.True(await reused.SendAsync(request), "the connection was closed under the client 300 ms after SIGTERM");
        var second = await reused.ReadResponseAsync();
        Assert.True(second is not null, "the reused connection was closed instead of serving its request:\n" + gateway.Output);
        Assert.Equal(200, second.Status);
        Assert.Equal("ok", Encoding.ASCII.GetString(second.Body));
        Assert.Equal("close", second.Header("Connection"));
        Assert.True(await reused.IsClosedByServerAsync(TimeSpan.FromSeconds(5)), "not closed after Connection: close");
        Assert.True(await idle.IsClosedByServerAsync(TimeSpan.FromSeconds(5)), "the idle connection was not closed within 5 s of SIGTERM");
        Assert.True(await gateway.WaitForExitAsync(TimeSpan.FromSeconds(8)), gateway.Output);
        Assert.True(gateway.ExitCode == 0, $"exit code {gateway.ExitCode}:\n{gateway.Output}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(6), $"exit took {clock.Elapsed} (the keep-alive timeout is not a drain)");
    }

    /// <summary>One listener, no admin, one upstream without health checks, a 10 s drain.</summary>
    private static string OneUpstreamConfig(int port, string upstreamAddress) => $"""
        server:
          bind_address: "127.0.0.1:{port}"
          graceful_timeout_seconds: 10
        admin:
          enabled: false
        upstreams:
          backend:
            health_check: {"{"}enabled: false{"}"}
            servers: ["{upstreamAddress}"]
        """;

    /// <summary>
    /// Connects repeatedly until the port refuses; returns how long that took, or null at the deadline. Polling is
    /// needed because the listener closes asynchronously after the signal, and there is no event to wait on from
    /// outside the process.
    /// </summary>
    private static async Task<TimeSpan?> WaitUntilRefusedAsync(int port, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            using var probe = new TcpClient();
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await probe.ConnectAsync(IPAddress.Loopback, port, cts.Token);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                return clock.Elapsed;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // The probe's handshake met the listening socket closing (its queue is reset): it stopped accepting.
                return clock.Elapsed;
            }
            catch (OperationCanceledException)
            {
            }
            await Task.Delay(25);
        }
        return null;
    }
}
