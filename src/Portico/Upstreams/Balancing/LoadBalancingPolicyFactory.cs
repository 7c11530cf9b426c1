namespace Portico.Upstreams;

/// <summary>Creates the balancer an upstream's <c>load_balance_strategy</c> names.</summary>
public static class LoadBalancingPolicyFactory
{
    /// <summary>The accepted strategy names, for config validation and error messages.</summary>
    public static IReadOnlyList<string> Names { get; } =
        ["round_robin", "weighted_round_robin", "least_connections", "ip_hash", "random"];

    /// <summary>
    /// A new policy over <paramref name="servers"/>. Called when a config snapshot is compiled, never per request.
    /// </summary>
    /// <param name="name">The strategy, as written in config (ordinal, snake_case).</param>
    /// <param name="servers">The upstream's servers, in config order.</param>
    /// <param name="random">Draws for <c>random</c>; null = <see cref="Random.Shared"/>. Ignored by the others.</param>
    /// <exception cref="ArgumentException"><paramref name="name"/> is not one of <see cref="Names"/>.</exception>
    public static LoadBalancingPolicy Create(string name, ServerModel[] servers, Random? random = null)
    {
        ArgumentNullException.ThrowIfNull(servers);
        return name switch
        {
            "round_robin" => new RoundRobinPolicy(servers),
            "weighted_round_robin" => new WeightedRoundRobinPolicy(servers),
            "least_connections" => new LeastConnectionsPolicy(servers),
            "ip_hash" => new IpHashPolicy(servers),
            "random" => new RandomPolicy(servers, random),
            _ => throw new ArgumentException(
                $"Unknown load balancing strategy '{name}'; expected one of: {string.Join(", ", Names)}.", nameof(name)),
        };
    }
}
