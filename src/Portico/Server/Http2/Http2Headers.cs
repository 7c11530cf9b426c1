using System.Buffers;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.Proxy.Http1;

namespace Portico.Server.Http2;

/// <summary>
/// Takes a request's decoded header fields into its <see cref="Http2Stream"/>, checking what RFC 9113 §8.2-8.3 requires
/// of them: lowercase names, no connection-specific fields, pseudo-header fields first, once each, and the right set
/// for the method. A malformed request is reset with PROTOCOL_ERROR (RFC 9113 §8.1.1), as Kestrel does. Cookie fields
/// are joined with "; " (RFC 9113 §8.2.3), since upstreams may speak HTTP/1.1.
/// </summary>
internal sealed class RequestHeadSink : IHpackSink
{
    private static readonly int CookieIndex = RequestHeaderNames.Find("cookie"u8);
    private static readonly bool[] TokenChars = BuildTokenChars();

    private Http2Stream? _stream;
    private bool _trailers;
    private bool _sawRegular;
    private bool _method;
    private bool _scheme;
    private bool _path;
    private bool _authority;
    private bool _protocol;
    private bool _isConnect;
    private int _count;
    private int _maxCount;
    private byte[]? _cookies;
    private int _cookiesLength;

    /// <summary>Why the request is malformed, or null.</summary>
    public string? Error { get; private set; }

    /// <summary>More header fields than Kestrel's <c>Limits.MaxRequestHeaderCount</c>: the request is answered 431.</summary>
    public bool TooMany { get; private set; }

    /// <summary>Set by the connection for a HEADERS frame whose priority names its own stream.</summary>
    public bool SelfDependent { get; set; }

    public void Begin(Http2Stream? stream, bool trailers, int maxCount = 100)
    {
        _stream = stream;
        _trailers = trailers;
        _sawRegular = _method = _scheme = _path = _authority = _protocol = _isConnect = false;
        _count = 0;
        _maxCount = maxCount;
        _cookiesLength = 0;
        Error = null;
        TooMany = false;
    }

    public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        if (Error is not null)
        {
            return;
        }
        if (name.IsEmpty)
        {
            Error = "an empty header name";
            return;
        }
        if (name[0] == (byte)':')
        {
            OnPseudo(name, value);
            return;
        }
        _sawRegular = true;
        if (!IsLowercaseToken(name))
        {
            Error = "a header name that is not a lowercase token";
            return;
        }
        if (!IsValidValue(value))
        {
            Error = "a header value with a control character or surrounding whitespace";
            return;
        }
        if (++_count > _maxCount)
        {
            // Answered 431, as Kestrel does; the rest of the block is still checked.
            TooMany = true;
            return;
        }
        var known = RequestHeaderNames.Find(name);
        switch (known)
        {
            case RequestHeaderNames.Connection or RequestHeaderNames.KeepAlive or RequestHeaderNames.ProxyConnection
                or RequestHeaderNames.TransferEncoding or RequestHeaderNames.Upgrade:
                Error = "a connection-specific header field";
                return;
            case RequestHeaderNames.TE when !value.SequenceEqual("trailers"u8):
                Error = "TE other than \"trailers\"";
                return;
        }
        if (_stream is null)
        {
            // Trailers are checked, not kept: the upstream request has no place for them.
            return;
        }
        if (known == RequestHeaderNames.Host && _authority)
        {
            // :authority wins (RFC 9113 §8.3.1); it is already the Host header.
            return;
        }
        if (known == CookieIndex)
        {
            AppendCookie(value);
            return;
        }
        if (known == RequestHeaderNames.ContentLength)
        {
            if (!long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var length)
                || (_stream.DeclaredLength >= 0 && _stream.DeclaredLength != length))
            {
                Error = "an invalid Content-Length";
                return;
            }
            _stream.DeclaredLength = length;
        }
        _stream.AddHeader(known, name, value);
    }

    private void OnPseudo(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        if (_trailers || _sawRegular)
        {
            Error = "a pseudo-header field in trailers or after a regular field";
            return;
        }
        if (!IsValidValue(value) || value.IndexOf((byte)' ') >= 0 && !name.SequenceEqual(":authority"u8))
        {
            Error = "an invalid pseudo-header value";
            return;
        }
        var stream = _stream;
        switch (name.Length)
        {
            case 7 when name.SequenceEqual(":method"u8):
                if (_method || value.IsEmpty || !IsToken(value))
                {
                    Error = "a missing, repeated or invalid :method";
                    return;
                }
                _method = true;
                _isConnect = value.SequenceEqual("CONNECT"u8);
                stream?.SetMethod(value);
                return;
            case 7 when name.SequenceEqual(":scheme"u8):
                if (_scheme || value.IsEmpty)
                {
                    Error = "a repeated or empty :scheme";
                    return;
                }
                _scheme = true;
                return;
            case 5 when name.SequenceEqual(":path"u8):
                if (_path || value.IsEmpty || (value[0] != (byte)'/' && !value.SequenceEqual("*"u8)))
                {
                    Error = "a repeated, empty or non-origin-form :path";
                    return;
                }
                _path = true;
                stream?.SetTarget(value);
                return;
            case 10 when name.SequenceEqual(":authority"u8):
                if (_authority)
                {
                    Error = "a repeated :authority";
                    return;
                }
                _authority = true;
                if (!value.IsEmpty)
                {
                    stream?.AddHeader(RequestHeaderNames.Host, "host"u8, value);
                }
                return;
            case 9 when name.SequenceEqual(":protocol"u8):
                if (_protocol || value.IsEmpty)
                {
                    Error = "a repeated or empty :protocol";
                    return;
                }
                _protocol = true;
                stream?.SetExtendedConnect(value);
                return;
            default:
                Error = "an unknown pseudo-header field";
                return;
        }
    }

    private void AppendCookie(ReadOnlySpan<byte> value)
    {
        var needed = _cookiesLength + value.Length + 2;
        if (_cookies is null || _cookies.Length < needed)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(needed, 256));
            if (_cookies is not null)
            {
                Buffer.BlockCopy(_cookies, 0, larger, 0, _cookiesLength);
                ArrayPool<byte>.Shared.Return(_cookies);
            }
            _cookies = larger;
        }
        if (_cookiesLength > 0)
        {
            _cookies[_cookiesLength++] = (byte)';';
            _cookies[_cookiesLength++] = (byte)' ';
        }
        value.CopyTo(_cookies.AsSpan(_cookiesLength));
        _cookiesLength += value.Length;
    }

    /// <summary>The block is complete: null when the request is well-formed, else why not.</summary>
    public string? Finish(bool endStream)
    {
        if (_cookies is { } cookies)
        {
            if (_cookiesLength > 0 && Error is null)
            {
                _stream?.AddHeader(CookieIndex, "cookie"u8, cookies.AsSpan(0, _cookiesLength));
            }
            _cookiesLength = 0;
            if (cookies.Length > 4096)
            {
                _cookies = null;
                ArrayPool<byte>.Shared.Return(cookies);
            }
        }
        if (Error is not null)
        {
            return Error;
        }
        if (_protocol)
        {
            // Extended CONNECT (RFC 8441 §4): CONNECT with :scheme, :path and :authority.
            if (!_isConnect || !_scheme || !_path || !_authority)
            {
                return "an extended CONNECT without CONNECT, :scheme, :path or :authority";
            }
            return null;
        }
        if (_isConnect)
        {
            return "CONNECT (tunnelling) is not supported over HTTP/2";
        }
        if (!_method || !_scheme || !_path)
        {
            return "a request without :method, :scheme or :path";
        }
        if (endStream && _stream is { DeclaredLength: > 0 })
        {
            return "a Content-Length above 0 on a request without a body";
        }
        return null;
    }

    private static bool IsLowercaseToken(ReadOnlySpan<byte> name)
    {
        foreach (var b in name)
        {
            if (!TokenChars[b] || (b >= (byte)'A' && b <= (byte)'Z'))
            {
                return false;
            }
        }
        return true;
    }

    private static bool IsToken(ReadOnlySpan<byte> value)
    {
        foreach (var b in value)
        {
            if (!TokenChars[b])
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>RFC 9113 §8.2.1: no NUL, CR or LF, and no leading or trailing space or tab.</summary>
    private static bool IsValidValue(ReadOnlySpan<byte> value)
    {
        if (value.IndexOfAny((byte)0, (byte)'\r', (byte)'\n') >= 0)
        {
            return false;
        }
        return value.IsEmpty || (value[0] is not ((byte)' ' or (byte)'\t') && value[^1] is not ((byte)' ' or (byte)'\t'));
    }

    private static bool[] BuildTokenChars()
    {
        var table = new bool[256];
        for (var c = '0'; c <= '9'; c++)
        {
            table[c] = true;
        }
        for (var c = 'a'; c <= 'z'; c++)
        {
            table[c] = true;
        }
        for (var c = 'A'; c <= 'Z'; c++)
        {
            table[c] = true;
        }
        foreach (var c in "!#$%&'*+-.^_`|~")
        {
            table[c] = true;
        }
        return table;
    }
}

/// <summary>
/// Encodes a response head or trailers as an HPACK block: indexed status codes, static-table names where there is one,
/// literal values without indexing and without Huffman (bytes are cheap on the links a proxy sits on; CPU is not).
/// Connection-specific fields are left out (RFC 9113 §8.2.2); Date is added when the app set none, as Kestrel does.
/// </summary>
internal static class ResponseHeadEncoder
{
    private static readonly int[] Skip =
    [
        HeaderStrings.Connection, HeaderStrings.KeepAlive, HeaderStrings.TransferEncoding,
        HeaderStrings.Find("Upgrade"), HeaderStrings.Find("Proxy-Connection"),
    ];

    private const int NameLimit = 256;

    public static int MaxLength(ResponseHeaders headers)
    {
        var total = 64 + DateHeader.Current.Length;
        for (var i = 0; i < headers.EntryCount; i++)
        {
            ref var entry = ref headers.EntryAt(i);
            if (entry.Removed)
            {
                continue;
            }
            if (entry.Raw)
            {
                total += HpackEncoder.GetMaxLength(entry.NameLength, entry.ValueLength);
                continue;
            }
            foreach (var value in entry.Value)
            {
                total += HpackEncoder.GetMaxLength(entry.Name!.Length, value?.Length ?? 0);
            }
        }
        return total;
    }

    public static int MaxLength(IHeaderDictionary headers)
    {
        var total = 16;
        foreach (var pair in headers)
        {
            foreach (var value in pair.Value)
            {
                total += HpackEncoder.GetMaxLength(pair.Key.Length, value?.Length ?? 0);
            }
        }
        return total;
    }

    public static int Encode(Span<byte> destination, int status, ResponseHeaders headers)
    {
        var written = HpackEncoder.WriteStatus(destination, status);
        var hasDate = false;
        for (var i = 0; i < headers.EntryCount; i++)
        {
            ref var entry = ref headers.EntryAt(i);
            if (entry.Removed || (entry.Known >= 0 && Array.IndexOf(Skip, entry.Known) >= 0))
            {
                continue;
            }
            hasDate |= entry.Known == HeaderStrings.Date;
            if (entry.Raw)
            {
                var source = headers.Source;
                written += WriteField(destination[written..], source.Slice(entry.LineStart, entry.NameLength), source.Slice(entry.ValueStart, entry.ValueLength));
                continue;
            }
            var name = entry.Name!;
            foreach (var value in entry.Value)
            {
                written += WriteField(destination[written..], name, value ?? string.Empty);
            }
        }
        if (headers.ContentLength is { } length)
        {
            Span<byte> digits = stackalloc byte[20];
            length.TryFormat(digits, out var n, default, System.Globalization.CultureInfo.InvariantCulture);
            written += HpackEncoder.WriteLiteralWithoutIndexing(destination[written..], StaticContentLength, digits[..n]);
        }
        if (!hasDate)
        {
            // "Date: <value>\r\n"
            var line = DateHeader.Current;
            written += HpackEncoder.WriteLiteralWithoutIndexing(destination[written..], StaticDate, line.AsSpan(6, line.Length - 8));
        }
        return written;
    }

    public static int EncodeTrailers(Span<byte> destination, IHeaderDictionary trailers)
    {
        var written = 0;
        foreach (var pair in trailers)
        {
            var known = HeaderStrings.Find(pair.Key);
            if (known >= 0 && Array.IndexOf(Skip, known) >= 0)
            {
                continue;
            }
            foreach (var value in pair.Value)
            {
                written += WriteField(destination[written..], pair.Key, value ?? string.Empty);
            }
        }
        return written;
    }

    private static readonly int StaticContentLength = HpackEncoder.StaticNameIndex("content-length"u8);
    private static readonly int StaticDate = HpackEncoder.StaticNameIndex("date"u8);

    private static int WriteField(Span<byte> destination, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        Span<byte> lower = stackalloc byte[NameLimit];
        if (name.Length > NameLimit)
        {
            lower = new byte[name.Length];
        }
        var n = Ascii.ToLower(name, lower, out var count);
        _ = n;
        lower = lower[..count];
        var index = HpackEncoder.StaticNameIndex(lower);
        return index > 0
            ? HpackEncoder.WriteLiteralWithoutIndexing(destination, index, value)
            : HpackEncoder.WriteLiteralWithoutIndexing(destination, lower, value);
    }

    private static int WriteField(Span<byte> destination, string name, string value)
    {
        Span<byte> nameBytes = stackalloc byte[NameLimit];
        if (name.Length > NameLimit)
        {
            nameBytes = new byte[name.Length];
        }
        var count = Encoding.Latin1.GetBytes(name, nameBytes);
        byte[]? rented = null;
        Span<byte> valueBytes = value.Length <= 512 ? stackalloc byte[512] : (rented = ArrayPool<byte>.Shared.Rent(value.Length));
        try
        {
            var valueCount = Encoding.Latin1.GetBytes(value, valueBytes);
            if (valueBytes[..valueCount].IndexOfAny((byte)0, (byte)'\r', (byte)'\n') >= 0)
            {
                throw new InvalidOperationException($"Invalid control character in the value of header '{name}'.");
            }
            return WriteField(destination, nameBytes[..count], valueBytes[..valueCount]);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }
}
