namespace Portico.Upstreams;

/// <summary>
/// <c>random</c>: power of two choices. Two distinct available servers are drawn at random and the less loaded one
/// is taken, which keeps the worst load far lower than one random draw does (Mitzenmacher, "The Power of Two Choices
/// in Randomized Load Balancing", 2001) while needing no shared counter, unlike <c>least_connections</c>.
/// </summary>
/// <remarks>
/// Load is weight-adjusted as Envoy's least-request balancer does: <c>(inFlight + 1) / weight</c>, compared
/// cross-multiplied. The +1 makes an idle heavy server beat an idle light one, so weights count even at low load;
/// it may seem simpler to compare <c>inFlight / weight</c>, but then every idle pair ties and weights are ignored.
/// On an exact tie the first draw wins.
/// </remarks>
internal sealed class RandomPolicy : LoadBalancingPolicy
{
    private readonly Random _random;

    /// <param name="servers">The upstream's servers.</param>
    /// <param name="random">
    /// The source of draws. Defaults to <see cref="Random.Shared"/>, which is thread-safe; a seeded
    /// <see cref="Random"/> (for tests) is not, so it must not be shared by concurrent callers.
    /// </param>
    public RandomPolicy(ServerModel[] servers, Random? random = null)
        : base(servers)
    {
        _random = random ?? Random.Shared;
    }

    public override string Name => "random";

    public override ServerModel? Select(ulong hashKey, ServerModel? exclude)
    {
        var servers = Servers;
        var count = servers.Length;
        if (count >= 2)
        {
            // Fast path: two distinct draws, both eligible (the usual case with healthy servers).
            var first = _random.Next(count);
            var second = _random.Next(count - 1);
            if (second >= first)
            {
                second++;
            }

            var a = servers[first];
            var b = servers[second];
            if (SelectionHelpers.IsEligible(a, exclude) && SelectionHelpers.IsEligible(b, exclude))
            {
                return LessLoaded(a, b);
            }
        }

        return SelectAmongEligible(servers, exclude);
    }

    /// <summary>Slow path: some servers are out, so draw among the eligible ones only, keeping the draw uniform.</summary>
    private ServerModel? SelectAmongEligible(ServerModel[] servers, ServerModel? exclude)
    {
        var eligible = 0;
        foreach (var server in servers)
        {
            if (SelectionHelpers.IsEligible(server, exclude))
            {
                eligible++;
            }
        }

        if (eligible == 0)
        {
            return SelectionHelpers.FallbackToExcluded(servers, exclude);
        }

        var first = _random.Next(eligible);
        if (eligible == 1)
        {
            return NthEligible(servers, exclude, first) ?? SelectionHelpers.FallbackToExcluded(servers, exclude);
        }

        var second = _random.Next(eligible - 1);
        if (second >= first)
        {
            second++;
        }

        // Availability may change between the count and these scans; a missing server just loses its turn.
        var a = NthEligible(servers, exclude, first);
        var b = NthEligible(servers, exclude, second);
        if (a is null || b is null)
        {
            return a ?? b ?? SelectionHelpers.FallbackToExcluded(servers, exclude);
        }

        return LessLoaded(a, b);
    }

    private static ServerModel? NthEligible(ServerModel[] servers, ServerModel? exclude, int n)
    {
        foreach (var server in servers)
        {
            if (SelectionHelpers.IsEligible(server, exclude) && n-- == 0)
            {
                return server;
            }
        }

        return null;
    }

    private static ServerModel LessLoaded(ServerModel a, ServerModel b)
    {
        var loadA = (a.State.InFlight + 1L) * b.Weight;
        var loadB = (b.State.InFlight + 1L) * a.Weight;
        return loadB < loadA ? b : a;
    }
}
