using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>server.max_connections is one cap across all data-plane listeners, and a reload changes it.</summary>
public sealed class ConnectionLimitTests
{
    private static string Config(int port, int extra, int upstreamPort, int max) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
          max_connections: {max}
          listeners: [{"{"}address: "127.0.0.1:{extra}"{"}"}]
        admin:
          enabled: false
        upstreams:
          backend:
            health_check: {"{"}enabled: false{"}"}
            servers: ["127.0.0.1:{upstreamPort}"]
        """;

    [Fact]
    public async Task MaxConnections_CountsEveryListener_ExtraConnectionClosed_ReloadRaisesIt()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var port = Ports.GetFree();
        var extra = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, extra, upstream.Port, 2), port);
        // The start-up probe's connection counts until the gateway has seen it close, which on a busy machine can take
        // a moment: retry until two connections are served.
        var (first, second) = await OpenTwoServedAsync(port, extra);
        await using var disposeFirst = first;
        await using var disposeSecond = second;
        Assert.True(await IsRefusedAsync(port), "a third connection was served with max_connections: 2");

        await gateway.WriteConfigAsync(Config(port, extra, upstream.Port, 3));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("generation 2", TimeSpan.FromSeconds(15));
        await using var fourth = await OpenServedAsync(extra);
    }

    /// <summary>
    /// True when the gateway closes a new connection unserved. The close can come so soon after the accept that the
    /// client's connect call itself reports the reset: that is the same outcome.
    /// </summary>
    private static async Task<bool> IsRefusedAsync(int port)
    {
        try
        {
            await using var connection = await RawHttpConnection.ConnectAsync(port);
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            return await connection.IsClosedByServerAsync(TimeSpan.FromSeconds(5));
        }
        catch (System.Net.Sockets.SocketException)
        {
            return true;
        }
    }

    private static async Task<(RawHttpConnection, RawHttpConnection)> OpenTwoServedAsync(int port, int extra)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            var first = await OpenServedAsync(port);
            var second = await RawHttpConnection.ConnectAsync(extra);
            await second.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            if ((await second.ReadResponseAsync(timeout: TimeSpan.FromSeconds(5)))?.Status == 200)
            {
                return (first, second);
            }
            await first.DisposeAsync();
            await second.DisposeAsync();
            Assert.True(DateTime.UtcNow < deadline, "two connections were never served with max_connections: 2");
            await Task.Delay(100);
        }
    }

    private static async Task<RawHttpConnection> OpenServedAsync(int port)
    {
        var connection = await RawHttpConnection.ConnectAsync(port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        var response = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(5));
        Assert.Equal(200, response?.Status);
        return connection;
    }
}
