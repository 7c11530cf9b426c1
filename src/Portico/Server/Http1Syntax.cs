using System.Buffers;

namespace Portico.Server;

/// <summary>Character classes of HTTP/1.1 (RFC 9110 §5.6.2, RFC 3986 §3.3) for the request parser.</summary>
internal static class Http1Syntax
{
    private const string Alphanumeric = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    /// <summary>tchar: the characters of a method or a header name.</summary>
    public static readonly SearchValues<byte> TokenChars = SearchValues.Create(System.Text.Encoding.ASCII.GetBytes(Alphanumeric + "!#$%&'*+-.^_`|~"));

    /// <summary>
    /// The path characters the server takes as they are: pchar and "/" without "%" (RFC 3986 §3.3). A path with a
    /// percent-encoding needs decoding before routing, which Kestrel does; such a request is left to Kestrel.
    /// </summary>
    public static readonly SearchValues<byte> PlainPathChars = SearchValues.Create(System.Text.Encoding.ASCII.GetBytes(Alphanumeric + "-._~!$&'()*+,;=:@/"));

    /// <summary>Query characters (RFC 3986 §3.4: pchar, "/", "?"), percent-encodings included: the query is passed on undecoded.</summary>
    public static readonly SearchValues<byte> QueryChars = SearchValues.Create(System.Text.Encoding.ASCII.GetBytes(Alphanumeric + "-._~!$&'()*+,;=:@/?%"));

    /// <summary>The characters of a Host value: a name, an IPv4 address or an [IPv6] literal, and a port.</summary>
    public static readonly SearchValues<byte> HostChars = SearchValues.Create(System.Text.Encoding.ASCII.GetBytes(Alphanumeric + "-._~:[]"));

    public static bool IsTokenChar(byte c) => TokenChars.Contains(c);

    /// <summary>Trims spaces and horizontal tabs (OWS) from both ends.</summary>
    public static ReadOnlySpan<byte> TrimOws(ReadOnlySpan<byte> value)
    {
        var start = 0;
        while (start < value.Length && (value[start] == ' ' || value[start] == '\t'))
        {
            start++;
        }
        var end = value.Length;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
        {
            end--;
        }
        return value[start..end];
    }
}
