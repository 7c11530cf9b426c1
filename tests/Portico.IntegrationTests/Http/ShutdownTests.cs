using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
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
            catch (OperationCanceledException)
            {
            }
            await Task.Delay(25);
        }
        return null;
    }
}
