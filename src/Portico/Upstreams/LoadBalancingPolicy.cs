namespace Portico.Upstreams;

/// <summary>
/// Picks a server of one upstream group for a request. Implementations are lock-free and allocation-free on
/// <see cref="Select"/>; they skip servers whose <see cref="ServerState.IsAvailable"/> is false.
/// </summary>
public abstract class LoadBalancingPolicy
{
    protected LoadBalancingPolicy(ServerModel[] servers)
    {
        Servers = servers;
    }

    /// <summary>The config name: round_robin, weighted_round_robin, least_connections, ip_hash, random.</summary>
    public abstract string Name { get; }

    /// <summary>The servers this policy chooses among, in config order.</summary>
    public ServerModel[] Servers { get; }

    /// <summary>
    /// Chooses a server, or null when none is available. <paramref name="hashKey"/> is the request's affinity key
    /// (the client IP hash for ip_hash; ignored by the others). <paramref name="exclude"/> is a server not to pick
    /// again (the one a retry just failed on) unless it is the only available one.
    /// </summary>
    public abstract ServerModel? Select(ulong hashKey, ServerModel? exclude);

    /// <summary>True when <see cref="Select"/> uses its hash key, so callers compute it only then.</summary>
    public virtual bool UsesHashKey => false;
}
