namespace Portico.Upstreams;

/// <summary>
/// <c>least_connections</c>: the available server with the fewest in-flight requests per unit of weight, as nginx
/// <c>least_conn</c>. Servers that tie are taken in turn (a shared counter picks among them), so equal servers (an
/// idle upstream, say) share the load instead of the first one taking it all.
/// </summary>
/// <remarks>
/// <c>inFlight / weight</c> is compared cross-multiplied, <c>a.InFlight * b.Weight &lt; b.InFlight * a.Weight</c>, in
/// 64 bits: no division and no rounding. In-flight counts are read without a lock, so two concurrent picks may both
/// see the same least-loaded server; that costs at most a request of imbalance and is what nginx does across workers.
/// </remarks>
internal sealed class LeastConnectionsPolicy : LoadBalancingPolicy
{
    private long _next = -1;

    public LeastConnectionsPolicy(ServerModel[] servers)
        : base(servers)
    {
    }

    public override string Name => "least_connections";

    public override ServerModel? Select(ulong hashKey, ServerModel? exclude)
    {
        var servers = Servers;
        var count = servers.Length;
        if (count == 0)
        {
            return null;
        }

        // Pass 1: the least load, and how many servers share it.
        ServerModel? best = null;
        long bestInFlight = 0;
        long bestWeight = 1;
        var ties = 0;
        foreach (var server in servers)
        {
            if (!SelectionHelpers.IsEligible(server, exclude))
            {
                continue;
            }

            long inFlight = server.State.InFlight;
            if (best is null || inFlight * bestWeight < bestInFlight * server.Weight)
            {
                best = server;
                bestInFlight = inFlight;
                bestWeight = server.Weight;
                ties = 1;
            }
            else if (inFlight * bestWeight == bestInFlight * server.Weight)
            {
                ties++;
            }
        }

        if (ties <= 1)
        {
            return best ?? SelectionHelpers.FallbackToExcluded(servers, exclude);
        }

        // Pass 2: take the tied servers in turn. It may seem simpler to start one scan at a rotating index and keep
        // the first minimum, but then a server right after a busy one gets that one's turns too (idle {a, b, c} and
        // busy d: a would get half the picks).
        var turn = (long)((ulong)Interlocked.Increment(ref _next) % (ulong)ties);
        foreach (var server in servers)
        {
            if (SelectionHelpers.IsEligible(server, exclude)
                && server.State.InFlight * bestWeight == bestInFlight * server.Weight
                && turn-- == 0)
            {
                return server;
            }
        }

        // Loads moved between the passes; the minimum of pass 1 is still a good answer.
        return best ?? SelectionHelpers.FallbackToExcluded(servers, exclude);
    }
}
