using Microsoft.AspNetCore.Http;
using Portico.Proxy;

namespace Portico.Tests.Proxy;

/// <summary>
/// The frame tracker (RFC 6455 §5.2 boundaries over arbitrary chunks), the close frame the gateway sends at shutdown,
/// and <see cref="UpgradedTunnels.CloseAllAsync"/> on in-memory connections: the close frame goes after a complete
/// frame, never inside one, to both sides, once.
/// </summary>
public sealed class WebSocketTunnelTests
{
    private static readonly TimeSpan Safety = TimeSpan.FromSeconds(30);

    public static TheoryData<int, bool> Lengths()
    {
        var data = new TheoryData<int, bool>();
        // Each side of each encoding: 7-bit (0..125), 16-bit (126..65535), 64-bit (65536..).
        foreach (var length in new[] { 0, 1, 125, 126, 127, 300, 65535, 65536, 70000 })
        {
            data.Add(length, false);
            data.Add(length, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void Tracker_FrameSplitAtEveryPosition_BoundaryOnlyAtTheEnd(int payloadLength, bool masked)
    {
        var frame = TunnelTestKit.Frame(0x2, payloadLength, masked, new Random(payloadLength));

        for (var split = 0; split <= frame.Length; split++)
        {
            var tracker = new WebSocketFrameTracker();
            Assert.Equal(split, tracker.Advance(frame.AsSpan(0, split), stopAtBoundary: false));
            Assert.Equal(split == 0 || split == frame.Length, tracker.IsAtFrameBoundary);
            Assert.Equal(frame.Length - split, tracker.Advance(frame.AsSpan(split), stopAtBoundary: false));
            Assert.True(tracker.IsAtFrameBoundary, $"not at a boundary after the frame split at {split}");
            Assert.Equal(1, tracker.FramesCompleted);
        }
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(125, true)]
    [InlineData(126, false)]
    [InlineData(300, true)]
    [InlineData(65536, true)]
    public void Tracker_FrameByteByByte_BoundaryOnlyAfterLastByte(int payloadLength, bool masked)
    {
        var frame = TunnelTestKit.Frame(0x1, payloadLength, masked, new Random(payloadLength));
        var tracker = new WebSocketFrameTracker();

        for (var i = 0; i < frame.Length; i++)
        {
            // Stopping at the boundary where a frame starts would consume nothing: step in without it.
            Assert.Equal(1, tracker.Advance(frame.AsSpan(i, 1), stopAtBoundary: i > 0));
            Assert.Equal(i == frame.Length - 1, tracker.IsAtFrameBoundary);
        }
        Assert.Equal(1, tracker.FramesCompleted);
    }

    [Fact]
    public void Tracker_HandWrittenHeaders_LengthsReadBigEndian()
    {
        // 16-bit length 0x0100 = 256, unmasked; then 64-bit length 0x10000 = 65536, masked.
        byte[] header16 = [0x82, 0x7E, 0x01, 0x00];
        byte[] header64 = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0xA1, 0xB2, 0xC3, 0xD4];
        var tracker = new WebSocketFrameTracker();

        tracker.Advance(header16, stopAtBoundary: false);
        tracker.Advance(new byte[255], stopAtBoundary: false);
        Assert.False(tracker.IsAtFrameBoundary);
        tracker.Advance(new byte[1], stopAtBoundary: false);
        Assert.True(tracker.IsAtFrameBoundary);

        tracker.Advance(header64, stopAtBoundary: false);
        tracker.Advance(new byte[65535], stopAtBoundary: false);
        Assert.False(tracker.IsAtFrameBoundary);
        tracker.Advance(new byte[1], stopAtBoundary: false);
        Assert.True(tracker.IsAtFrameBoundary);
        Assert.Equal(2, tracker.FramesCompleted);
    }

    [Fact]
    public void Tracker_SeveralFramesInOneChunk_StopsAtEachBoundary()
    {
        var random = new Random(7);
        // A fragmented message with a ping between its fragments (RFC 6455 §5.4), then the start of a 64-bit frame.
        var a = TunnelTestKit.Frame(0x1, 10, masked: true, random, fin: false);
        var ping = TunnelTestKit.Frame(0x9, 0, masked: true, random);
        var b = TunnelTestKit.Frame(0x0, 300, masked: true, random);
        var c = TunnelTestKit.Frame(0x2, 70000, masked: true, random);
        byte[] chunk = [.. a, .. ping, .. b, .. c.AsSpan(0, 5)];

        var all = new WebSocketFrameTracker();
        Assert.Equal(chunk.Length, all.Advance(chunk, stopAtBoundary: false));
        Assert.Equal(3, all.FramesCompleted);
        Assert.False(all.IsAtFrameBoundary);
        Assert.False(all.CloseSeen);

        // Stepping: one byte into each frame, then on to its end.
        var tracker = new WebSocketFrameTracker();
        Assert.Equal(0, tracker.Advance(chunk, stopAtBoundary: true));
        var position = 0;
        foreach (var frame in new[] { a, ping, b })
        {
            Assert.Equal(1, tracker.Advance(chunk.AsSpan(position, 1), stopAtBoundary: false));
            Assert.Equal(frame.Length - 1, tracker.Advance(chunk.AsSpan(position + 1), stopAtBoundary: true));
            Assert.True(tracker.IsAtFrameBoundary);
            position += frame.Length;
        }
        Assert.Equal(0, tracker.Advance(chunk.AsSpan(position), stopAtBoundary: true));
        Assert.Equal(5, tracker.Advance(chunk.AsSpan(position), stopAtBoundary: false));
        Assert.False(tracker.IsAtFrameBoundary);
    }

    [Fact]
    public void Tracker_StopAtBoundary_ReturnsTheBytesToTheEndOfTheCurrentFrame()
    {
        var random = new Random(8);
        var first = TunnelTestKit.Frame(0x2, 1000, masked: false, random);
        var second = TunnelTestKit.Frame(0x1, 20, masked: false, random);
        byte[] stream = [.. first, .. second];
        var tracker = new WebSocketFrameTracker();
        tracker.Advance(stream.AsSpan(0, 3), stopAtBoundary: false);

        // Mid-frame: the rest of the first frame, and not a byte of the second.
        Assert.Equal(first.Length - 3, tracker.Advance(stream.AsSpan(3), stopAtBoundary: true));
        Assert.True(tracker.IsAtFrameBoundary);
    }

    [Fact]
    public void Tracker_CloseFrame_SeenOnceItsHeaderPassed()
    {
        var random = new Random(9);
        var tracker = new WebSocketFrameTracker();
        tracker.Advance(TunnelTestKit.Frame(0x9, 4, masked: true, random), stopAtBoundary: false);
        tracker.Advance(TunnelTestKit.Frame(0xA, 4, masked: true, random), stopAtBoundary: false);
        Assert.False(tracker.CloseSeen);

        var close = TunnelTestKit.CloseReply(masked: true, random);
        tracker.Advance(close.AsSpan(0, 6), stopAtBoundary: false);

        Assert.True(tracker.CloseSeen);
        Assert.False(tracker.IsAtFrameBoundary);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Tracker_RandomFramesInRandomChunks_FindsExactlyTheFrameEnds(int seed)
    {
        var random = new Random(seed);
        var ends = new HashSet<int>();
        using var stream = new MemoryStream();
        for (var i = 0; i < 200; i++)
        {
            var length = random.Next(4) switch { 0 => random.Next(126), 1 => random.Next(126, 2000), 2 => random.Next(0, 10), _ => random.Next(65536, 70000) };
            stream.Write(TunnelTestKit.Frame((byte)random.Next(0, 3), length, random.Next(2) == 0, random));
            ends.Add((int)stream.Length);
        }
        var bytes = stream.ToArray();
        var tracker = new WebSocketFrameTracker();
        var found = new HashSet<int>();

        var position = 0;
        while (position < bytes.Length)
        {
            var chunk = Math.Min(random.Next(1, 3000), bytes.Length - position);
            var consumed = 0;
            while (consumed < chunk)
            {
                var n = tracker.Advance(bytes.AsSpan(position + consumed, chunk - consumed), stopAtBoundary: true);
                consumed += n == 0 ? tracker.Advance(bytes.AsSpan(position + consumed, 1), stopAtBoundary: false) : n;
                if (tracker.IsAtFrameBoundary)
                {
                    found.Add(position + consumed);
                }
            }
            position += chunk;
        }

        Assert.Equal(ends.Count, found.Count);
        Assert.Subset(ends, found);
        Assert.Equal(200, tracker.FramesCompleted);
    }

    [Fact]
    public void CloseFrame_Unmasked_ByteForByte()
    {
        var frame = new byte[WebSocketCloseFrame.MaxLength];

        var length = WebSocketCloseFrame.Write(frame, default, masked: false);

        // FIN + close, length 12, status 1001 (0x03E9), "going away".
        byte[] expected = [0x88, 0x0C, 0x03, 0xE9, (byte)'g', (byte)'o', (byte)'i', (byte)'n', (byte)'g', (byte)' ', (byte)'a', (byte)'w', (byte)'a', (byte)'y'];
        Assert.Equal(expected, frame.AsSpan(0, length).ToArray());
    }

    [Fact]
    public void CloseFrame_Masked_ByteForByte()
    {
        var frame = new byte[WebSocketCloseFrame.MaxLength];

        var length = WebSocketCloseFrame.Write(frame, [0x01, 0x02, 0x03, 0x04], masked: true);

        // Mask bit + length 12, the key, then 03 E9 "going away" XOR 01 02 03 04 repeating (RFC 6455 §5.3).
        byte[] expected = [0x88, 0x8C, 0x01, 0x02, 0x03, 0x04,
            0x02, 0xEB, 0x64, 0x6B, 0x68, 0x6C, 0x64, 0x24, 0x60, 0x75, 0x62, 0x7D];
        Assert.Equal(expected, frame.AsSpan(0, length).ToArray());
        Assert.Equal((1001, "going away", true), TunnelTestKit.DecodeClose(expected));
        var tracker = new WebSocketFrameTracker();
        tracker.Advance(expected, stopAtBoundary: false);
        Assert.True(tracker.CloseSeen);
        Assert.True(tracker.IsAtFrameBoundary);
    }

    [Fact]
    public async Task CloseAll_IdleTunnel_CloseFrameToBothSidesThenEndsOnTheirReplies()
    {
        await using var t = TunnelUnderTest.Start(TimeProvider.System);
        var random = new Random(1);
        var hello = TunnelTestKit.Frame(0x1, 5, masked: true, random);
        await t.Client.WriteAsync(hello);
        Assert.Equal(hello, await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, hello.Length));
        var answer = TunnelTestKit.Frame(0x1, 5, masked: false, random);
        await t.Upstream.WriteAsync(answer);
        Assert.Equal(answer, await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, answer.Length));
        Assert.Equal(1, t.Registry.Count);

        var closing = t.Registry.CloseAllAsync(Safety);

        Assert.Equal((1001, "going away", false), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 14)));
        Assert.Equal((1001, "going away", true), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 18)));
        Assert.False(closing.IsCompleted);
        await t.Client.WriteAsync(TunnelTestKit.CloseReply(masked: true, random));
        await t.Upstream.WriteAsync(TunnelTestKit.CloseReply(masked: false, random));
        await closing.WaitAsync(Safety);
        await t.Run.WaitAsync(Safety);

        Assert.Equal(0, t.Registry.Count);
        // The replies ended the handshakes; neither was relayed to the other side.
        Assert.Empty(await t.Client.CloseGatewayAndReadRestAsync());
        Assert.Empty(await t.Upstream.CloseGatewayAndReadRestAsync());
    }

    [Fact]
    public async Task CloseAll_ClientMidFrame_CloseFollowsTheCompleteFrameAndNothingAfter()
    {
        await using var t = TunnelUnderTest.Start(TimeProvider.System);
        var random = new Random(2);
        var frame = TunnelTestKit.Frame(0x2, 1000, masked: true, random);
        var next = TunnelTestKit.Frame(0x1, 10, masked: true, random);
        await t.Client.WriteAsync(frame.AsMemory(0, 500));
        Assert.Equal(frame[..500], await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 500));

        var closing = t.Registry.CloseAllAsync(Safety);

        // The other direction was idle at a boundary: the client has its close frame at once.
        Assert.Equal((1001, "going away", false), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 14)));
        // Toward the upstream the frame is unfinished: nothing may be written until it is.
        Assert.False(t.Upstream.HasUnreadOutput());
        // The end of the frame and the client's next frame arrive together: the close frame goes between them.
        await t.Client.WriteAsync((byte[])[.. frame.AsSpan(500), .. next]);
        Assert.Equal(frame[500..], await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, frame.Length - 500));
        Assert.Equal((1001, "going away", true), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 18)));
        await t.Client.WriteAsync(TunnelTestKit.CloseReply(masked: true, random));
        await t.Upstream.WriteAsync(TunnelTestKit.CloseReply(masked: false, random));
        await closing.WaitAsync(Safety);

        Assert.Empty(await t.Upstream.CloseGatewayAndReadRestAsync());
        Assert.Empty(await t.Client.CloseGatewayAndReadRestAsync());
    }

    [Fact]
    public async Task CloseAll_UpstreamHeaderSplitAcrossReads_CloseFollowsTheCompleteFrame()
    {
        await using var t = TunnelUnderTest.Start(TimeProvider.System);
        var random = new Random(3);
        // 64-bit length: a 10-byte header, of which only 3 bytes are there when the close starts.
        var frame = TunnelTestKit.Frame(0x2, 70000, masked: false, random);
        await t.Upstream.WriteAsync(frame.AsMemory(0, 3));
        Assert.Equal(frame[..3], await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 3));

        var closing = t.Registry.CloseAllAsync(Safety);

        Assert.Equal((1001, "going away", true), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 18)));
        Assert.False(t.Client.HasUnreadOutput());
        await t.Upstream.WriteAsync(frame.AsMemory(3, 7));
        await t.Upstream.WriteAsync(frame.AsMemory(10, 40000));
        await t.Upstream.WriteAsync(frame.AsMemory(40010));
        Assert.Equal(frame[3..], await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, frame.Length - 3));
        Assert.Equal((1001, "going away", false), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 14)));
        await t.Upstream.WriteAsync(TunnelTestKit.CloseReply(masked: false, random));
        await t.Client.WriteAsync(TunnelTestKit.CloseReply(masked: true, random));
        await closing.WaitAsync(Safety);
    }

    [Fact]
    public async Task CloseAll_ClientAlreadySentClose_NoCloseFrameOfTheGatewaysAndTheHandshakeIsRelayed()
    {
        await using var t = TunnelUnderTest.Start(TimeProvider.System);
        var random = new Random(4);
        var clientClose = TunnelTestKit.CloseReply(masked: true, random);
        await t.Client.WriteAsync(clientClose);
        Assert.Equal(clientClose, await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, clientClose.Length));

        var closing = t.Registry.CloseAllAsync(Safety);

        // The upstream's answer goes through to the client as it would without the shutdown.
        var upstreamClose = TunnelTestKit.CloseReply(masked: false, random);
        await t.Upstream.WriteAsync(upstreamClose);
        Assert.Equal(upstreamClose, await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, upstreamClose.Length));
        // Then the upstream closes its connection (RFC 6455 §7.1.1: the server closes TCP first).
        await t.Upstream.PeerOutput.CompleteAsync();
        await closing.WaitAsync(Safety);

        Assert.Empty(await t.Client.CloseGatewayAndReadRestAsync());
        Assert.Empty(await t.Upstream.CloseGatewayAndReadRestAsync());
    }

    [Fact]
    public async Task CloseAll_FrameNeverFinishes_TunnelEndsAtTheTimeoutWithoutACloseFrameInsideIt()
    {
        var clock = new ManualTimerProvider();
        await using var t = TunnelUnderTest.Start(clock);
        var random = new Random(5);
        var frame = TunnelTestKit.Frame(0x2, 1000, masked: true, random);
        await t.Client.WriteAsync(frame.AsMemory(0, 100));
        Assert.Equal(frame[..100], await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 100));

        var closing = t.Registry.CloseAllAsync(TimeSpan.FromSeconds(5));
        Assert.Equal((1001, "going away", false), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 14)));
        clock.Advance(TimeSpan.FromSeconds(4.9));
        Assert.False(closing.IsCompleted);
        clock.Advance(TimeSpan.FromSeconds(0.1));
        await closing.WaitAsync(Safety);

        // Cut at the timeout: the upstream got the first 100 bytes of the frame and nothing else.
        Assert.Empty(await t.Upstream.CloseGatewayAndReadRestAsync());
        Assert.Empty(await t.Client.CloseGatewayAndReadRestAsync());
        Assert.Equal(0, t.Registry.Count);
    }

    [Fact]
    public async Task CloseAll_ClientGoneMidFrame_TunnelEndsWithoutWaitingForTheTimeout()
    {
        var clock = new ManualTimerProvider();
        await using var t = TunnelUnderTest.Start(clock);
        var frame = TunnelTestKit.Frame(0x2, 1000, masked: true, new Random(10));
        await t.Client.WriteAsync(frame.AsMemory(0, 100));
        Assert.Equal(frame[..100], await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 100));
        var closing = t.Registry.CloseAllAsync(TimeSpan.FromSeconds(5));
        Assert.Equal((1001, "going away", false), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 14)));

        // The client disappears before finishing its frame: the upstream never gets a close frame, so it will not
        // answer one, and there is nothing to wait for. The clock does not move: the tunnel ends on its own.
        await t.Client.PeerOutput.CompleteAsync();

        await closing.WaitAsync(Safety);
        Assert.Empty(await t.Upstream.CloseGatewayAndReadRestAsync());
    }

    [Fact]
    public async Task CloseAll_NotWebSocket_NoFramesWrittenAndEndsAtTheTimeout()
    {
        var clock = new ManualTimerProvider();
        await using var t = TunnelUnderTest.Start(clock, isWebSocket: false);
        await t.Client.WriteAsync("raw bytes"u8.ToArray());
        Assert.Equal("raw bytes"u8.ToArray(), await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 9));

        var closing = t.Registry.CloseAllAsync(TimeSpan.FromSeconds(1));
        Assert.False(closing.IsCompleted);
        clock.Advance(TimeSpan.FromSeconds(1));
        await closing.WaitAsync(Safety);

        Assert.Empty(await t.Upstream.CloseGatewayAndReadRestAsync());
        Assert.Empty(await t.Client.CloseGatewayAndReadRestAsync());
    }

    [Fact]
    public async Task CloseAll_TunnelStartsAfterTheCall_IsClosedToo()
    {
        var registry = new UpgradedTunnels();
        Assert.True(registry.CloseAllAsync(Safety).IsCompleted);

        await using var t = TunnelUnderTest.Start(TimeProvider.System, registry: registry);

        Assert.Equal((1001, "going away", false), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Client.PeerInput, 14)));
        Assert.Equal((1001, "going away", true), TunnelTestKit.DecodeClose(await TunnelTestKit.ReadExactlyAsync(t.Upstream.PeerInput, 18)));
        var random = new Random(6);
        await t.Client.WriteAsync(TunnelTestKit.CloseReply(masked: true, random));
        await t.Upstream.WriteAsync(TunnelTestKit.CloseReply(masked: false, random));
        await t.Run.WaitAsync(Safety);
        Assert.Equal(0, registry.Count);
    }

    [Fact]
    public async Task Tunnel_OneSideCloses_OtherDirectionEndsToo()
    {
        await using var t = TunnelUnderTest.Start(TimeProvider.System);

        await t.Client.PeerOutput.CompleteAsync();

        await t.Run.WaitAsync(Safety);
        Assert.Equal(0, t.Registry.Count);
    }

    /// <summary>
    /// Both peers stream frames of random sizes, written in random pieces, while CloseAllAsync runs at a random
    /// moment. Each peer must receive whole frames of the other, exactly as sent, then exactly one close frame, and
    /// nothing after it.
    /// </summary>
    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    [InlineData(14)]
    [InlineData(15)]
    public async Task CloseAll_WhileBothSidesStream_CloseLandsOnlyBetweenCompleteFrames(int seed)
    {
        await using var t = TunnelUnderTest.Start(TimeProvider.System);
        var random = new Random(seed);
        var client = new StreamingPeer(t.Client, masked: true, new Random(random.Next()));
        var upstream = new StreamingPeer(t.Upstream, masked: false, new Random(random.Next()));
        client.Peer = upstream;
        upstream.Peer = client;
        var closeAfter = random.Next(1, 400_000);
        var tasks = new[] { client.SendAsync(), upstream.SendAsync(), client.ReceiveAsync(), upstream.ReceiveAsync() };

        await upstream.WaitForReceivedAsync(closeAfter).WaitAsync(Safety);
        await t.Registry.CloseAllAsync(Safety).WaitAsync(Safety);
        await t.Run.WaitAsync(Safety);
        t.Client.CloseGatewaySide();
        t.Upstream.CloseGatewaySide();
        await Task.WhenAll(tasks).WaitAsync(Safety);

        client.AssertReceivedWholeFramesThenOneClose(expectMasked: false);
        upstream.AssertReceivedWholeFramesThenOneClose(expectMasked: true);
    }

    /// <summary>A tunnel between two in-memory peers, running in a registry.</summary>
    private sealed class TunnelUnderTest : IAsyncDisposable
    {
        private TunnelUnderTest(UpgradedTunnels registry, bool isWebSocket, TimeProvider timeProvider)
        {
            Registry = registry;
            var tunnel = new WebSocketTunnel(Client.GatewaySide, Upstream.GatewaySide, isWebSocket, timeProvider);
            Run = tunnel.RunAsync(new ProxySession(new DefaultHttpContext(), "test"), registry, CancellationToken.None);
        }

        public PipeConnection Client { get; } = new();

        public PipeConnection Upstream { get; } = new();

        public UpgradedTunnels Registry { get; }

        public Task Run { get; }

        public static TunnelUnderTest Start(TimeProvider timeProvider, bool isWebSocket = true, UpgradedTunnels? registry = null) =>
            new(registry ?? new UpgradedTunnels(timeProvider), isWebSocket, timeProvider);

        public async ValueTask DisposeAsync()
        {
            await Client.PeerOutput.CompleteAsync();
            await Upstream.PeerOutput.CompleteAsync();
            await Run.WaitAsync(Safety);
        }
    }

    /// <summary>
    /// One end of a WebSocket connection: sends random frames in random pieces until it has received a close frame
    /// and finished the frame it was sending, then answers the close, as an RFC 6455 endpoint does.
    /// </summary>
    private sealed class StreamingPeer(PipeConnection connection, bool masked, Random random)
    {
        private readonly HashSet<long> _frameEnds = [0];
        private readonly MemoryStream _sent = new();
        private readonly MemoryStream _received = new();
        private readonly TaskCompletionSource _closeReceived = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Lock _lock = new();
        private TaskCompletionSource? _threshold;
        private long _thresholdBytes;
        private long _receivedCount;

        public StreamingPeer Peer { get; set; } = null!;

        public async Task SendAsync()
        {
            var frames = 0;
            while (!_closeReceived.Task.IsCompleted)
            {
                var length = random.Next(3) switch { 0 => random.Next(0, 126), 1 => random.Next(126, 5000), _ => random.Next(20_000, 80_000) };
                var opcode = frames++ % 7 == 6 ? (byte)0x9 : (byte)0x2;
                var frame = TunnelTestKit.Frame(opcode, length, masked, random);
                lock (_lock)
                {
                    _sent.Write(frame);
                    _frameEnds.Add(_sent.Length);
                }
                var offset = 0;
                while (offset < frame.Length)
                {
                    var piece = Math.Min(random.Next(1, 9000), frame.Length - offset);
                    await connection.WriteAsync(frame.AsMemory(offset, piece));
                    offset += piece;
                    if (random.Next(4) == 0)
                    {
                        await Task.Yield();
                    }
                }
                if (frames > 2000)
                {
                    // Enough: wait for the close.
                    await _closeReceived.Task;
                }
            }
            await connection.WriteAsync(TunnelTestKit.CloseReply(masked, random));
        }

        public async Task ReceiveAsync()
        {
            var reader = connection.PeerInput;
            // The gateway's close frame comes to a client unmasked, to an upstream masked.
            var closeLength = masked ? 14 : 18;
            while (true)
            {
                var read = await reader.ReadAsync();
                foreach (var segment in read.Buffer)
                {
                    _received.Write(segment.Span);
                }
                reader.AdvanceTo(read.Buffer.End);
                var length = _received.Length;
                lock (_lock)
                {
                    _receivedCount = length;
                    if (_threshold is not null && length >= _thresholdBytes)
                    {
                        _threshold.TrySetResult();
                    }
                }
                // The gateway's close frame is the last thing it sends: once the stream ends with a close frame at one
                // of the other peer's frame ends, it has arrived (the peers' own frames are binary and ping, never close).
                if (read.IsCompleted
                    || length >= closeLength && Peer.IsFrameEnd(length - closeLength) && _received.GetBuffer()[length - closeLength] == 0x88)
                {
                    _closeReceived.TrySetResult();
                }
                if (read.IsCompleted)
                {
                    return;
                }
            }
        }

        public Task WaitForReceivedAsync(long bytes)
        {
            lock (_lock)
            {
                _thresholdBytes = bytes;
                _threshold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                if (_receivedCount >= bytes)
                {
                    _threshold.TrySetResult();
                }
                return _threshold.Task;
            }
        }

        /// <summary>What this peer received: a prefix of the other peer's frames, cut at a frame end, then one close.</summary>
        public void AssertReceivedWholeFramesThenOneClose(bool expectMasked)
        {
            var received = _received.ToArray();
            var sent = Peer.SentBytes();
            var closeLength = expectMasked ? 18 : 14;
            Assert.True(received.Length >= closeLength, $"only {received.Length} bytes received");
            var relayed = received.Length - closeLength;
            Assert.True(Peer.IsFrameEnd(relayed), $"the close frame starts at {relayed}, inside a frame of the {sent.Length} bytes sent");
            Assert.True(sent.AsSpan(0, relayed).SequenceEqual(received.AsSpan(0, relayed)), "the relayed frames differ from those sent");
            Assert.Equal((1001, "going away", expectMasked), TunnelTestKit.DecodeClose(received.AsSpan(relayed)));
        }

        private bool IsFrameEnd(long position)
        {
            lock (_lock)
            {
                return _frameEnds.Contains(position);
            }
        }

        private byte[] SentBytes()
        {
            lock (_lock)
            {
                return _sent.ToArray();
            }
        }
    }
}
