using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Protocols;

/// <summary>
/// WebSockets through the real gateway to a real WebSocket server (Python <c>websockets</c>, the library many
/// production services use): HTTP/1.1 Upgrade (RFC 6455) from a Python client, and HTTP/2 extended CONNECT
/// (RFC 8441) from .NET's <see cref="ClientWebSocket"/> over h2c, which the gateway turns into an HTTP/1.1
/// handshake upstream (HttpForwarder step 2 and step 6).
/// </summary>
public sealed class WebSocketTests : IClassFixture<WebSocketTests.Fixture>
{
    private static readonly TimeSpan ClientTimeout = TimeSpan.FromSeconds(45);
    private readonly Fixture _fixture;

    public WebSocketTests(Fixture fixture)
    {
        _fixture = fixture;
    }

    [Fact(Timeout = 60_000)]
    public async Task WebSocketHttp11_TextAndBinaryMessages_EchoUnchanged()
    {
        var result = await _fixture.RunClientAsync("echo");

        Assert.Equal("hello through portico", result.GetProperty("text").GetString());
        Assert.Equal("bytes", result.GetProperty("binary_type").GetString());
        Assert.True(result.GetProperty("binary_equal").GetBoolean(), "the binary message came back different");
        Assert.Equal(1000, result.GetProperty("client_close_code").GetInt32());
    }

    [Fact(Timeout = 60_000)]
    public async Task WebSocketHttp11_Handshake_UpstreamSeesForwardedHeaders()
    {
        var result = await _fixture.RunClientAsync("echo");

        // The upstream's first message is the handshake headers it received, as JSON.
        var headers = result.GetProperty("headers");
        Assert.Equal("127.0.0.1", headers.GetProperty("X-Forwarded-For").GetString());
        Assert.Equal("http", headers.GetProperty("X-Forwarded-Proto").GetString());
        Assert.Equal("1.1 portico", headers.GetProperty("Via").GetString());
        Assert.Equal("websocket", headers.GetProperty("Upgrade").GetString(), ignoreCase: true);
    }

    [Fact(Timeout = 60_000)]
    public async Task WebSocketHttp11_OneMegabyteMessage_EchoesIntact()
    {
        var result = await _fixture.RunClientAsync("big");

        Assert.Equal(1024 * 1024, result.GetProperty("big_echo_len").GetInt32());
        Assert.Equal(result.GetProperty("big_sent_sha256").GetString(), result.GetProperty("big_echo_sha256").GetString());
    }

    [Fact(Timeout = 60_000)]
    public async Task WebSocketHttp11_ServerClosesWith4001_ClientSees4001AndHandshakeCompletes()
    {
        var result = await _fixture.RunClientAsync("close");

        Assert.Equal("last words", result.GetProperty("before_close").GetString());
        // The close frame travelled through the tunnel: code and reason as the server chose them (1006 would
        // mean the gateway dropped the TCP connection instead).
        Assert.Equal(4001, result.GetProperty("close_code").GetInt32());
        Assert.Equal("server-chose-4001", result.GetProperty("close_reason").GetString());
        // The client answered the close, and the server received that answer: the handshake completed.
        Assert.True(result.GetProperty("rcvd_then_sent").GetBoolean());
        var id = result.GetProperty("id").GetString();
        var line = await _fixture.Upstream.WaitForLineAsync($"server-close id={id} ", TimeSpan.FromSeconds(15));
        Assert.Equal($"server-close id={id} sent=True rcvd=4001", line);
    }

    [Fact(Timeout = 60_000)]
    public async Task WebSocketHttp2ExtendedConnect_Messages_EchoBothWays()
    {
        using var cts = new CancellationTokenSource(ClientTimeout);
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        using var ws = CreateHttp2Client();

        await ws.ConnectAsync(_fixture.WebSocketUri("/ws/headers"), invoker, cts.Token);

        // RFC 8441 §5: the answer to an extended CONNECT is 200, not 101; only HTTP/2 can give it.
        Assert.Equal(HttpStatusCode.OK, ws.HttpStatusCode);
        var (type, payload) = await ReceiveMessageAsync(ws, cts.Token);
        Assert.Equal(WebSocketMessageType.Text, type);
        using (var headers = JsonDocument.Parse(payload))
        {
            var root = headers.RootElement;
            Assert.Equal("2 portico", root.GetProperty("Via").GetString());
            Assert.Equal("127.0.0.1", root.GetProperty("X-Forwarded-For").GetString());
            Assert.Equal("websocket", root.GetProperty("Upgrade").GetString(), ignoreCase: true);
        }

        var text = Encoding.UTF8.GetBytes("hello over h2 extended CONNECT");
        await ws.SendAsync(text, WebSocketMessageType.Text, endOfMessage: true, cts.Token);
        (type, payload) = await ReceiveMessageAsync(ws, cts.Token);
        Assert.Equal(WebSocketMessageType.Text, type);
        Assert.Equal(text, payload);

        // Larger than one HTTP/2 DATA frame (16 KiB) and than the gateway's 16 KiB pump buffer.
        var binary = RandomNumberGenerator.GetBytes(200 * 1024);
        await ws.SendAsync(binary, WebSocketMessageType.Binary, endOfMessage: true, cts.Token);
        (type, payload) = await ReceiveMessageAsync(ws, cts.Token);
        Assert.Equal(WebSocketMessageType.Binary, type);
        Assert.Equal(binary, payload);

        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "client-done", cts.Token);
        Assert.Equal(WebSocketState.Closed, ws.State);
        // The server echoes the client's close code in its close frame (RFC 6455 §5.5.1).
        Assert.Equal(WebSocketCloseStatus.NormalClosure, ws.CloseStatus);
    }

    [Fact(Timeout = 60_000)]
    public async Task WebSocketHttp2ExtendedConnect_ServerClosesWith4001_ClientSees4001()
    {
        using var cts = new CancellationTokenSource(ClientTimeout);
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        using var ws = CreateHttp2Client();

        var id = Guid.NewGuid().ToString("N");
        await ws.ConnectAsync(_fixture.WebSocketUri($"/ws/close4001?id={id}"), invoker, cts.Token);
        Assert.Equal(HttpStatusCode.OK, ws.HttpStatusCode);
        await ws.SendAsync("last words"u8.ToArray(), WebSocketMessageType.Text, endOfMessage: true, cts.Token);
        var (_, echoed) = await ReceiveMessageAsync(ws, cts.Token);
        Assert.Equal("last words", Encoding.UTF8.GetString(echoed));

        var (type, _) = await ReceiveMessageAsync(ws, cts.Token);

        Assert.Equal(WebSocketMessageType.Close, type);
        Assert.Equal((WebSocketCloseStatus)4001, ws.CloseStatus);
        Assert.Equal("server-chose-4001", ws.CloseStatusDescription);
        if (ws.State == WebSocketState.CloseReceived)
        {
            await ws.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cts.Token);
        }
        Assert.Equal(WebSocketState.Closed, ws.State);
        // The server logs whether the client's answering close frame reached it through the tunnel.
        var line = await _fixture.Upstream.WaitForLineAsync($"server-close id={id} ", TimeSpan.FromSeconds(15));
        Assert.StartsWith($"server-close id={id} sent=True rcvd=", line);
        Assert.DoesNotMatch("rcvd=None$", line);
    }

    private static ClientWebSocket CreateHttp2Client()
    {
        var ws = new ClientWebSocket();
        // Exact HTTP/2 on a ws:// URI: .NET speaks h2c with prior knowledge, which the gateway's cleartext port
        // detects from the connection preface (H2cPriorKnowledge).
        ws.Options.HttpVersion = HttpVersion.Version20;
        ws.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        ws.Options.CollectHttpResponseDetails = true;
        ws.Options.KeepAliveInterval = TimeSpan.Zero;
        return ws;
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

    /// <summary>One Python WebSocket upstream and one gateway for the whole class.</summary>
    public sealed class Fixture : IAsyncLifetime
    {
        private string? _directory;
        private string? _clientScript;

        public BackgroundProcess Upstream { get; private set; } = null!;

        public GatewayProcess Gateway { get; private set; } = null!;

        public int GatewayPort { get; private set; }

        public Uri WebSocketUri(string path) => new($"ws://127.0.0.1:{GatewayPort}{path}");

        public async Task InitializeAsync()
        {
            _directory = ProtocolTestKit.CreateTempDirectory("ws");
            var serverScript = Path.Combine(_directory, "ws_server.py");
            _clientScript = Path.Combine(_directory, "ws_client.py");
            await File.WriteAllTextAsync(serverScript, ServerScript);
            await File.WriteAllTextAsync(_clientScript, ClientScript);
            Upstream = await BackgroundProcess.StartServerAsync(ExternalTool.Python, [serverScript]);
            GatewayPort = Ports.GetFree();
            Gateway = await GatewayProcess.StartAsync($"""
                server:
                  listen_address: "127.0.0.1"
                  listen_port: {GatewayPort}
                admin:
                  enabled: false
                upstreams:
                  - name: ws
                    servers: ["127.0.0.1:{Upstream.Port}"]
                routes:
                  - path: "/*"
                    upstream: ws
                """, GatewayPort);
        }

        /// <summary>Runs the Python client in <paramref name="mode"/> through the gateway; returns its JSON report.</summary>
        public async Task<JsonElement> RunClientAsync(string mode)
        {
            var result = await ExternalTool.RunAsync(ExternalTool.Python, [_clientScript!, $"ws://127.0.0.1:{GatewayPort}", mode], ClientTimeout);
            Assert.True(result.ExitCode == 0, $"client failed:\n{result}\nupstream:\n{Upstream.Output}\ngateway:\n{Gateway.Output}");
            return ProtocolTestKit.LastJsonLine(result);
        }

        public async Task DisposeAsync()
        {
            if (Gateway is not null)
            {
                await Gateway.DisposeAsync();
            }
            if (Upstream is not null)
            {
                await Upstream.DisposeAsync();
            }
            ProtocolTestKit.DeleteDirectory(_directory);
        }
    }

    // python3-websockets 10.4 (Debian bookworm): the legacy asyncio API, where the handler may take (ws, path)
    // and ws.path / ws.request_headers describe the handshake.
    private const string ServerScript = """
        # WebSocket upstream for Portico's protocol tests. /ws/headers first sends the handshake headers it received
        # as JSON, then echoes; /ws/close4001 echoes one message, then closes with 4001; anything else echoes.
        import asyncio, json
        import websockets

        WANTED = ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via", "Host", "Upgrade", "Connection"]

        async def handler(ws, path=None):
            path = ws.path
            if path.startswith("/ws/headers"):
                await ws.send(json.dumps({h: ws.request_headers.get(h) for h in WANTED}))
            if path.startswith("/ws/close4001"):
                await ws.send(await ws.recv())
                await ws.close(code=4001, reason="server-chose-4001")
                rcvd = ws.close_rcvd.code if ws.close_rcvd else None
                conn = path.partition("id=")[2] or "-"
                print(f"server-close id={conn} sent={ws.close_sent is not None} rcvd={rcvd}", flush=True)
                return
            try:
                async for msg in ws:
                    await ws.send(msg)
            except websockets.ConnectionClosed:
                pass

        async def main():
            async with websockets.serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None) as server:
                print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
                await asyncio.Future()

        asyncio.run(main())
        """;

    private const string ClientScript = """
        # WebSocket client for Portico's protocol tests: argv[1] the gateway's ws:// base, argv[2] the mode.
        # Prints one JSON object with what it observed; the C# test asserts on it.
        import asyncio, hashlib, json, os, sys
        import websockets

        async def echo(base, out):
            async with websockets.connect(base + "/ws/headers", max_size=None, ping_interval=None, open_timeout=10) as ws:
                out["headers"] = json.loads(await ws.recv())
                await ws.send("hello through portico")
                out["text"] = await ws.recv()
                binary = bytes(range(256)) * 4
                await ws.send(binary)
                echoed = await ws.recv()
                out["binary_type"] = type(echoed).__name__
                out["binary_equal"] = echoed == binary
                await ws.close(code=1000, reason="client-done")
                out["client_close_code"] = ws.close_code

        async def big(base, out):
            async with websockets.connect(base + "/ws/echo", max_size=None, ping_interval=None, open_timeout=10) as ws:
                payload = os.urandom(1024 * 1024)
                await ws.send(payload)
                echoed = await ws.recv()
                out["big_sent_sha256"] = hashlib.sha256(payload).hexdigest()
                out["big_echo_sha256"] = hashlib.sha256(echoed).hexdigest()
                out["big_echo_len"] = len(echoed)

        async def close(base, out):
            out["id"] = os.urandom(8).hex()
            async with websockets.connect(base + "/ws/close4001?id=" + out["id"], ping_interval=None, open_timeout=10) as ws:
                await ws.send("last words")
                out["before_close"] = await ws.recv()
                try:
                    await ws.recv()
                    out["after_close"] = "unexpected message"
                except websockets.ConnectionClosed as e:
                    out["close_code"] = e.rcvd.code if e.rcvd else None
                    out["close_reason"] = e.rcvd.reason if e.rcvd else None
                    out["rcvd_then_sent"] = e.rcvd_then_sent

        async def main(base, mode):
            out = {}
            await {"echo": echo, "big": big, "close": close}[mode](base, out)
            print(json.dumps(out), flush=True)

        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
        """;
}
