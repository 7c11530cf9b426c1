using System.Buffers;
using System.IO.Pipelines;
using System.Text;

namespace Portico.Server;

/// <summary>
/// HttpResponse.BodyWriter on Portico's HTTP/1.1 server. With a Content-Length (or HTTP/1.0 close framing) the memory it
/// hands out is the connection's output pipe itself, so a body read from an upstream socket lands where it is sent from;
/// a chunked body goes through a scratch buffer, since each chunk needs its size in front.
/// </summary>
internal sealed class ResponseBodyWriter(Http1RequestContext context) : PipeWriter
{
    private byte[]? _scratch;

    public override void Advance(int bytes) => context.AdvanceBody(bytes);

    public override Memory<byte> GetMemory(int sizeHint = 0) => context.GetBodyMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => context.GetBodyMemory(sizeHint).Span;

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => context.FlushAsync(cancellationToken);

    public override void CancelPendingFlush() => context.Connection.Output.CancelPendingFlush();

    /// <summary>Completing the body writer ends nothing: the server ends the response when the app returns, as Kestrel does.</summary>
    public override void Complete(Exception? exception = null)
    {
        if (exception is not null)
        {
            context.Abort();
        }
    }

    public override bool CanGetUnflushedBytes => false;

    internal Memory<byte> ScratchMemory(int sizeHint)
    {
        var size = Math.Max(sizeHint, 4096);
        if (_scratch is null || _scratch.Length < size)
        {
            if (_scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(_scratch);
            }
            _scratch = ArrayPool<byte>.Shared.Rent(size);
        }
        return _scratch;
    }

    internal ReadOnlySpan<byte> ScratchSpan(int count) => _scratch.AsSpan(0, count);

    internal void Reset()
    {
        if (_scratch is not null)
        {
            ArrayPool<byte>.Shared.Return(_scratch);
            _scratch = null;
        }
    }
}

/// <summary>HttpResponse.Body on Portico's HTTP/1.1 server: each write goes out with the response's framing and is flushed, as Kestrel's.</summary>
internal sealed class ResponseBodyStream(Http1RequestContext context) : Stream
{
    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        context.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        context.WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async Task FlushAsync(CancellationToken cancellationToken) => await context.FlushAsync(cancellationToken);

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (!context.AllowSynchronousIO)
        {
            throw new InvalidOperationException("Synchronous operations are disallowed. Call WriteAsync or set AllowSynchronousIO to true instead.");
        }
        context.WriteBody(buffer);
        context.FlushAsync(default).AsTask().GetAwaiter().GetResult();
    }

    public override void Flush()
    {
        if (!context.AllowSynchronousIO)
        {
            throw new InvalidOperationException("Synchronous operations are disallowed. Call FlushAsync or set AllowSynchronousIO to true instead.");
        }
        context.FlushAsync(default).AsTask().GetAwaiter().GetResult();
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>The Date header line, "Date: &lt;IMF-fixdate&gt;\r\n", renewed once a second by the server's heartbeat.</summary>
internal static class DateHeader
{
    private static byte[] _current = Build(DateTimeOffset.UtcNow);

    public static byte[] Current => Volatile.Read(ref _current);

    public static void Update(DateTimeOffset now) => Volatile.Write(ref _current, Build(now));

    private static byte[] Build(DateTimeOffset now) => Encoding.ASCII.GetBytes("Date: " + now.ToString("r", System.Globalization.CultureInfo.InvariantCulture) + "\r\n");
}
