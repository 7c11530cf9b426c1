using System.Text;

namespace Portico.Proxy.Http1;

/// <summary>
/// Response header names Portico's HTTP/1.1 client turns into strings without allocating: the common ones map to one
/// shared string each (as SocketsHttpHandler's KnownHeaders do); any other name is decoded. Every hop-by-hop name is in
/// the table, so an unknown name is end-to-end; the table stays under 64 names, so a response's known names fit one
/// bit mask.
/// </summary>
internal static class HeaderStrings
{
    private static readonly string[] Names =
    [
        "Date", "Server", "Content-Type", "Content-Length", "Connection", "Keep-Alive", "Transfer-Encoding",
        "Cache-Control", "ETag", "Last-Modified", "Expires", "Vary", "Set-Cookie", "Location", "Accept-Ranges",
        "Content-Encoding", "Content-Language", "Content-Disposition", "Content-Range", "Age", "Pragma", "Link",
        "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Strict-Transport-Security",
        "X-Content-Type-Options", "X-Frame-Options", "X-XSS-Protection", "Referrer-Policy", "Content-Security-Policy",
        "WWW-Authenticate", "Retry-After", "X-Request-ID", "Trailer", "Upgrade", "Proxy-Connection",
        "Proxy-Authenticate", "Alt-Svc", "grpc-status", "grpc-message", "traceparent", "X-Powered-By",
        "TE", "HTTP2-Settings", "Proxy-Authorization",
    ];

    /// <summary>The index of Content-Length in the table.</summary>
    public static readonly int ContentLength = Array.IndexOf(Names, "Content-Length");

    /// <summary>Indexes of the names a server writes itself when it frames a response.</summary>
    public static readonly int Date = Array.IndexOf(Names, "Date");
    public static readonly int Connection = Array.IndexOf(Names, "Connection");
    public static readonly int KeepAlive = Array.IndexOf(Names, "Keep-Alive");
    public static readonly int TransferEncoding = Array.IndexOf(Names, "Transfer-Encoding");
    public static readonly int XRequestId = Array.IndexOf(Names, "X-Request-ID");

    /// <summary>Per known index: a hop-by-hop name (<see cref="HeaderRules.IsHopByHop"/>; every such name is in the table).</summary>
    private static readonly bool[] HopByHop = BuildHopByHop();

    /// <summary>Names whose values repeat from response to response, so a cache of the last value pays off.</summary>
    private static readonly HashSet<string> RepeatingValues = new(StringComparer.Ordinal)
    {
        "Date", "Server", "Content-Type", "Connection", "Keep-Alive", "Cache-Control", "Expires", "Vary",
        "Accept-Ranges", "Content-Encoding", "Content-Language", "Pragma", "Access-Control-Allow-Origin",
        "Access-Control-Allow-Credentials", "Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
        "X-XSS-Protection", "Referrer-Policy", "Content-Security-Policy", "Alt-Svc", "X-Powered-By", "Transfer-Encoding",
    };

    private static readonly int[][] ByLength = BuildIndex();

    /// <summary>How many known names there are (the size of a <see cref="ResponseHeaderValueCache"/>).</summary>
    public static int Count => Names.Length;

    /// <summary>The index of a known name (ASCII case-insensitive), or -1.</summary>
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

    /// <summary>The shared string of a known name.</summary>
    public static string NameOf(int index) => Names[index];

    /// <summary>The name as a string: the shared one when known, else decoded (names are tokens, so ASCII).</summary>
    public static string Name(ReadOnlySpan<byte> name, out int index)
    {
        index = Find(name);
        return index >= 0 ? Names[index] : Encoding.Latin1.GetString(name);
    }

    /// <summary>True for a hop-by-hop name; any name not in the table is end-to-end.</summary>
    public static bool IsHopByHop(int index) => index >= 0 && HopByHop[index];

    internal static bool CachesValue(int index) => index >= 0 && RepeatingValues.Contains(Names[index]);

    private static bool[] BuildHopByHop()
    {
        var flags = new bool[Names.Length];
        for (var i = 0; i < flags.Length; i++)
        {
            flags[i] = HeaderRules.IsHopByHop(Names[i]);
        }
        return flags;
    }

    private static int[][] BuildIndex()
    {
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

/// <summary>
/// The last value seen for each repeating known header of one upstream server: a response whose Server, Content-Type
/// or Date (within the same second) equals the previous one reuses its string. Shared by the server's connections;
/// entries are replaced whole, so a racing reader sees either the old or the new pair.
/// </summary>
internal sealed class ResponseHeaderValueCache
{
    private const int MaxCachedLength = 256;
    private static readonly bool[] Cacheable = BuildCacheable();
    private readonly Entry?[] _entries = new Entry?[HeaderStrings.Count];

    /// <summary>The value as a string (Latin-1, so any byte an upstream sends survives the trip).</summary>
    public string Value(int nameIndex, ReadOnlySpan<byte> value)
    {
        if (nameIndex < 0 || !Cacheable[nameIndex])
        {
            return value.IsEmpty ? string.Empty : Encoding.Latin1.GetString(value);
        }
        var entry = Volatile.Read(ref _entries[nameIndex]);
        if (entry is not null && value.SequenceEqual(entry.Bytes))
        {
            return entry.Text;
        }
        var text = value.IsEmpty ? string.Empty : Encoding.Latin1.GetString(value);
        if (value.Length <= MaxCachedLength)
        {
            Volatile.Write(ref _entries[nameIndex], new Entry(value.ToArray(), text));
        }
        return text;
    }

    private static bool[] BuildCacheable()
    {
        var flags = new bool[HeaderStrings.Count];
        for (var i = 0; i < flags.Length; i++)
        {
            flags[i] = HeaderStrings.CachesValue(i);
        }
        return flags;
    }

    private sealed record Entry(byte[] Bytes, string Text);
}
