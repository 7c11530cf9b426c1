using System.Collections.Frozen;
using Portico.Config;
using Portico.Proxy;
using Portico.Routing;
using Portico.Upstreams;

namespace Portico.Gateway;

/// <summary>
/// The compiled form of one <see cref="GatewayConfig"/>: route table, upstream groups with their balancers and
/// pools, and a peer per server. Immutable; requests take the current snapshot once and finish on it.
/// </summary>
public sealed class GatewaySnapshot
{
    internal GatewaySnapshot(GatewayConfig config, RouteTable routes, FrozenDictionary<string, UpstreamModel> upstreams,
        FrozenDictionary<UpstreamModel, UpstreamPeer[]> peers, UpstreamModel? defaultUpstream, long generation)
    {
        Config = config;
        Routes = routes;
        Upstreams = upstreams;
        _peers = peers;
        DefaultUpstream = defaultUpstream;
        Generation = generation;
        Auth = new Auth.JwtAuthenticator(config.Auth);
    }

    /// <summary>The bearer-token check for auth_required routes; rebuilt on reload with the new auth: block.</summary>
    internal Auth.JwtAuthenticator Auth { get; }

    private readonly FrozenDictionary<UpstreamModel, UpstreamPeer[]> _peers;

    public GatewayConfig Config { get; }
    public RouteTable Routes { get; }
    public FrozenDictionary<string, UpstreamModel> Upstreams { get; }
    /// <summary>With no routes and exactly one upstream, every request goes to it.</summary>
    public UpstreamModel? DefaultUpstream { get; }
    /// <summary>Increases by one per successful load or reload.</summary>
    public long Generation { get; }

    /// <summary>The peer for a server of an upstream (precomputed: no allocation per request).</summary>
    public UpstreamPeer PeerFor(UpstreamModel upstream, ServerModel server) => _peers[upstream][server.Index];

    internal IEnumerable<UpstreamClient> Clients
    {
        get
        {
            foreach (var upstream in Upstreams.Values)
            {
                yield return upstream.Client;
            }
        }
    }
}
