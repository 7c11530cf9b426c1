using Portico.Upstreams;

namespace Portico.Proxy;

/// <summary>
/// Where one attempt of a request goes: a server and the connection pool that reaches it. Returned by
/// <see cref="ProxyApp{TContext}.SelectUpstreamAsync"/>. Peers are immutable and may be cached per server.
/// </summary>
public sealed class UpstreamPeer
{
    public UpstreamPeer(ServerModel server, UpstreamClient client, TimeSpan readTimeout, string? upstreamName = null)
    {
        Server = server;
        Client = client;
        ReadTimeout = readTimeout;
        UpstreamName = upstreamName;
        var scheme = server.Tls ? "https://" : "http://";
        BaseAddress = scheme + server.Authority;
        Version = client.Options.Protocol == UpstreamProtocol.Http2 ? System.Net.HttpVersion.Version20 : System.Net.HttpVersion.Version11;
        Http1 = client.Http1PoolFor(server);
    }

    /// <summary>Convenience for library users: a peer for "host:port" with its own pool.</summary>
    public static UpstreamPeer Create(string host, int port, bool tls = false, UpstreamProtocol protocol = UpstreamProtocol.Http1)
    {
        var server = new ServerModel(new Config.UpstreamServerConfig { Host = host, Port = port, Tls = tls }, 0);
        var client = new UpstreamClient(new UpstreamClientOptions { Protocol = protocol, AnyTls = tls });
        return new UpstreamPeer(server, client, TimeSpan.FromSeconds(60));
    }

    public ServerModel Server { get; }
    public UpstreamClient Client { get; }
    /// <summary>Time allowed for the response headers and between body reads. Defaults to 60 s, as nginx proxy_read_timeout.</summary>
    public TimeSpan ReadTimeout { get; }
    /// <summary>The upstream group's name, for logs and metrics; null for ad-hoc peers.</summary>
    public string? UpstreamName { get; }
    /// <summary>"http://host:port" or "https://host:port".</summary>
    public string BaseAddress { get; }
    /// <summary>The HTTP version used to talk to this peer (requested exactly, no downgrade).</summary>
    public Version Version { get; }
    /// <summary>Portico's own HTTP/1.1 pool to this server; null when every request goes through SocketsHttpHandler.</summary>
    internal Http1Pool? Http1 { get; }

    public override string ToString() => BaseAddress;
}
