using Microsoft.Extensions.Primitives;

namespace Portico.Proxy;

/// <summary>
/// Which headers a proxy must not forward (RFC 9110 §7.6.1: hop-by-hop) and the checks for well-formed
/// request ids. Pure functions, no allocation on the common path.
/// </summary>
public static class HeaderRules
{
    /// <summary>
    /// True for a header that describes one connection, not the message: Connection, Keep-Alive,
    /// Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade,
    /// HTTP2-Settings.
    /// TE is handled separately by the forwarder (only "trailers" survives, which gRPC needs).
    /// </summary>
    public static bool IsHopByHop(string name)
    {
        switch (name.Length)
        {
            case 2:
                return name.Equals("TE", StringComparison.OrdinalIgnoreCase);
            case 7:
                return name.Equals("Upgrade", StringComparison.OrdinalIgnoreCase)
                    || name.Equals("Trailer", StringComparison.OrdinalIgnoreCase);
            case 10:
                return name.Equals("Connection", StringComparison.OrdinalIgnoreCase)
                    || name.Equals("Keep-Alive", StringComparison.OrdinalIgnoreCase);
            case 14:
                // RFC 9113 §3.1 (RFC 7540 §3.2.1): belongs to an h2c upgrade offer, a connection-level thing. Listed
                // here because Kestrel drops it from the Connection header ("Upgrade, HTTP2-Settings" → "Upgrade").
                return name.Equals("HTTP2-Settings", StringComparison.OrdinalIgnoreCase);
            case 16:
                return name.Equals("Proxy-Connection", StringComparison.OrdinalIgnoreCase);
            case 17:
                return name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase);
            case 18:
                return name.Equals("Proxy-Authenticate", StringComparison.OrdinalIgnoreCase);
            case 19:
                return name.Equals("Proxy-Authorization", StringComparison.OrdinalIgnoreCase);
            default:
                return false;
        }
    }

    /// <summary>
    /// True when the Connection header names something beyond the usual tokens (close, keep-alive, upgrade), i.e.
    /// when extra headers must be dropped because Connection lists them.
    /// </summary>
    public static bool HasCustomConnectionTokens(StringValues connection)
    {
        for (var i = 0; i < connection.Count; i++)
        {
            var value = connection[i].AsSpan();
            while (!value.IsEmpty)
            {
                var comma = value.IndexOf(',');
                var token = (comma < 0 ? value : value[..comma]).Trim();
                value = comma < 0 ? default : value[(comma + 1)..];
                if (token.Length == 0
                    || token.Equals("close", StringComparison.OrdinalIgnoreCase)
                    || token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase)
                    || token.Equals("upgrade", StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }
                return true;
            }
        }
        return false;
    }

    /// <summary>True when the Connection header lists <paramref name="name"/> as a token.</summary>
    public static bool ConnectionNames(StringValues connection, string name)
    {
        for (var i = 0; i < connection.Count; i++)
        {
            var value = connection[i].AsSpan();
            while (!value.IsEmpty)
            {
                var comma = value.IndexOf(',');
                var token = (comma < 0 ? value : value[..comma]).Trim();
                value = comma < 0 ? default : value[(comma + 1)..];
                if (token.Equals(name, StringComparison.OrdinalIgnoreCase))
                {
                    return true;
                }
            }
        }
        return false;
    }

    /// <summary>
    /// True when a TE header value may be forwarded: only "trailers" (RFC 9110 §10.1.4; gRPC requires it and
    /// HTTP/2 allows nothing else).
    /// </summary>
    public static bool IsTrailersOnlyTe(StringValues te)
    {
        if (te.Count != 1)
        {
            return false;
        }
        return te[0].AsSpan().Trim().Equals("trailers", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// True when a client-supplied X-Request-ID can be trusted as an id: 1–128 characters of letters, digits and
    /// <c>-_.:+=/</c> (UUIDs, ULIDs, base64 and the ids nginx/Envoy generate). Anything else is replaced, so a
    /// client cannot inject log lines or huge values.
    /// </summary>
    public static bool IsValidRequestId(ReadOnlySpan<char> id)
    {
        if (id.IsEmpty || id.Length > 128)
        {
            return false;
        }
        foreach (var c in id)
        {
            var ok = c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9')
                or '-' or '_' or '.' or ':' or '+' or '=' or '/';
            if (!ok)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// A new request id: 32 lower-case hex characters laid out as a UUID v7 (48-bit Unix milliseconds, version 7,
    /// variant 10, 74 random bits), so ids sort by arrival. The random bits come from <see cref="Random.Shared"/> (a
    /// per-thread xoshiro256** seeded from the OS), not from <c>Guid.CreateVersion7</c>, whose cryptographic random
    /// source costs a read(2) of /dev/urandom on every request: a request id must be unique, not unguessable.
    /// </summary>
    public static string NewRequestId()
    {
        Span<byte> bytes = stackalloc byte[16];
        NewRequestIdBits(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    /// <summary>The length of a generated request id (<see cref="NewRequestId"/>, <see cref="WriteNewRequestId"/>).</summary>
    public const int GeneratedIdLength = 32;

    /// <summary>
    /// <see cref="NewRequestId"/> as ASCII bytes into <paramref name="destination"/> (at least
    /// <see cref="GeneratedIdLength"/> bytes), so the request path can send it without a string.
    /// </summary>
    public static void WriteNewRequestId(Span<byte> destination)
    {
        Span<byte> bytes = stackalloc byte[16];
        NewRequestIdBits(bytes);
        Convert.TryToHexStringLower(bytes, destination, out _);
    }

    private static void NewRequestIdBits(Span<byte> bytes)
    {
        Random.Shared.NextBytes(bytes[6..]);
        var milliseconds = Threading.LoopClock.UnixMilliseconds;
        for (var i = 5; i >= 0; i--)
        {
            bytes[i] = (byte)milliseconds;
            milliseconds >>= 8;
        }
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x70);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
    }
}
