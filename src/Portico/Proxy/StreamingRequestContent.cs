using System.Buffers;
using System.Net;

namespace Portico.Proxy;

/// <summary>
/// The downstream request body as upstream <see cref="HttpContent"/>: streamed chunk by chunk as
/// SocketsHttpHandler asks for it, never buffered whole. Tracks whether a byte was read (then the request can no
/// longer be replayed) and how the copy ended, so the forwarder can tell a client failure from an upstream one.
/// </summary>
internal sealed class StreamingRequestContent : HttpContent
{
    private const int BufferSize = 16 * 1024;
    private readonly Stream _source;
    private readonly ProxySession _session;
    private readonly CancellationToken _requestAborted;
    private readonly TaskCompletionSource<bool> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public StreamingRequestContent(Stream source, ProxySession session, CancellationToken requestAborted)
    {
        _source = source;
        _session = session;
        _requestAborted = requestAborted;
    }

    /// <summary>Completes when the copy ends: true when the whole body went upstream.</summary>
    public Task<bool> Completion => _done.Task;

    /// <summary>The exception when reading from the client failed (as opposed to writing upstream).</summary>
    public Exception? ReadError { get; private set; }

    /// <summary>The exception when writing upstream failed.</summary>
    public Exception? WriteError { get; private set; }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        byte[]? buffer = null;
        try
        {
            while (true)
            {
                int read;
                try
                {
                    // :: Zero-byte read first, so an idle stream (gRPC, long uploads) holds no buffer while waiting.
                    if (buffer is null)
                    {
                        read = await _source.ReadAsync(Memory<byte>.Empty, cancellationToken);
                        buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
                    }
                    read = await _source.ReadAsync(buffer.AsMemory(), cancellationToken);
                }
                catch (Exception ex)
                {
                    ReadError = ex;
                    throw;
                }
                if (read == 0)
                {
                    break;
                }
                _session.RequestBodyStarted = true;
                _session.RequestBodyBytes += read;
                try
                {
                    await stream.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                    // Flush each chunk: a streaming client (gRPC, SSE uploads) expects it to reach the upstream now.
                    await stream.FlushAsync(cancellationToken);
                }
                catch (Exception ex)
                {
                    WriteError = ex;
                    throw;
                }
            }
            _done.TrySetResult(true);
        }
        catch
        {
            _done.TrySetResult(false);
            throw;
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    protected override bool TryComputeLength(out long length)
    {
        // The Content-Length header, when the client sent one, is copied into Headers.ContentLength by the
        // forwarder; otherwise the length is unknown and HTTP/1.1 upstreams get chunked encoding.
        length = -1;
        return false;
    }

    /// <summary>Reading the body for anything but forwarding is a bug.</summary>
    protected override Task<Stream> CreateContentReadStreamAsync() => throw new InvalidOperationException("The proxied request body is write-only.");

    internal bool ClientAborted => _requestAborted.IsCancellationRequested;
}
