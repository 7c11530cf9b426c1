using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Portico.IntegrationTests.Infrastructure;
using Portico.Server.Http2;

namespace Portico.IntegrationTests.Protocols;

/// <summary>
/// Portico's own HTTP/2 server under input no well-behaved client sends, over a raw socket to the real gateway: a
/// malformed request is reset and the connection goes on, an oversized frame ends the connection with
/// FRAME_SIZE_ERROR, a header list over the limit is answered 431, a rapid-reset burst (CVE-2023-44487) neither
/// takes the gateway down nor leaves it unable to serve the next client, and a connection left idle past the
/// keep-alive timeout is sent GOAWAY and closed.
/// </summary>
public sealed class Http2ServerTests : IClassFixture<Http2Tests.Fixture>
{
    private readonly Http2Tests.Fixture _fixture;

    public Http2ServerTests(Http2Tests.Fixture fixture)
    {
        _fixture = fixture;
    }

    [Fact(Timeout = 30_000)]
    public async Task UppercaseHeaderName_StreamResetWithProtocolError_NextStreamServed()
    {
        await using var client = await RawH2Client.ConnectAsync(_fixture.GatewayPort);

        await client.SendHeadersAsync(1, Request("/bad", ("X-Upper", "1")), endStream: true);
        var reset = await client.ReadUntilAsync(f => f.Type == FrameType.RstStream && f.StreamId == 1);
        Assert.Equal((uint)Http2ErrorCode.ProtocolError, BinaryPrimitives.ReadUInt32BigEndian(reset.Payload));

        await client.SendHeadersAsync(3, Request("/good"), endStream: true);
        var headers = await client.ReadUntilAsync(f => f.Type == FrameType.Headers && f.StreamId == 3);
        Assert.Equal(0x88, headers.Payload[0]); // :status 200, static index 8
    }

    [Fact(Timeout = 30_000)]
    public async Task FrameOverMaxFrameSize_GoAwayWithFrameSizeError()
    {
        await using var client = await RawH2Client.ConnectAsync(_fixture.GatewayPort);

        await client.SendHeadersAsync(1, Request("/post", ("content-type", "application/octet-stream")), endStream: false);
        await client.SendFrameAsync(FrameType.Data, 0, 1, new byte[20_000]);

        var goAway = await client.ReadUntilAsync(f => f.Type == FrameType.GoAway);
        Assert.Equal((uint)Http2ErrorCode.FrameSizeError, BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4)));
    }

    [Fact(Timeout = 30_000)]
    public async Task ConnectionError_GoAwayNamesTheLastStreamTakenForProcessing_NotARefusedOne()
    {
        await using var client = await RawH2Client.ConnectAsync(_fixture.GatewayPort);
        await client.SendHeadersAsync(1, Request("/first"), endStream: true);
        await client.ReadUntilAsync(f => f.Type == FrameType.Headers && f.StreamId == 1);
        await client.SendHeadersAsync(3, Request("/bad", ("X-Upper", "1")), endStream: true);
        await client.ReadUntilAsync(f => f.Type == FrameType.RstStream && f.StreamId == 3);

        await client.SendFrameAsync(FrameType.Data, 0, 1, new byte[20_000]);

        var goAway = await client.ReadUntilAsync(f => f.Type == FrameType.GoAway);
        Assert.Equal(1, BinaryPrimitives.ReadInt32BigEndian(goAway.Payload) & 0x7FFF_FFFF);
        Assert.Equal((uint)Http2ErrorCode.FrameSizeError, BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4)));
    }

    [Fact(Timeout = 30_000)]
    public async Task HeaderListOverLimit_Answered431_ConnectionGoesOn()
    {
        await using var client = await RawH2Client.ConnectAsync(_fixture.GatewayPort);

        // 40 KB of one header, over the 32 KB default, sent as HEADERS plus CONTINUATION frames.
        await client.SendHeadersAsync(1, Request("/big", ("x-big", new string('a', 40_000))), endStream: true);
        var headers = await client.ReadUntilAsync(f => f.Type == FrameType.Headers && f.StreamId == 1);
        Assert.Contains("431", Encoding.ASCII.GetString(headers.Payload));

        await client.SendHeadersAsync(3, Request("/after"), endStream: true);
        var next = await client.ReadUntilAsync(f => f.Type == FrameType.Headers && f.StreamId == 3);
        Assert.Equal(0x88, next.Payload[0]);
    }

    [Fact(Timeout = 30_000)]
    public async Task MoreHeaderFieldsThanTheLimit_Answered431()
    {
        await using var client = await RawH2Client.ConnectAsync(_fixture.GatewayPort);
        var many = new (string, string)[150];
        for (var i = 0; i < many.Length; i++)
        {
            many[i] = ($"x-h{i}", "v");
        }

        await client.SendHeadersAsync(1, Request("/many", many), endStream: true);
        var headers = await client.ReadUntilAsync(f => f.Type == FrameType.Headers && f.StreamId == 1);
        Assert.Contains("431", Encoding.ASCII.GetString(headers.Payload));
    }

    [Fact(Timeout = 60_000)]
    public async Task RapidReset_ThousandStreamsResetAtOnce_GatewayStillServes()
    {
        await using (var client = await RawH2Client.ConnectAsync(_fixture.GatewayPort))
        {
            try
            {
                for (var id = 1; id < 2000; id += 2)
                {
                    await client.SendHeadersAsync(id, Request("/reset"), endStream: true);
                    await client.SendFrameAsync(FrameType.RstStream, 0, id, [0, 0, 0, 8]);
                }
            }
            catch (IOException)
            {
                // The gateway may end the connection with ENHANCE_YOUR_CALM: that is an answer too.
            }
        }

        await using var fresh = await RawH2Client.ConnectAsync(_fixture.GatewayPort);
        await fresh.SendHeadersAsync(1, Request("/after-reset"), endStream: true);
        var headers = await fresh.ReadUntilAsync(f => f.Type == FrameType.Headers && f.StreamId == 1);
        Assert.Equal(0x88, headers.Payload[0]);
        Assert.False(_fixture.Gateway.HasExited);
    }

    /// <summary>
    /// The keep-alive timeout of an idle h2c connection, which the shared once-a-second heartbeat of the own servers
    /// enforces (each connection had a timer of its own before): GOAWAY with NO_ERROR naming the last stream served,
    /// then the close, within the timeout and two beats.
    /// </summary>
    [Fact(Timeout = 30_000)]
    public async Task IdleConnection_PastTheKeepAliveTimeout_GoAwayNoErrorThenClosed()
    {
        await using var upstream = await TestUpstream.StartAsync(ProtocolTestKit.DescribeRequestAsync);
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
              idle_timeout_seconds: 2
            admin:
              enabled: false
            logging:
              level: warn
            upstreams:
              - name: h1
                servers: ["{upstream.Address}"]
            routes:
              - path: "/*"
                upstream: h1
            """, port);
        await using var client = await RawH2Client.ConnectAsync(port);
        await client.SendHeadersAsync(1, [(":method", "GET"), (":scheme", "http"), (":path", "/idle"), (":authority", $"127.0.0.1:{port}")], endStream: true);
        await client.ReadUntilAsync(f => f.Type == FrameType.Data && (f.Flags & FrameFlags.EndStream) != 0 && f.StreamId == 1);
        var served = System.Diagnostics.Stopwatch.StartNew();

        var goAway = await client.ReadUntilAsync(f => f.Type == FrameType.GoAway);

        Assert.InRange(served.Elapsed.TotalSeconds, 1.5, 5.5);
        Assert.Equal(1, BinaryPrimitives.ReadInt32BigEndian(goAway.Payload) & 0x7fffffff);
        Assert.Equal((uint)Http2ErrorCode.NoError, BinaryPrimitives.ReadUInt32BigEndian(goAway.Payload.AsSpan(4)));
        Assert.True(await client.ClosedAsync(TimeSpan.FromSeconds(5)), "the connection stayed open after GOAWAY");
    }

    private (string Name, string Value)[] Request(string path, params (string Name, string Value)[] extra)
    {
        var list = new List<(string, string)> { (":method", "GET"), (":scheme", "http"), (":path", path), (":authority", $"127.0.0.1:{_fixture.GatewayPort}") };
        list.AddRange(extra);
        return [.. list];
    }

    private readonly record struct Frame(FrameType Type, byte Flags, int StreamId, byte[] Payload);

    /// <summary>A client that writes frames as given (no validation of its own) and reads whatever comes back.</summary>
    private sealed class RawH2Client : IAsyncDisposable
    {
        private readonly Socket _socket;
        private readonly NetworkStream _stream;

        private RawH2Client(Socket socket)
        {
            _socket = socket;
            _stream = new NetworkStream(socket, ownsSocket: true);
        }

        public static async Task<RawH2Client> ConnectAsync(int port)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync("127.0.0.1", port);
            var client = new RawH2Client(socket);
            await client._stream.WriteAsync("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray());
            await client.SendFrameAsync(FrameType.Settings, 0, 0, []);
            return client;
        }

        public async Task SendFrameAsync(FrameType type, byte flags, int streamId, byte[] payload)
        {
            var frame = new byte[FrameHeader.Size + payload.Length];
            FrameHeader.Write(frame, payload.Length, type, flags, streamId);
            payload.CopyTo(frame, FrameHeader.Size);
            await _stream.WriteAsync(frame);
        }

        public async Task SendHeadersAsync(int streamId, (string Name, string Value)[] fields, bool endStream)
        {
            var block = new byte[fields.Sum(f => HpackEncoder.GetMaxLength(f.Name.Length, f.Value.Length))];
            var length = 0;
            foreach (var (name, value) in fields)
            {
                // Names go out as given (the server must refuse uppercase ones), so no lowercasing overload here.
                length += HpackEncoder.WriteLiteralWithoutIndexing(block.AsSpan(length), Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value));
            }
            const int chunk = 16_384;
            var first = Math.Min(length, chunk);
            var flags = (byte)((endStream ? FrameFlags.EndStream : 0) | (first == length ? FrameFlags.EndHeaders : 0));
            await SendFrameAsync(FrameType.Headers, flags, streamId, block[..first]);
            for (var offset = first; offset < length; offset += chunk)
            {
                var n = Math.Min(chunk, length - offset);
                await SendFrameAsync(FrameType.Continuation, offset + n == length ? FrameFlags.EndHeaders : (byte)0, streamId, block[offset..(offset + n)]);
            }
        }

        /// <summary>True when the server closes the connection within <paramref name="within"/> (frames before that are skipped).</summary>
        public async Task<bool> ClosedAsync(TimeSpan within)
        {
            using var timeout = new CancellationTokenSource(within);
            var buffer = new byte[4096];
            try
            {
                while (await _stream.ReadAsync(buffer, timeout.Token) > 0)
                {
                }
                return true;
            }
            catch (IOException)
            {
                return true;   // a reset is a close too
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        public async Task<Frame> ReadUntilAsync(Func<Frame, bool> match)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            var header = new byte[FrameHeader.Size];
            while (true)
            {
                await _stream.ReadExactlyAsync(header, timeout.Token);
                var parsed = FrameHeader.Read(header);
                var payload = new byte[parsed.Length];
                await _stream.ReadExactlyAsync(payload, timeout.Token);
                var frame = new Frame(parsed.Type, parsed.Flags, parsed.StreamId, payload);
                if (match(frame))
                {
                    return frame;
                }
                if (frame.Type == FrameType.Settings && (frame.Flags & FrameFlags.Ack) == 0)
                {
                    await SendFrameAsync(FrameType.Settings, FrameFlags.Ack, 0, []);
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stream.DisposeAsync();
            _socket.Dispose();
        }
    }
}
