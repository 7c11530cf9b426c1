namespace Portico.Upstreams;

/// <summary>
/// <c>round_robin</c>: servers in turn, ignoring weights (use <c>weighted_round_robin</c> for those). An unavailable
/// or excluded server is passed over for the next one in list order.
/// </summary>
internal sealed class RoundRobinPolicy : LoadBalancingPolicy
{
    // A 64-bit counter: at a million requests per second it wraps after 584,000 years, so the modulo never jumps.
    private long _next = -1;

    public RoundRobinPolicy(ServerModel[] servers)
        : base(servers)
    {
    }

    public override string Name => "round_robin";

    public override ServerModel? Select(ulong hashKey, ServerModel? exclude)
    {
        var servers = Servers;
        var count = servers.Length;
        if (count == 0)
        {
            return null;
        }

        var index = (int)((ulong)Interlocked.Increment(ref _next) % (ulong)count);
        for (var i = 0; i < count; i++)
        {
            var server = servers[index];
            if (SelectionHelpers.IsEligible(server, exclude))
            {
                return server;
            }

            if (++index == count)
            {
                index = 0;
            }
        }

        return SelectionHelpers.FallbackToExcluded(servers, exclude);
    }
}
