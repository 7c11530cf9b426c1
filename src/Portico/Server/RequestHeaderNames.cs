using System.Text;

namespace Portico.Server;

/// <summary>
/// Request header names Portico's HTTP/1.1 server knows by index: each maps to one shared string (no allocation per
/// request), and the proxy's decisions (hop-by-hop, set by the proxy, trace context) are flags per index. Every
/// hop-by-hop name and every name the forwarder treats specially is in the table, so an unknown name is an ordinary
/// end-to-end header. At most 64 names, so a request's known names fit one bit mask.
/// </summary>
internal static class RequestHeaderNames
{
    public const int Host = 0;
    public const int Connection = 1;
    public const int ContentLength = 2;
    public const int TransferEncoding = 3;
    public const int Upgrade = 4;
    public const int Expect = 5;
    public const int KeepAlive = 6;
    public const int TE = 7;
    public const int Trailer = 8;
    public const int ProxyConnection = 9;
    public const int ProxyAuthorization = 10;
    public const int Http2Settings = 11;
    public const int XRequestId = 12;
    public const int XForwardedFor = 13;
    public const int XForwardedProto = 14;
    public const int XForwardedHost = 15;
    public const int Via = 16;
    public const int TraceParent = 17;
    public const int TraceState = 18;

    private static readonly string[] Names =
    [
        "Host", "Connection", "Content-Length", "Transfer-Encoding", "Upgrade", "Expect", "Keep-Alive", "TE", "Trailer",
        "Proxy-Connection", "Proxy-Authorization", "HTTP2-Settings", "X-Request-ID", "X-Forwarded-For",
        "X-Forwarded-Proto", "X-Forwarded-Host", "Via", "traceparent", "tracestate",
        "Authorization", "Cookie", "Accept", "Accept-Encoding", "Accept-Language", "User-Agent", "Referer", "Origin",
        "Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since", "Content-Type", "Sec-Fetch-Site",
        "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
        "Upgrade-Insecure-Requests", "DNT", "X-Requested-With", "X-Real-IP", "Forwarded", "Range", "If-Range",
        "If-Match", "If-Unmodified-Since", "Max-Forwards", "Content-Encoding", "grpc-timeout", "grpc-encoding",
        "grpc-accept-encoding", "Priority", "Date", "X-User-Id", "X-User-Roles",
    ];

    /// <summary>Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Connection, Proxy-Authorization, HTTP2-Settings.</summary>
    public const ulong HopByHopMask =
        1UL << Connection | 1UL << KeepAlive | 1UL << TE | 1UL << Trailer | 1UL << TransferEncoding | 1UL << Upgrade
        | 1UL << ProxyConnection | 1UL << ProxyAuthorization | 1UL << Http2Settings;

    /// <summary>Host, Via, X-Request-ID, X-Forwarded-Host, X-Forwarded-Proto: the proxy writes its own.</summary>
    public const ulong SetByProxyMask = 1UL << Host | 1UL << Via | 1UL << XRequestId | 1UL << XForwardedHost | 1UL << XForwardedProto;

    /// <summary>Names whose values change with every request: not worth remembering per connection.</summary>
    private const ulong UncachedMask = 1UL << XRequestId | 1UL << TraceParent | 1UL << TraceState | 1UL << ContentLength;

    private static readonly int[][] ByLength = BuildIndex();

    public static int Count => Names.Length;

    public static string NameOf(int index) => Names[index];

    /// <summary>True when the value of this known name is worth keeping for the connection's next request.</summary>
    public static bool CachesValue(int index) => (UncachedMask & (1UL << index)) == 0;

    /// <summary>The index of a known name given as bytes (ASCII case-insensitive), or -1.</summary>
    public static int Find(ReadOnlySpan<byte> name)
    {
        if (name.Length >= ByLength.Length)
        {
            return -1;
        }
        foreach (var index in ByLength[name.Length])
        {
            if (Ascii.EqualsIgnoreCase(name, Names[index]))
            {
                return index;
            }
        }
        return -1;
    }

    /// <summary>The index of a known name given as a string (ASCII case-insensitive), or -1.</summary>
    public static int Find(string name)
    {
        if (name.Length >= ByLength.Length)
        {
            return -1;
        }
        var candidates = ByLength[name.Length];
        // Callers mostly pass the same literal (interned) string: a reference pass first avoids comparing characters.
        foreach (var index in candidates)
        {
            if (ReferenceEquals(Names[index], name))
            {
                return index;
            }
        }
        foreach (var index in candidates)
        {
            if (string.Equals(Names[index], name, StringComparison.OrdinalIgnoreCase))
            {
                return index;
            }
        }
        return -1;
    }

    private static int[][] BuildIndex()
    {
        if (Names.Length > 64)
        {
            throw new InvalidOperationException("at most 64 known request header names fit the bit mask");
        }
        var max = 0;
        foreach (var name in Names)
        {
            max = Math.Max(max, name.Length);
        }
        var lists = new List<int>[max + 1];
        for (var i = 0; i < lists.Length; i++)
        {
            lists[i] = [];
        }
        for (var i = 0; i < Names.Length; i++)
        {
            lists[Names[i].Length].Add(i);
        }
        var index = new int[max + 1][];
        for (var i = 0; i < lists.Length; i++)
        {
            index[i] = [.. lists[i]];
        }
        return index;
    }
}
