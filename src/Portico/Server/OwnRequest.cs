using System.Net;
using Microsoft.AspNetCore.Http;

namespace Portico.Server;

/// <summary>
/// A request on one of Portico's own servers (<see cref="Http1RequestContext"/> for HTTP/1.1,
/// <see cref="Http2.Http2Stream"/> for h2c): what the forwarder's raw paths use instead of the HttpContext's strings.
/// The request head is kept as byte lines (<see cref="RequestHeaderTable"/>), the upstream's response head goes into
/// <see cref="ResponseHeaderTable"/> as byte lines too, and each server writes those lines its own way (as they are
/// for HTTP/1.1, HPACK-encoded with lowercase names for HTTP/2).
/// </summary>
internal abstract class OwnRequest
{
    public RequestHeaders RequestHeaderTable { get; } = new();

    public ResponseHeaders ResponseHeaderTable { get; } = new();

    public string Protocol { get; set; } = HttpProtocol.Http11;

    public string Method { get; set; } = HttpMethods.Get;

    /// <summary>The request target as received (HTTP/2: the :path).</summary>
    public string RawTarget { get; set; } = "/";

    /// <summary>The Connection header named other headers (HTTP/1.1 only: HTTP/2 has no Connection header).</summary>
    public bool ConnectionNamesHeaders { get; protected set; }

    /// <summary>The request came over TLS (its scheme is https).</summary>
    public bool IsTls { get; protected set; }

    /// <summary>
    /// The request has no body and asks for no upgrade: the forwarder's own HTTP/1.1 client may send it with the raw
    /// header copies. (Portico's HTTP/1.1 server only takes such requests; an HTTP/2 stream is one when its HEADERS
    /// frame ended the stream.)
    /// </summary>
    public bool Plain { get; protected set; }

    /// <summary>
    /// The proxy session of this context's current request, kept for its next one (<see cref="Proxy.ProxySession.Reset"/>):
    /// the context is pooled, and the session wraps the context's own HttpContext, so both live exactly as long.
    /// </summary>
    internal Proxy.ProxySession? Session { get; set; }

    /// <summary>The TCP peer's address.</summary>
    public abstract IPAddress? ClientIp { get; }

    /// <summary><see cref="ClientIp"/> as X-Forwarded-For shows it, formatted once per connection.</summary>
    public abstract string ClientIpText { get; }

    public abstract CancellationToken RequestAborted { get; set; }

    /// <summary>Sends (or queues) the response head; done once, later calls return at once.</summary>
    public abstract ValueTask StartResponseAsync(bool appCompleted);
}
