using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A raw HTTP/1.1 client connection on a <see cref="TcpClient"/>: writes exactly the bytes a test gives it (malformed
/// and smuggling input included) and parses responses by RFC 9112 §6.3 framing (no body for HEAD, 1xx, 204, 304;
/// chunked; Content-Length; else until close), so a test can tell a clean message boundary from stray bytes.
/// Every read runs under a deadline.
/// </summary>
public sealed class RawHttpConnection : IAsyncDisposable
{
    private readonly TcpClient _client;
    private readonly NetworkStream _stream;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawHttpConnection(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
    }

    public static async Task<RawHttpConnection> ConnectAsync(int port, TimeSpan? timeout = null)
    {
        var client = new TcpClient { NoDelay = true };
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        await client.ConnectAsync("127.0.0.1", port, cts.Token);
        return new RawHttpConnection(client);
    }

    /// <summary>Writes the text as Latin-1 bytes. A reset while writing is swallowed: the server may answer and close first.</summary>
    public Task<bool> SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    /// <summary>Writes the bytes; returns false when the server closed or reset the connection meanwhile.</summary>
    public async Task<bool> SendAsync(byte[] bytes)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _stream.WriteAsync(bytes, cts.Token);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>
    /// Reads one response (1xx responses included, each on its own call). Returns null when the connection closed
    /// before a complete head arrived. Throws <see cref="TimeoutException"/> when nothing complete arrives in time.
    /// </summary>
    public async Task<RawResponse?> ReadResponseAsync(bool forHead = false, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        try
        {
            var headEnd = await FindAsync("\r\n\r\n"u8.ToArray(), cts.Token);
            if (headEnd < 0)
            {
                return null;
            }
            var headText = Encoding.Latin1.GetString(_buffer, _start, headEnd - _start);
            _start = headEnd + 4;
            var head = ParseHead(headText);
            byte[] body;
            var status = head.Status;
            if (forHead || status is >= 100 and < 200 or 204 or 304)
            {
                body = [];
            }
            else if (head.Header("Transfer-Encoding") is { } te && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
            {
                body = await ReadChunkedAsync(cts.Token);
            }
            else if (head.Header("Content-Length") is { } cl)
            {
                body = await ReadExactAsync(long.Parse(cl, CultureInfo.InvariantCulture), cts.Token);
            }
            else
            {
                body = await ReadToEndAsync(cts.Token);
            }
            return new RawResponse(head.Status, headText, head.Fields, body);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no complete response within the deadline; received so far: {Encoding.Latin1.GetString(_buffer, _start, _end - _start)}");
        }
    }

    /// <summary>True when the server closed the connection (EOF or reset) within the deadline, with no further bytes.</summary>
    public async Task<bool> IsClosedByServerAsync(TimeSpan timeout)
    {
        if (_end > _start)
        {
            return false;
        }
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            var read = await _stream.ReadAsync(_buffer.AsMemory(0, 1), cts.Token);
            return read == 0;
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private async Task<int> FindAsync(byte[] marker, CancellationToken cancellationToken)
    {
        while (true)
        {
            var index = _buffer.AsSpan(_start, _end - _start).IndexOf(marker);
            if (index >= 0)
            {
                return _start + index;
            }
            if (!await FillAsync(cancellationToken))
            {
                return -1;
            }
        }
    }

    private async Task<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            throw new InvalidOperationException("response head larger than the test buffer");
        }
        int read;
        try
        {
            read = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken);
        }
        catch (IOException)
        {
            return false;
        }
        _end += read;
        return read > 0;
    }

    private async Task<byte[]> ReadExactAsync(long length, CancellationToken cancellationToken)
    {
        var result = new MemoryStream();
        while (result.Length < length)
        {
            if (_end == _start && !await FillAsync(cancellationToken))
            {
                throw new IOException($"connection closed after {result.Length} of {length} body bytes");
            }
            var take = (int)Math.Min(length - result.Length, _end - _start);
            result.Write(_buffer, _start, take);
            _start += take;
        }
        return result.ToArray();
    }

    private async Task<byte[]> ReadChunkedAsync(CancellationToken cancellationToken)
    {
        var result = new MemoryStream();
        while (true)
        {
            var lineEnd = await FindAsync("\r\n"u8.ToArray(), cancellationToken);
            if (lineEnd < 0)
            {
                throw new IOException("connection closed inside a chunked body");
            }
            var sizeText = Encoding.Latin1.GetString(_buffer, _start, lineEnd - _start).Split(';')[0].Trim();
            _start = lineEnd + 2;
            var size = long.Parse(sizeText, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (size == 0)
            {
                // Trailer section: fields until an empty line.
                while (true)
                {
                    var end = await FindAsync("\r\n"u8.ToArray(), cancellationToken);
                    if (end < 0)
                    {
                        throw new IOException("connection closed inside the trailer section");
                    }
                    var empty = end == _start;
                    _start = end + 2;
                    if (empty)
                    {
                        return result.ToArray();
                    }
                }
            }
            result.Write(await ReadExactAsync(size, cancellationToken));
            var crlf = await ReadExactAsync(2, cancellationToken);
            if (crlf[0] != '\r' || crlf[1] != '\n')
            {
                throw new IOException("chunk not followed by CRLF");
            }
        }
    }

    private async Task<byte[]> ReadToEndAsync(CancellationToken cancellationToken)
    {
        var result = new MemoryStream();
        while (true)
        {
            if (_end > _start)
            {
                result.Write(_buffer, _start, _end - _start);
                _start = _end;
            }
            if (!await FillAsync(cancellationToken))
            {
                return result.ToArray();
            }
        }
    }

    private static ResponseHead ParseHead(string text)
    {
        var lines = text.Split("\r\n");
        var statusLine = lines[0].Split(' ', 3);
        var status = statusLine.Length > 1 && int.TryParse(statusLine[1], NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : 0;
        var head = new ResponseHead(statusLine[0], status, []);
        for (var i = 1; i < lines.Length; i++)
        {
            var colon = lines[i].IndexOf(':');
            if (colon > 0)
            {
                head.Fields.Add(new KeyValuePair<string, string>(lines[i][..colon].Trim(), lines[i][(colon + 1)..].Trim()));
            }
        }
        return head;
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _client.Dispose();
    }
}

/// <summary>One response read off a raw connection.</summary>
public sealed record RawResponse(int Status, string HeadText, List<KeyValuePair<string, string>> Fields, byte[] Body)
{
    public string? Header(string name)
    {
        foreach (var (key, value) in Fields)
        {
            if (key.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }
        return null;
    }

    public string BodyText => Encoding.UTF8.GetString(Body);

    public override string ToString() => HeadText + "\r\n\r\n" + (Body.Length > 500 ? Encoding.Latin1.GetString(Body, 0, 500) + "..." : Encoding.Latin1.GetString(Body));
}
