using Portico.Config;

namespace Portico.Upstreams;

/// <summary>The wire protocol Portico speaks to an upstream group.</summary>
public enum UpstreamProtocol
{
    /// <summary>HTTP/1.1 with keep-alive (HTTP/2 by ALPN is not attempted: as nginx, explicit is better).</summary>
    Http1,
    /// <summary>HTTP/2 with prior knowledge (cleartext) or over TLS when servers have tls: true.</summary>
    Http2,
}

/// <summary>A compiled upstream group: servers, balancer, timeouts and the connection pool used to reach them.</summary>
public sealed class UpstreamModel
{
    public required string Name { get; init; }
    public required UpstreamConfig Config { get; init; }
    public required UpstreamProtocol Protocol { get; init; }
    public required ServerModel[] Servers { get; init; }
    /// <summary>The balancer over the preferred tier (the first of <see cref="Tiers"/>); its Name is the strategy.</summary>
    public LoadBalancingPolicy Policy => Tiers[0];
    /// <summary>
    /// Balancers by preference: servers of this node's zone (server.zone; servers without a zone count as local),
    /// then other zones, then backup servers. A request goes to the first tier with an available server, so
    /// traffic fails over when a tier is down and moves back when it recovers. Empty tiers are left out.
    /// </summary>
    public required LoadBalancingPolicy[] Tiers { get; init; }
    public required TimeSpan ConnectTimeout { get; init; }
    public required TimeSpan ReadTimeout { get; init; }
    public int MaxRetries { get; init; }
    /// <summary>
    /// retry_on_status as a lookup by status (index = status code, 100..599); null when no status is retried, so the
    /// common case costs one null check per response.
    /// </summary>
    public bool[]? RetryOnStatus { get; init; }
    /// <summary>Failures in a row on live traffic that eject a server (the effective health check's unhealthy_threshold).</summary>
    public int PassiveMaxFails { get; init; } = 3;
    /// <summary>Caps retries at about 20 % of requests (plus 10/s), so retries cannot multiply an overload.</summary>
    public required RetryBudget RetryBudget { get; init; }
    /// <summary>How long a passively ejected server stays out. 10 s, as nginx's fail_timeout.</summary>
    public TimeSpan PassiveEjectTime { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>The long-lived pool (SocketsHttpHandler) for this group; shared across reloads when settings match.</summary>
    public required UpstreamClient Client { get; init; }
    /// <summary>This group's metric cells; set when the app takes the snapshot (<see cref="Observability.GatewayMetrics"/>).</summary>
    internal Observability.UpstreamMetrics? Metrics { get; set; }
}
