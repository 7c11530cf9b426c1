using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Portico.Hosting;
using Portico.IntegrationTests.Infrastructure;
using Portico.Proxy;

namespace Portico.IntegrationTests.Protocols;

/// <summary>
/// Graceful shutdown of WebSockets (<see cref="UpgradedTunnels.CloseAllAsync"/>): while messages stream both ways
/// through a real Kestrel host of the library, between a real WebSocket server and real clients (Python
/// <c>websockets</c> over HTTP/1.1 Upgrade, .NET's <see cref="ClientWebSocket"/> over h2c extended CONNECT), the
/// gateway closes both sides with 1001 "going away". Both ends must see that code, complete their closing handshake,
/// and have received every message before it intact: a close frame inside a relayed frame would corrupt one.
/// </summary>
public sealed class WebSocketShutdownTests : IClassFixture<WebSocketShutdownTests.Fixture>
{
    private static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);
    private readonly Fixture _fixture;

    public WebSocketShutdownTests(Fixture fixture)
    {
        _fixture = fixture;
    }

    [Fact(Timeout = 90_000)]
    public async Task CloseAll_PythonClientAndServerStreamingBothWays_BothSee1001AndEveryMessageIsIntact()
    {
        await using var gateway = await Gateway.StartAsync(_fixture.Upstream.Port);
        var id = Guid.NewGuid().ToString("N");
        await using var client = BackgroundProcess.Start(ExternalTool.Python, [_fixture.ClientScript, $"ws://127.0.0.1:{gateway.Port}", id]);
        await client.WaitForLineAsync("FLOWING", TimeSpan.FromSeconds(30));
        Assert.Equal(1, gateway.Service.Tunnels.Count);

        var clock = Stopwatch.StartNew();
        await gateway.Service.Tunnels.CloseAllAsync(HandshakeTimeout).WaitAsync(TimeSpan.FromSeconds(30));
        var closeTook = clock.Elapsed;

        Assert.Equal(0, gateway.Service.Tunnels.Count);
        var result = await ReadJsonAfterAsync(client, "RESULT ");
        var server = await ReadJsonAfterAsync(_fixture.Upstream, $"server-close id={id} ");
        var context = $"client: {result}\nserver: {server}";
        Assert.True(result.GetProperty("received").GetInt32() >= 30, context);
        Assert.True(result.GetProperty("intact").GetBoolean(), "a message reached the client corrupted or out of order: " + context);
        Assert.True(server.GetProperty("intact").GetBoolean(), "a message reached the server corrupted or out of order: " + context);
        Assert.True(server.GetProperty("received").GetInt32() > 0, context);
        Assert.Equal(1001, result.GetProperty("close_code").GetInt32());
        Assert.Equal("going away", result.GetProperty("close_reason").GetString());
        // The client received the close first, then answered it: its handshake completed.
        Assert.True(result.GetProperty("rcvd_then_sent").GetBoolean(), context);
        Assert.Equal(1001, server.GetProperty("rcvd").GetInt32());
        Assert.Equal("going away", server.GetProperty("reason").GetString());
        Assert.True(server.GetProperty("sent").GetBoolean(), "the server did not answer the close: " + context);
        // Timing is the point here: both answers arrived, so the tunnel ended well before the timeout; had either
        // handshake failed, CloseAllAsync would have cut the connection at 10 s.
        Assert.True(closeTook < HandshakeTimeout / 2, $"the close took {closeTook}: " + context);
    }

    [Fact(Timeout = 90_000)]
    public async Task CloseAll_DotnetClientOverHttp2ExtendedConnect_Sees1001AndEveryMessageIsIntact()
    {
        await using var gateway = await Gateway.StartAsync(_fixture.Upstream.Port);
        var id = Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        using var ws = new ClientWebSocket();
        ws.Options.HttpVersion = HttpVersion.Version20;
        ws.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        ws.Options.KeepAliveInterval = TimeSpan.Zero;
        await ws.ConnectAsync(new Uri($"ws://127.0.0.1:{gateway.Port}/stream?id={id}"), invoker, cts.Token);
        // The client streams too, so both directions carry frames when the close comes.
        var sending = SendUntilClosedAsync(ws, cts.Token);

        var received = 0;
        Task? closing = null;
        WebSocketMessageType type;
        byte[] message;
        while (true)
        {
            (type, message) = await ReceiveMessageAsync(ws, cts.Token);
            if (type == WebSocketMessageType.Close)
            {
                break;
            }
            Assert.True(message.AsSpan().SequenceEqual(Payload("down", received)), $"message {received} arrived corrupted or out of order ({message.Length} bytes)");
            received++;
            if (received == 30)
            {
                closing = gateway.Service.Tunnels.CloseAllAsync(HandshakeTimeout);
            }
        }

        Assert.NotNull(closing);
        Assert.Equal(WebSocketCloseStatus.EndpointUnavailable, ws.CloseStatus);
        Assert.Equal("going away", ws.CloseStatusDescription);
        await sending;
        if (ws.State == WebSocketState.CloseReceived)
        {
            await ws.CloseOutputAsync(WebSocketCloseStatus.EndpointUnavailable, null, cts.Token);
        }
        await closing.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, gateway.Service.Tunnels.Count);
        var server = await ReadJsonAfterAsync(_fixture.Upstream, $"server-close id={id} ");
        Assert.Equal(1001, server.GetProperty("rcvd").GetInt32());
        Assert.Equal("going away", server.GetProperty("reason").GetString());
        Assert.True(server.GetProperty("intact").GetBoolean(), $"a message reached the server corrupted or out of order: {server}");
    }

    private static async Task SendUntilClosedAsync(ClientWebSocket ws, CancellationToken cancellationToken)
    {
        try
        {
            for (var i = 0; ws.State == WebSocketState.Open; i++)
            {
                await ws.SendAsync(Payload("up", i), WebSocketMessageType.Binary, endOfMessage: true, cancellationToken);
            }
        }
        catch (Exception ex) when (ex is WebSocketException or ObjectDisposedException or InvalidOperationException)
        {
            // The close came while sending.
        }
    }

    /// <summary>Message <paramref name="index"/> of a stream, as the Python scripts make it (see <c>payload</c>).</summary>
    private static byte[] Payload(string tag, int index)
    {
        int[] sizes = [100, 20000, 70000, 1, 5000];
        var size = sizes[index % sizes.Length];
        var seed = SHA256.HashData(Encoding.ASCII.GetBytes($"{tag}{index}"));
        var message = new byte[4 + size];
        BinaryPrimitives.WriteInt32BigEndian(message, index);
        for (var i = 0; i < size; i++)
        {
            message[4 + i] = seed[i % seed.Length];
        }
        return message;
    }

    private static async Task<(WebSocketMessageType Type, byte[] Payload)> ReceiveMessageAsync(WebSocket ws, CancellationToken cancellationToken)
    {
        using var message = new MemoryStream();
        var buffer = new byte[64 * 1024];
        while (true)
        {
            var result = await ws.ReceiveAsync(buffer, cancellationToken);
            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage || result.MessageType == WebSocketMessageType.Close)
            {
                return (result.MessageType, message.ToArray());
            }
        }
    }

    private static async Task<JsonElement> ReadJsonAfterAsync(BackgroundProcess process, string prefix)
    {
        var line = await process.WaitForLineAsync(prefix, TimeSpan.FromSeconds(30));
        return JsonDocument.Parse(line[prefix.Length..]).RootElement;
    }

    /// <summary>A one-upstream proxy on the library's host, keeping its <see cref="ProxyService{TContext}"/>.</summary>
    private sealed class Gateway : IAsyncDisposable
    {
        private readonly WebApplication _host;
        private readonly UpstreamPeer _peer;

        private Gateway(WebApplication host, ProxyService<object?> service, UpstreamPeer peer, int port)
        {
            _host = host;
            _peer = peer;
            Service = service;
            Port = port;
        }

        public ProxyService<object?> Service { get; }

        public int Port { get; }

        public static async Task<Gateway> StartAsync(int upstreamPort)
        {
            var peer = UpstreamPeer.Create("127.0.0.1", upstreamPort);
            var port = Ports.GetFree();
            var host = ProxyHost.Build(new OneUpstreamApp(peer), [new IPEndPoint(IPAddress.Loopback, port)], out var service);
            await host.StartAsync();
            return new Gateway(host, service, peer, port);
        }

        public async ValueTask DisposeAsync()
        {
            await _host.StopAsync();
            await _host.DisposeAsync();
            _peer.Client.Dispose();
        }
    }

    private sealed class OneUpstreamApp(UpstreamPeer peer) : ProxyApp<object?>
    {
        public override object? NewContext(ProxySession session) => null;

        public override ValueTask<UpstreamPeer?> SelectUpstreamAsync(ProxySession session, object? ctx) => ValueTask.FromResult<UpstreamPeer?>(peer);
    }

    /// <summary>One Python WebSocket server for the class; each test has its own gateway and connection id.</summary>
    public sealed class Fixture : IAsyncLifetime
    {
        private string? _directory;

        public BackgroundProcess Upstream { get; private set; } = null!;

        public string ClientScript { get; private set; } = null!;

        public async Task InitializeAsync()
        {
            _directory = ProtocolTestKit.CreateTempDirectory("ws-shutdown");
            var serverScript = Path.Combine(_directory, "ws_stream_server.py");
            ClientScript = Path.Combine(_directory, "ws_stream_client.py");
            await File.WriteAllTextAsync(serverScript, Common + ServerScript);
            await File.WriteAllTextAsync(ClientScript, Common + ClientScriptText);
            Upstream = await BackgroundProcess.StartServerAsync(ExternalTool.Python, [serverScript]);
        }

        public async Task DisposeAsync()
        {
            if (Upstream is not null)
            {
                await Upstream.DisposeAsync();
            }
            ProtocolTestKit.DeleteDirectory(_directory);
        }
    }

    // python3-websockets 10.4 (Debian bookworm), legacy asyncio API. Messages are numbered and derived from their
    // number, in sizes below, across and well over the gateway's 16 KiB relay buffer, so a receiver can check each
    // one in full and in order.
    private const string Common = """
        import asyncio, hashlib, json, sys
        import websockets

        SIZES = (100, 20000, 70000, 1, 5000)

        def payload(tag, i):
            size = SIZES[i % len(SIZES)]
            seed = hashlib.sha256(f"{tag}{i}".encode()).digest()
            return i.to_bytes(4, "big") + (seed * (size // len(seed) + 1))[:size]

        async def send_forever(ws, tag, counter):
            # send() returns without yielding while the socket takes the bytes; without the sleep(0) this loop would
            # starve the receiving side of the same event loop, which would then never see the close frame.
            try:
                while True:
                    await ws.send(payload(tag, counter["sent"]))
                    counter["sent"] += 1
                    await asyncio.sleep(0)
            except websockets.ConnectionClosed:
                pass


        """;

    private const string ServerScript = """
        # Streams "down" messages to each client while checking the "up" messages it receives; when the connection
        # closes, prints what the close handshake looked like from here.
        async def handler(ws, path=None):
            conn = ws.path.partition("id=")[2] or "-"
            counter = {"sent": 0}
            sender = asyncio.ensure_future(send_forever(ws, "down", counter))
            received, intact = 0, True
            try:
                while True:
                    msg = await ws.recv()
                    intact = intact and msg == payload("up", received)
                    received += 1
            except websockets.ConnectionClosed:
                pass
            await sender
            await ws.wait_closed()
            rcvd = ws.close_rcvd
            print(f"server-close id={conn} " + json.dumps({
                "rcvd": rcvd.code if rcvd else None, "reason": rcvd.reason if rcvd else None,
                "sent": ws.close_sent is not None, "received": received, "intact": intact,
                "sent_messages": counter["sent"]}), flush=True)

        async def main():
            async with websockets.serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None) as server:
                print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
                await asyncio.Future()

        asyncio.run(main())
        """;

    private const string ClientScriptText = """
        # argv[1] the gateway's ws:// base, argv[2] a connection id. Streams "up" messages while checking the "down"
        # ones; prints FLOWING once 30 arrived, and RESULT {json} when the connection has closed.
        async def main(base, conn):
            out = {}
            async with websockets.connect(base + "/stream?id=" + conn, max_size=None, ping_interval=None,
                                          open_timeout=10, close_timeout=10) as ws:
                counter = {"sent": 0}
                sender = asyncio.ensure_future(send_forever(ws, "up", counter))
                received, intact = 0, True
                try:
                    while True:
                        msg = await ws.recv()
                        intact = intact and msg == payload("down", received)
                        received += 1
                        if received == 30:
                            print("FLOWING", flush=True)
                except websockets.ConnectionClosed as e:
                    out["close_code"] = e.rcvd.code if e.rcvd else None
                    out["close_reason"] = e.rcvd.reason if e.rcvd else None
                    out["rcvd_then_sent"] = e.rcvd_then_sent
                await sender
                out.update(received=received, intact=intact, sent=counter["sent"])
            print("RESULT " + json.dumps(out), flush=True)

        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 60))
        """;
}
