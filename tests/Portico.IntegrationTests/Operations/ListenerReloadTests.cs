using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>
/// Reloads that change listeners: a listener added, removed or moved takes effect; a listener whose settings change
/// is restarted on the same socket, and connections open at the time (a long download, a WebSocket) are not dropped.
/// </summary>
public sealed class ListenerReloadTests
{
    private static string Config(int port, int adminPort, int upstreamPort, int? extraPort = null, int idleTimeout = 75, int wsPort = 0) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
          idle_timeout_seconds: {idleTimeout}
          listeners: [{(extraPort is { } p ? $"{{address: \"127.0.0.1:{p}\"}}" : "")}]
        admin:
          listen_port: {adminPort}
        upstreams:
          backend:
            health_check: {"{"}enabled: false{"}"}
            servers: ["127.0.0.1:{upstreamPort}"]
          ws:
            health_check: {"{"}enabled: false{"}"}
            servers: ["127.0.0.1:{(wsPort == 0 ? upstreamPort : wsPort)}"]
        routes:
          - path: /ws
            upstream: ws
          - path: /*
            upstream: backend
        """;

    [Fact]
    public async Task Reload_AddsRemovesAndMovesListeners_BadListenerRejectedWhole()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var port = Ports.GetFree();
        var admin1 = Ports.GetFree();
        var admin2 = Ports.GetFree();
        var extra = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, admin1, upstream.Port), port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        Assert.False(await AcceptsAsync(extra));

        // Add a listener and move the admin port.
        await gateway.WriteConfigAsync(Config(port, admin2, upstream.Port, extra));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("generation 2", TimeSpan.FromSeconds(15));
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{extra}/"));
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
        Assert.Equal("{\"status\":\"ok\"}\n", await client.GetStringAsync($"http://127.0.0.1:{admin2}/health"));
        Assert.True(await RefusedWithinAsync(admin1, TimeSpan.FromSeconds(5)), "the old admin port still accepts:\n" + gateway.Output);

        // A listener that cannot bind (the port is taken) rejects the whole reload; everything keeps serving.
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var taken = ((IPEndPoint)squatter.LocalEndpoint).Port;
        await gateway.WriteConfigAsync(Config(port, admin2, upstream.Port, taken));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("rejected", TimeSpan.FromSeconds(15));
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{extra}/"));
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));

        // Remove it again.
        await gateway.WriteConfigAsync(Config(port, admin2, upstream.Port));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("generation 3", TimeSpan.FromSeconds(15));
        Assert.True(await RefusedWithinAsync(extra, TimeSpan.FromSeconds(5)), "the removed listener still accepts:\n" + gateway.Output);
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
        Assert.False(gateway.HasExited);
    }

    [Fact]
    public async Task Reload_RestartingTheListener_KeepsALongDownloadAndAnOpenWebSocket()
    {
        const int Chunks = 12;
        const int ChunkSize = 64 * 1024;
        var chunk = Encoding.ASCII.GetBytes(new string('d', ChunkSize));
        await using var upstream = await TestUpstream.StartAsync(async c =>
        {
            if (c.Request.Path == "/download")
            {
                c.Response.ContentLength = (long)Chunks * ChunkSize;
                for (var i = 0; i < Chunks; i++)
                {
                    await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
                    await c.Response.Body.FlushAsync(c.RequestAborted);
                    await Task.Delay(250, c.RequestAborted);
                }
                return;
            }
            await c.Response.WriteAsync("ok");
        });
        await using var ws = await BackgroundProcess.StartServerAsync(ExternalTool.Python, ["-c", EchoServer]);
        var port = Ports.GetFree();
        var adminPort = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, upstream.Port, wsPort: ws.Port), port);

        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var response = await client.GetAsync($"http://127.0.0.1:{port}/download", HttpCompletionOption.ResponseHeadersRead);
        var download = Task.Run(async () =>
        {
            await using var body = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[ChunkSize];
            long total = 0;
            var allD = true;
            int read;
            while ((read = await body.ReadAsync(buffer)) > 0)
            {
                total += read;
                allD &= buffer.AsSpan(0, read).IndexOfAnyExcept((byte)'d') < 0;
            }
            return (total, allD);
        });
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{port}/ws"), CancellationToken.None);
        Assert.Equal("before", await EchoAsync(socket, "before"));

        // A different idle timeout restarts the listener (a new server on the same socket); the old server is retired.
        await gateway.WriteConfigAsync(Config(port, adminPort, upstream.Port, idleTimeout: 76, wsPort: ws.Port));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("generation 2", TimeSpan.FromSeconds(15));
        Assert.Contains("retired", gateway.Output, StringComparison.Ordinal);

        Assert.Equal("after the reload", await EchoAsync(socket, "after the reload"));
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
        var (total, allD) = await download.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal((long)Chunks * ChunkSize, total);
        Assert.True(allD, "the download's bytes changed");
        Assert.Equal("still open", await EchoAsync(socket, "still open"));
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
    }

    private static async Task<string> EchoAsync(ClientWebSocket socket, string text)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await socket.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, true, cts.Token);
        var buffer = new byte[1024];
        var result = await socket.ReceiveAsync(buffer, cts.Token);
        return Encoding.UTF8.GetString(buffer, 0, result.Count);
    }

    private static async Task<bool> AcceptsAsync(int port)
    {
        using var probe = new TcpClient();
        try
        {
            await probe.ConnectAsync(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static async Task<bool> RefusedWithinAsync(int port, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (!await AcceptsAsync(port))
            {
                return true;
            }
            await Task.Delay(50);
        }
        return false;
    }

    // python3-websockets 10.4: an echo server that announces its port.
    internal const string EchoServer = """
        import asyncio, websockets
        async def echo(ws, path=None):
            try:
                async for message in ws:
                    await ws.send(message)
            except websockets.ConnectionClosed:
                pass
        async def main():
            async with websockets.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
                print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
                await asyncio.Future()
        asyncio.run(main())
        """;
}
