using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// The own accept path of cleartext listeners (src/Portico/Server/FastListener.cs): reads and writes straight on the
/// socket, nothing reading it while a request runs, a request head larger than one read buffer, the switch back to
/// Kestrel's transport (the default; PORTICO_HTTP1_SERVER=transport keeps Kestrel's transport), each on the real gateway.
/// </summary>
public sealed class FastAcceptTests
{
    private static async Task<(GatewayProcess Gateway, int Port)> StartAsync(int upstreamPort, IDictionary<string, string>? env = null)
    {
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
            admin:
              enabled: false
            logging:
              level: info
            upstreams:
              main:
                health_check: {"{"}enabled: false{"}"}
                servers: ["127.0.0.1:{upstreamPort}"]
            routes:
              - path: "/*"
                upstream: main
            """;
        return (await GatewayProcess.StartAsync(yaml, port, env), port);
    }

    /// <summary>
    /// Nothing reads the client's socket while its request waits for the upstream; the heartbeat arms a watch after a
    /// second, and the client's FIN cancels the upstream request (as Kestrel's always-running receive loop did).
    /// </summary>
    [Fact]
    public async Task ClientLeavesDuringSlowUpstream_UpstreamRequestIsCancelled()
    {
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await TestUpstream.StartAsync(async c =>
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(20), c.RequestAborted);
                await c.Response.WriteAsync("late");
            }
            catch (OperationCanceledException)
            {
                aborted.TrySetResult();
            }
        });
        var (gateway, port) = await StartAsync(upstream.Port);
        await using var _ = gateway;

        using (var client = new TcpClient())
        {
            await client.ConnectAsync("127.0.0.1", port);
            await client.GetStream().WriteAsync(Encoding.ASCII.GetBytes("GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
            await Task.Delay(300);
        }

        // The watch is armed within two heartbeats of the request starting; well before the upstream's 20 s.
        var finished = await Task.WhenAny(aborted.Task, Task.Delay(TimeSpan.FromSeconds(8)));
        Assert.True(finished == aborted.Task, "the upstream request was not cancelled after the client left\n" + gateway.Output);
    }

    /// <summary>A head longer than the 4 KiB first read buffer: the buffer grows, and the request is served whole.</summary>
    [Fact]
    public async Task HeadLargerThanOneReadBuffer_ServedWhole()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("len=" + c.Request.Headers["X-Big"].ToString().Length));
        var (gateway, port) = await StartAsync(upstream.Port);
        await using var _ = gateway;
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        var big = new string('b', 9000);
        for (var i = 0; i < 3; i++)
        {
            // Three on one connection: the grown buffer is given back between requests and taken again.
            await connection.SendAsync($"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n");
            var response = await connection.ReadResponseAsync();
            Assert.True(response?.Status == 200, response?.ToString());
            Assert.Equal("len=9000", response!.BodyText);
        }
    }

    /// <summary>A head that arrives a few bytes at a time is put together before it is parsed.</summary>
    [Fact]
    public async Task HeadInSmallPieces_Served()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok " + c.Request.Path));
        var (gateway, port) = await StartAsync(upstream.Port);
        await using var _ = gateway;
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        var head = Encoding.ASCII.GetBytes("GET /pieces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n\r\n");
        for (var i = 0; i < head.Length; i += 7)
        {
            await connection.SendAsync(head[i..Math.Min(head.Length, i + 7)]);
            await Task.Delay(20);
        }
        var response = await connection.ReadResponseAsync();
        Assert.True(response?.Status == 200, response?.ToString());
        Assert.Equal("ok /pieces", response!.BodyText);
    }

    /// <summary>The start-up line says which accept path serves; "transport" puts the own server back on Kestrel's transport.</summary>
    [Theory]
    [InlineData("", "own accept path")]
    [InlineData("accept", "own accept path")]
    [InlineData("transport", "on Kestrel's transport")]
    public async Task AcceptPath_ReportedAndServes(string mode, string expected)
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync(c.Request.ContentLength is { } n ? "body " + n : "ok"));
        var env = new Dictionary<string, string> { ["PORTICO_HTTP1_SERVER"] = mode };
        var (gateway, port) = await StartAsync(upstream.Port, env);
        await using var _ = gateway;
        for (var i = 0; i < 50 && !gateway.Output.Contains("HTTP/1.1 server", StringComparison.Ordinal); i++)
        {
            await Task.Delay(100);
        }
        Assert.Contains(expected, gateway.Output, StringComparison.Ordinal);
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        Assert.Equal("ok", (await connection.ReadResponseAsync())?.BodyText);
        // A body: handed to Kestrel mid-connection, then bodiless again.
        await connection.SendAsync("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello");
        Assert.Equal("body 5", (await connection.ReadResponseAsync())?.BodyText);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        Assert.Equal("ok", (await connection.ReadResponseAsync())?.BodyText);
    }
}
