namespace Portico.Upstreams;

/// <summary>
/// <c>weighted_round_robin</c>: nginx's smooth weighted round robin. Over one period each server is picked
/// <c>weight</c> times, spread out rather than in bursts: weights {a:5, b:1, c:1} give <c>a a b a c a a</c>.
/// </summary>
/// <remarks>
/// <para>
/// nginx (<c>ngx_http_upstream_get_peer</c>) keeps a current weight per server, adds each weight to it every pick,
/// takes the server with the highest current weight (the first on ties) and subtracts the total from it. That
/// mutates shared state on every pick, which needs a lock. The sequence is periodic with period <c>sum(weights)</c>,
/// so this policy runs the algorithm once at construction and then indexes the precomputed period with an
/// interlocked counter: the same picks, lock-free.
/// </para>
/// <para>
/// Weights are first divided by their greatest common divisor (100/80 becomes 5/4, period 9). If the period would
/// still exceed <see cref="MaxPeriod"/>, weights are scaled down proportionally, each kept at least 1; the ratios
/// then hold to within 1/<see cref="MaxPeriod"/> of the total.
/// </para>
/// <para>
/// An unavailable or excluded server is passed over for the next entry of the sequence, so its share goes to the
/// other servers in proportion to their weights. The walk is bounded by the period: with every server out, a pick
/// costs one pass over it.
/// </para>
/// </remarks>
internal sealed class WeightedRoundRobinPolicy : LoadBalancingPolicy
{
    /// <summary>The longest precomputed period (entries), bounding memory at 32 KiB per upstream.</summary>
    public const int MaxPeriod = 4096;

    private readonly ServerModel[] _sequence;
    private long _next = -1;

    public WeightedRoundRobinPolicy(ServerModel[] servers)
        : base(servers)
    {
        _sequence = BuildSequence(servers);
    }

    public override string Name => "weighted_round_robin";

    /// <summary>One period of the pick sequence, for tests and diagnostics.</summary>
    internal ReadOnlySpan<ServerModel> Sequence => _sequence;

    public override ServerModel? Select(ulong hashKey, ServerModel? exclude)
    {
        var sequence = _sequence;
        var length = sequence.Length;
        if (length == 0)
        {
            return null;
        }

        // A pick that lands on an unavailable or excluded server takes the next entry of the shared sequence (the
        // next counter value), not the next array slot: the servers then see the sequence with the unavailable
        // ones filtered out, so their shares stay proportional to their weights. Stepping to the next slot instead
        // would hand an unavailable server's whole share to whichever server follows its runs (with {a:5, b:1, c:1}
        // and a down, b would get 5 picks of 7 and c 2).
        for (var i = 0; i < length; i++)
        {
            var server = sequence[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)length)];
            if (SelectionHelpers.IsEligible(server, exclude))
            {
                return server;
            }
        }

        return SelectionHelpers.FallbackToExcluded(Servers, exclude);
    }

    private static ServerModel[] BuildSequence(ServerModel[] servers)
    {
        var count = servers.Length;
        if (count == 0)
        {
            return [];
        }

        var weights = new long[count];
        for (var i = 0; i < count; i++)
        {
            weights[i] = servers[i].Weight;
        }

        var total = Reduce(weights);
        if (total > MaxPeriod)
        {
            for (var i = 0; i < count; i++)
            {
                weights[i] = Math.Max(1, weights[i] * MaxPeriod / total);
            }

            total = Reduce(weights);
        }

        // nginx's smooth weighted round robin, run for one full period.
        var sequence = new ServerModel[total];
        var current = new long[count];
        for (var step = 0; step < sequence.Length; step++)
        {
            var best = 0;
            for (var i = 0; i < count; i++)
            {
                current[i] += weights[i];
                if (current[i] > current[best])
                {
                    best = i;
                }
            }

            current[best] -= total;
            sequence[step] = servers[best];
        }

        return sequence;
    }

    /// <summary>Divides the weights by their GCD in place and returns their new sum.</summary>
    private static long Reduce(long[] weights)
    {
        long gcd = 0;
        foreach (var weight in weights)
        {
            gcd = Gcd(gcd, weight);
        }

        long total = 0;
        for (var i = 0; i < weights.Length; i++)
        {
            weights[i] /= gcd;
            total += weights[i];
        }

        return total;
    }

    private static long Gcd(long a, long b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }

        return a;
    }
}
