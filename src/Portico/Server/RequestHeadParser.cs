using System.Text;

namespace Portico.Server;

/// <summary>The request line and what the headers decided, as offsets into the head.</summary>
internal struct RequestLine
{
    public int MethodLength;
    public int TargetStart;
    public int TargetLength;
    /// <summary>Length of the path part of the target (before "?").</summary>
    public int PathLength;
    /// <summary>1 for HTTP/1.1, 0 for HTTP/1.0.</summary>
    public int Minor;
    /// <summary>The connection may carry another request after this one.</summary>
    public bool KeepAlive;
    /// <summary>Connection names headers beyond close/keep-alive: those are hop-by-hop too.</summary>
    public bool ConnectionNamesHeaders;
}

/// <summary>The limits the parser enforces, from Kestrel's options, so both servers refuse the same requests.</summary>
internal readonly record struct RequestHeadLimits(int MaxRequestLineSize, int MaxRequestHeadersTotalSize, int MaxRequestHeaderCount);

/// <summary>
/// Parses an HTTP/1.1 request head (RFC 9112 §3, §5) for Portico's own server, in one pass over the bytes without
/// allocating. It accepts the common, unambiguous form only: an origin-form target of plain path characters (no
/// percent-encoding or dot segments in the path), HTTP/1.0 or 1.1, CRLF line ends, header names that are tokens,
/// ASCII values without control characters, one Host, and no request body. Everything else (a body, an upgrade,
/// Expect, a malformed or oversized head, an absolute-form target) returns false, and the connection goes on in
/// Kestrel's HTTP/1.1 implementation from this request: it knows how to serve or refuse each of those, so both
/// servers answer every request the same way and the fast path never has to.
/// </summary>
internal static class RequestHeadParser
{
    /// <summary>
    /// Parses <paramref name="head"/>, which ends with the empty line, into <paramref name="line"/> and
    /// <paramref name="headers"/>. Returns false when the request is not for this server (see the class summary).
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> head, RequestHeaders headers, RequestHeadLimits limits, out RequestLine line)
    {
        line = default;
        var lineEnd = head.IndexOf("\r\n"u8);
        if (lineEnd <= 0 || lineEnd > limits.MaxRequestLineSize)
        {
            return false;
        }
        var requestLine = head[..lineEnd];
        var space = requestLine.IndexOf((byte)' ');
        if (space <= 0 || requestLine[..space].IndexOfAnyExcept(Http1Syntax.TokenChars) >= 0)
        {
            return false;
        }
        line.MethodLength = space;
        if (requestLine[..space].SequenceEqual("CONNECT"u8))
        {
            return false;
        }
        var rest = requestLine[(space + 1)..];
        space = rest.IndexOf((byte)' ');
        if (space <= 0)
        {
            return false;
        }
        var target = rest[..space];
        var version = rest[(space + 1)..];
        if (version.SequenceEqual("HTTP/1.1"u8))
        {
            line.Minor = 1;
        }
        else if (!version.SequenceEqual("HTTP/1.0"u8))
        {
            return false;
        }
        if (target[0] != (byte)'/')
        {
            return false;
        }
        var question = target.IndexOf((byte)'?');
        var path = question < 0 ? target : target[..question];
        // A dot segment ("/./", "/../") must be removed before routing (RFC 3986 §5.2.4); Kestrel does that.
        if (path.IndexOfAnyExcept(Http1Syntax.PlainPathChars) >= 0 || path.IndexOf("/."u8) >= 0)
        {
            return false;
        }
        if (question >= 0 && target[(question + 1)..].IndexOfAnyExcept(Http1Syntax.QueryChars) >= 0)
        {
            return false;
        }
        line.TargetStart = line.MethodLength + 1;
        line.TargetLength = target.Length;
        line.PathLength = path.Length;

        var pos = lineEnd + 2;
        if (head.Length - pos > limits.MaxRequestHeadersTotalSize)
        {
            return false;
        }
        var hosts = 0;
        var count = 0;
        var close = false;
        var keepAlive = false;
        while (true)
        {
            var end = head[pos..].IndexOf("\r\n"u8);
            if (end < 0)
            {
                return false;
            }
            if (end == 0)
            {
                if (pos + 2 != head.Length)
                {
                    return false;
                }
                break;
            }
            if (++count > limits.MaxRequestHeaderCount)
            {
                return false;
            }
            var headerLine = head.Slice(pos, end);
            var colon = headerLine.IndexOf((byte)':');
            // A name is a token: no whitespace before the colon (RFC 9112 §5.1), no obs-fold (a line starting with
            // whitespace fails here too), no bare CR or LF.
            if (colon <= 0 || headerLine[..colon].IndexOfAnyExcept(Http1Syntax.TokenChars) >= 0)
            {
                return false;
            }
            var valueStart = colon + 1;
            var valueEnd = headerLine.Length;
            while (valueStart < valueEnd && headerLine[valueStart] is (byte)' ' or (byte)'\t')
            {
                valueStart++;
            }
            while (valueEnd > valueStart && headerLine[valueEnd - 1] is (byte)' ' or (byte)'\t')
            {
                valueEnd--;
            }
            var value = headerLine[valueStart..valueEnd];
            if (!IsPlainValue(value))
            {
                return false;
            }
            var known = RequestHeaderNames.Find(headerLine[..colon]);
            switch (known)
            {
                case RequestHeaderNames.Host:
                    if (++hosts > 1 || value.IndexOfAnyExcept(Http1Syntax.HostChars) >= 0)
                    {
                        return false;
                    }
                    break;
                case RequestHeaderNames.ContentLength:
                    // Only an explicit empty body stays here; any body is streamed by Kestrel's implementation.
                    if (!value.SequenceEqual("0"u8))
                    {
                        return false;
                    }
                    break;
                case RequestHeaderNames.TransferEncoding:
                case RequestHeaderNames.Upgrade:
                case RequestHeaderNames.Expect:
                case RequestHeaderNames.Http2Settings:
                    return false;
                case RequestHeaderNames.Connection:
                    if (!ReadConnection(value, ref close, ref keepAlive, ref line.ConnectionNamesHeaders))
                    {
                        return false;
                    }
                    break;
            }
            headers.AddRaw(known, pos, colon, pos + valueStart, value.Length);
            pos += end + 2;
        }
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1; Kestrel answers 400 otherwise.
        if (line.Minor == 1 ? hosts != 1 : hosts > 1)
        {
            return false;
        }
        line.KeepAlive = line.Minor == 1 ? !close : keepAlive && !close;
        return true;
    }

    /// <summary>The method as a string: the shared one for the common methods.</summary>
    public static string Method(ReadOnlySpan<byte> method) => method.Length switch
    {
        3 when method.SequenceEqual("GET"u8) => Microsoft.AspNetCore.Http.HttpMethods.Get,
        3 when method.SequenceEqual("PUT"u8) => Microsoft.AspNetCore.Http.HttpMethods.Put,
        4 when method.SequenceEqual("HEAD"u8) => Microsoft.AspNetCore.Http.HttpMethods.Head,
        4 when method.SequenceEqual("POST"u8) => Microsoft.AspNetCore.Http.HttpMethods.Post,
        5 when method.SequenceEqual("PATCH"u8) => Microsoft.AspNetCore.Http.HttpMethods.Patch,
        5 when method.SequenceEqual("TRACE"u8) => Microsoft.AspNetCore.Http.HttpMethods.Trace,
        6 when method.SequenceEqual("DELETE"u8) => Microsoft.AspNetCore.Http.HttpMethods.Delete,
        7 when method.SequenceEqual("OPTIONS"u8) => Microsoft.AspNetCore.Http.HttpMethods.Options,
        _ => Encoding.ASCII.GetString(method),
    };

    /// <summary>Printable ASCII and HTAB only: Kestrel refuses control characters, and decodes other bytes differently.</summary>
    private static bool IsPlainValue(ReadOnlySpan<byte> value)
    {
        var bad = value.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7E);
        while (bad >= 0)
        {
            if (value[bad] != (byte)'\t')
            {
                return false;
            }
            value = value[(bad + 1)..];
            bad = value.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7E);
        }
        return true;
    }

    /// <summary>Reads the Connection tokens; false for "upgrade" (an upgrade is Kestrel's to handle).</summary>
    private static bool ReadConnection(ReadOnlySpan<byte> value, ref bool close, ref bool keepAlive, ref bool custom)
    {
        while (!value.IsEmpty)
        {
            var comma = value.IndexOf((byte)',');
            var token = Http1Syntax.TrimOws(comma < 0 ? value : value[..comma]);
            value = comma < 0 ? default : value[(comma + 1)..];
            if (token.IsEmpty)
            {
                continue;
            }
            if (Ascii.EqualsIgnoreCase(token, "close"u8))
            {
                close = true;
            }
            else if (Ascii.EqualsIgnoreCase(token, "keep-alive"u8))
            {
                keepAlive = true;
            }
            else if (Ascii.EqualsIgnoreCase(token, "upgrade"u8))
            {
                return false;
            }
            else
            {
                custom = true;
            }
        }
        return true;
    }
}
