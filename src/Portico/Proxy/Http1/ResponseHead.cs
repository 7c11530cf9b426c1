using System.Buffers.Text;
using System.Text;

namespace Portico.Proxy.Http1;

/// <summary>How the body of an upstream HTTP/1.1 response is delimited (RFC 9112 §6.3).</summary>
internal enum BodyFraming : byte
{
    /// <summary>No body: a HEAD request, or a 1xx, 204 or 304 answer.</summary>
    None,
    /// <summary>Exactly <see cref="ResponseHead.ContentLength"/> bytes.</summary>
    ContentLength,
    /// <summary>Transfer-Encoding ending in chunked.</summary>
    Chunked,
    /// <summary>Everything until the upstream closes the connection.</summary>
    UntilClose,
}

/// <summary>
/// The facts of an upstream response head that the exchange needs before copying anything, found by one pass over
/// the raw bytes without allocating: status, framing, and whether the connection may carry another request.
/// </summary>
internal struct ResponseHead
{
    public int Status;
    /// <summary>1 for HTTP/1.1, 0 for HTTP/1.0.</summary>
    public int Minor;
    public BodyFraming Framing;
    public long ContentLength;
    /// <summary>False when the connection must be closed after this response (Connection: close, HTTP/1.0, close framing).</summary>
    public bool KeepAlive;
    /// <summary>The Connection header names tokens other than close/keep-alive: those headers are hop-by-hop too.</summary>
    public bool ConnectionNamesHeaders;
    /// <summary>A grpc-status header is among the headers (a gRPC "Trailers-Only" answer): headers must not be flushed early.</summary>
    public bool HasGrpcStatus;
    /// <summary>Offset of the first header line (just past the status line's CRLF).</summary>
    public int HeadersStart;
    /// <summary>Length of the whole head including the final CRLFCRLF: the body starts here.</summary>
    public int Length;

    /// <summary>
    /// Finds the end of a response head in <paramref name="buffer"/>: the index just past CRLFCRLF, or -1 when it has
    /// not all arrived. A bare LF line end is accepted as RFC 9112 §2.2 allows.
    /// </summary>
    public static int FindEnd(ReadOnlySpan<byte> buffer)
    {
        var from = 0;
        while (true)
        {
            var lf = buffer[from..].IndexOf((byte)'\n');
            if (lf < 0)
            {
                return -1;
            }
            lf += from;
            // The line that ends here is empty when the next byte is LF, or CR LF.
            var next = lf + 1;
            if (next >= buffer.Length)
            {
                return -1;
            }
            if (buffer[next] == '\n')
            {
                return next + 1;
            }
            if (buffer[next] == '\r')
            {
                if (next + 1 >= buffer.Length)
                {
                    return -1;
                }
                if (buffer[next + 1] == '\n')
                {
                    return next + 2;
                }
            }
            from = next;
        }
    }

    /// <summary>
    /// Parses the head in <paramref name="head"/> (which ends with its empty line). Returns null on success, else why
    /// the head is malformed (the exchange answers 502 and closes the connection).
    /// </summary>
    public static string? TryParse(ReadOnlySpan<byte> head, bool requestWasHead, out ResponseHead result)
    {
        result = default;
        var lineEnd = head.IndexOf((byte)'\n');
        if (lineEnd < 0)
        {
            return "no status line";
        }
        var statusLine = TrimCr(head[..lineEnd]);
        // HTTP-version SP 3DIGIT SP [reason]: "HTTP/1.1 200 OK"; a missing reason (and its SP) is tolerated.
        if (statusLine.Length < 12 || !statusLine.StartsWith("HTTP/1."u8) || statusLine[8] != ' '
            || (statusLine.Length > 12 && statusLine[12] != ' '))
        {
            return "malformed status line";
        }
        var minor = statusLine[7] - '0';
        var d0 = statusLine[9] - '0';
        var d1 = statusLine[10] - '0';
        var d2 = statusLine[11] - '0';
        if ((uint)minor > 1 || (uint)d0 > 9 || (uint)d1 > 9 || (uint)d2 > 9 || d0 == 0)
        {
            return "malformed status line";
        }
        result.Status = d0 * 100 + d1 * 10 + d2;
        result.Minor = minor;
        result.HeadersStart = lineEnd + 1;
        result.Length = head.Length;

        var keepAlive = minor == 1;
        var chunked = false;
        var otherCoding = false;
        long contentLength = -1;
        var pos = result.HeadersStart;
        while (pos < head.Length)
        {
            var rest = head[pos..];
            var end = rest.IndexOf((byte)'\n');
            var line = TrimCr(rest[..end]);
            pos += end + 1;
            if (line.IsEmpty)
            {
                break;
            }
            if (!TrySplit(line, out var name, out var value))
            {
                return "malformed header line";
            }
            if (name.Length == 14 && Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
            {
                // A list of equal values is one value (RFC 9110 §8.6); anything else is an error.
                foreach (var range in value.Split((byte)','))
                {
                    var item = Trim(value[range]);
                    if (item.IsEmpty || !Utf8Parser.TryParse(item, out long parsed, out var consumed) || consumed != item.Length || parsed < 0
                        || item[0] == '+' || item[0] == '-')
                    {
                        return "invalid Content-Length";
                    }
                    if (contentLength >= 0 && parsed != contentLength)
                    {
                        return "conflicting Content-Length values";
                    }
                    contentLength = parsed;
                }
            }
            else if (name.Length == 17 && Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
            {
                // Only the last coding decides the framing; a body not ending in chunked runs until close (§6.3).
                foreach (var range in value.Split((byte)','))
                {
                    var coding = Trim(value[range]);
                    if (coding.IsEmpty)
                    {
                        continue;
                    }
                    chunked = Ascii.EqualsIgnoreCase(coding, "chunked"u8);
                    otherCoding |= !chunked;
                }
            }
            else if (name.Length == 10 && Ascii.EqualsIgnoreCase(name, "Connection"u8))
            {
                foreach (var range in value.Split((byte)','))
                {
                    var token = Trim(value[range]);
                    if (Ascii.EqualsIgnoreCase(token, "close"u8))
                    {
                        keepAlive = false;
                    }
                    else if (Ascii.EqualsIgnoreCase(token, "keep-alive"u8))
                    {
                        // HTTP/1.0 keep-alive is not relied on: the connection closes after a 1.0 answer.
                    }
                    else if (!token.IsEmpty)
                    {
                        result.ConnectionNamesHeaders = true;
                    }
                }
            }
            else if (name.Length == 11 && Ascii.EqualsIgnoreCase(name, "grpc-status"u8))
            {
                result.HasGrpcStatus = true;
            }
        }

        var status = result.Status;
        if (requestWasHead || status < 200 || status == 204 || status == 304)
        {
            result.Framing = BodyFraming.None;
        }
        else if (chunked || otherCoding)
        {
            // Transfer-Encoding wins over Content-Length; a message with both may be an attack on someone's parser,
            // so its connection is not reused (RFC 9112 §6.3 ¶3).
            result.Framing = chunked ? BodyFraming.Chunked : BodyFraming.UntilClose;
            if (contentLength >= 0 || !chunked)
            {
                keepAlive = false;
            }
        }
        else if (contentLength >= 0)
        {
            result.Framing = BodyFraming.ContentLength;
            result.ContentLength = contentLength;
        }
        else
        {
            result.Framing = BodyFraming.UntilClose;
            keepAlive = false;
        }
        result.KeepAlive = keepAlive;
        return null;
    }

    /// <summary>Splits "name: value" (no whitespace allowed before the colon, RFC 9112 §5.1; obs-fold rejected).</summary>
    public static bool TrySplit(ReadOnlySpan<byte> line, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        var colon = line.IndexOf((byte)':');
        if (colon <= 0)
        {
            name = value = default;
            return false;
        }
        name = line[..colon];
        value = Trim(line[(colon + 1)..]);
        if (!IsToken(name) || value.IndexOfAny((byte)'\r', (byte)'\n', (byte)0) >= 0)
        {
            return false;
        }
        return true;
    }

    /// <summary>
    /// Splits a line <see cref="TryParse"/> has accepted: "name:" and the value without its OWS. The copies of the head
    /// walk it again with this, without checking again what TryParse checked.
    /// </summary>
    public static void SplitValid(ReadOnlySpan<byte> line, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        var colon = line.IndexOf((byte)':');
        name = line[..colon];
        value = Trim(line[(colon + 1)..]);
    }

    // tchar (RFC 9110 §5.6.2), the request parser's set: one vectorised search, where a loop asking for each byte
    // whether it is a delimiter took most of the parse.
    private static bool IsToken(ReadOnlySpan<byte> name) => name.IndexOfAnyExcept(Server.Http1Syntax.TokenChars) < 0;

    public static ReadOnlySpan<byte> TrimCr(ReadOnlySpan<byte> line) =>
        line.Length > 0 && line[^1] == '\r' ? line[..^1] : line;

    public static ReadOnlySpan<byte> Trim(ReadOnlySpan<byte> value) => value.Trim(" \t"u8);
}
