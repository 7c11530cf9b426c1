using System.Buffers;
using System.IO.Pipelines;

namespace Portico.Tests.Proxy;

/// <summary>WebSocket frames built by hand, and in-memory connections, for the tunnel tests.</summary>
internal static class TunnelTestKit
{
    /// <summary>
    /// One frame: FIN bit, <paramref name="opcode"/>, the shortest length encoding for <paramref name="payloadLength"/>
    /// (RFC 6455 §5.2), and when <paramref name="masked"/> a mask key from <paramref name="random"/> with the payload
    /// masked by it. The payload is random bytes.
    /// </summary>
    public static byte[] Frame(byte opcode, int payloadLength, bool masked, Random random, bool fin = true)
    {
        var lengthBytes = payloadLength < 126 ? 0 : payloadLength <= ushort.MaxValue ? 2 : 8;
        var headerLength = 2 + lengthBytes + (masked ? 4 : 0);
        var frame = new byte[headerLength + payloadLength];
        frame[0] = (byte)((fin ? 0x80 : 0) | opcode);
        frame[1] = (byte)((masked ? 0x80 : 0) | (lengthBytes == 0 ? payloadLength : lengthBytes == 2 ? 126 : 127));
        for (var i = 0; i < lengthBytes; i++)
        {
            frame[2 + i] = (byte)((ulong)payloadLength >> (8 * (lengthBytes - 1 - i)));
        }
        random.NextBytes(frame.AsSpan(headerLength));
        if (masked)
        {
            var key = frame.AsSpan(2 + lengthBytes, 4);
            random.NextBytes(key);
            for (var i = 0; i < payloadLength; i++)
            {
                frame[headerLength + i] ^= key[i & 3];
            }
        }
        return frame;
    }

    /// <summary>A close frame as an endpoint answers one: status 1001, no reason.</summary>
    public static byte[] CloseReply(bool masked, Random random)
    {
        var frame = Frame(0x8, 2, masked, random);
        var payload = frame.AsSpan(frame.Length - 2);
        payload[0] = 0x03;
        payload[1] = 0xE9;
        if (masked)
        {
            var key = frame.AsSpan(2, 4);
            payload[0] ^= key[0];
            payload[1] ^= key[1];
        }
        return frame;
    }

    /// <summary>
    /// Decodes a close frame the gateway wrote: returns (status, reason, masked), or throws when
    /// <paramref name="frame"/> is not exactly one final close frame.
    /// </summary>
    public static (int Status, string Reason, bool Masked) DecodeClose(ReadOnlySpan<byte> frame)
    {
        Assert.Equal(0x88, frame[0]);
        var masked = (frame[1] & 0x80) != 0;
        var length = frame[1] & 0x7F;
        Assert.True(length < 126, "a close frame's payload is at most 125 bytes");
        var offset = masked ? 6 : 2;
        Assert.Equal(offset + length, frame.Length);
        var payload = frame[offset..].ToArray();
        if (masked)
        {
            for (var i = 0; i < payload.Length; i++)
            {
                payload[i] ^= frame[2 + (i & 3)];
            }
        }
        return ((payload[0] << 8) | payload[1], System.Text.Encoding.UTF8.GetString(payload, 2, payload.Length - 2), masked);
    }

    public static async Task<byte[]> ReadExactlyAsync(PipeReader reader, int count)
    {
        var result = new byte[count];
        var filled = 0;
        while (filled < count)
        {
            var read = await reader.ReadAsync();
            var buffer = read.Buffer;
            var take = (int)Math.Min(buffer.Length, count - filled);
            buffer.Slice(0, take).CopyTo(result.AsSpan(filled));
            filled += take;
            reader.AdvanceTo(buffer.GetPosition(take));
            if (read.IsCompleted && filled < count)
            {
                throw new EndOfStreamException($"{filled} of {count} bytes before the end");
            }
        }
        return result;
    }

    public static async Task<byte[]> ReadToEndAsync(PipeReader reader)
    {
        using var all = new MemoryStream();
        while (true)
        {
            var read = await reader.ReadAsync();
            foreach (var segment in read.Buffer)
            {
                all.Write(segment.Span);
            }
            reader.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                return all.ToArray();
            }
        }
    }
}

/// <summary>
/// Both ends of an in-memory connection through the gateway: the peer (a test client or upstream) writes to
/// <see cref="PeerOutput"/> and reads <see cref="PeerInput"/>; the gateway uses <see cref="GatewaySide"/>.
/// </summary>
internal sealed class PipeConnection
{
    private readonly Pipe _toGateway = new(new PipeOptions(useSynchronizationContext: false));
    private readonly Pipe _fromGateway = new(new PipeOptions(useSynchronizationContext: false));

    public PipeConnection()
    {
        GatewaySide = new DuplexStream(_toGateway.Reader.AsStream(), _fromGateway.Writer.AsStream());
    }

    public Stream GatewaySide { get; }

    public PipeWriter PeerOutput => _toGateway.Writer;

    public PipeReader PeerInput => _fromGateway.Reader;

    /// <summary>Ends what the gateway sends (once the tunnel has ended), as Kestrel does when the request ends.</summary>
    public void CloseGatewaySide() => _fromGateway.Writer.Complete();

    /// <summary>What the gateway wrote and the peer has not read yet, once its side is closed (the tunnel has ended).</summary>
    public Task<byte[]> CloseGatewayAndReadRestAsync()
    {
        CloseGatewaySide();
        return TunnelTestKit.ReadToEndAsync(_fromGateway.Reader);
    }

    public async Task WriteAsync(ReadOnlyMemory<byte> bytes)
    {
        await _toGateway.Writer.WriteAsync(bytes);
    }

    /// <summary>True when the gateway wrote something not yet read (without waiting).</summary>
    public bool HasUnreadOutput()
    {
        if (!_fromGateway.Reader.TryRead(out var result))
        {
            return false;
        }
        var any = !result.Buffer.IsEmpty;
        _fromGateway.Reader.AdvanceTo(result.Buffer.Start);
        return any;
    }

    private sealed class DuplexStream(Stream input, Stream output) : Stream
    {
        public override bool CanRead => true;

        public override bool CanWrite => true;

        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            input.ReadAsync(buffer, cancellationToken);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            output.WriteAsync(buffer, cancellationToken);

        public override Task FlushAsync(CancellationToken cancellationToken) => output.FlushAsync(cancellationToken);

        public override void Flush() => output.Flush();

        public override int Read(byte[] buffer, int offset, int count) => input.Read(buffer, offset, count);

        public override void Write(byte[] buffer, int offset, int count) => output.Write(buffer, offset, count);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

/// <summary>A clock with timers that moves only when told (the tunnel's close timeout is a CancelAfter on it).</summary>
internal sealed class ManualTimerProvider : TimeProvider
{
    private readonly Lock _lock = new();
    private readonly List<ManualTimer> _timers = [];
    private long _ticks = TimeSpan.FromHours(1).Ticks;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => Volatile.Read(ref _ticks);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        timer.Change(dueTime, period);
        lock (_lock)
        {
            _timers.Add(timer);
        }
        return timer;
    }

    public void Advance(TimeSpan delta)
    {
        var now = Interlocked.Add(ref _ticks, delta.Ticks);
        List<ManualTimer> due = [];
        lock (_lock)
        {
            foreach (var timer in _timers)
            {
                if (timer.DueAt is { } at && at <= now)
                {
                    timer.DueAt = null;
                    due.Add(timer);
                }
            }
        }
        foreach (var timer in due)
        {
            timer.Fire();
        }
    }

    private sealed class ManualTimer(ManualTimerProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public long? DueAt { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._lock)
            {
                DueAt = dueTime == Timeout.InfiniteTimeSpan ? null : owner.GetTimestamp() + dueTime.Ticks;
            }
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose()
        {
            lock (owner._lock)
            {
                DueAt = null;
                owner._timers.Remove(this);
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
