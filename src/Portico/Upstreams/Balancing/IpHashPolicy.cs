namespace Portico.Upstreams;

/// <summary>
/// <c>ip_hash</c>: client affinity by consistent hashing (<see cref="KetamaRing"/>). The caller passes the client
/// address hashed with <see cref="KetamaRing.HashKey(System.Net.IPAddress)"/> as the hash key; the same key always
/// lands on the same server while it is available, and adding or removing a server moves only about 1/n of clients.
/// </summary>
/// <remarks>
/// Unlike nginx <c>ip_hash</c> (which hashes the first three octets of an IPv4 address and rehashes up to 20 times
/// when the server is down), the whole address is hashed, and an unavailable or excluded server's keys go to the
/// next server clockwise on the ring. Keys of the other servers never move, so their caches and sessions stay warm.
/// Ring points are named by <see cref="ServerModel.Authority"/>, so two gateways with the same servers agree.
/// </remarks>
internal sealed class IpHashPolicy : LoadBalancingPolicy
{
    private readonly KetamaRing _ring;

    /// <summary>The caller must pass the client's hash key (<see cref="KetamaRing.HashKey(System.Net.IPAddress)"/>).</summary>
    public override bool UsesHashKey => true;

    public IpHashPolicy(ServerModel[] servers)
        : base(servers)
    {
        var names = new string[servers.Length];
        var weights = new int[servers.Length];
        for (var i = 0; i < servers.Length; i++)
        {
            names[i] = servers[i].Authority;
            weights[i] = servers[i].Weight;
        }

        _ring = new KetamaRing(names, weights);
    }

    public override string Name => "ip_hash";

    public override ServerModel? Select(ulong hashKey, ServerModel? exclude)
    {
        var servers = Servers;
        var node = _ring.Lookup(hashKey, new EligibleFilter(servers, exclude));
        return node >= 0 ? servers[node] : SelectionHelpers.FallbackToExcluded(servers, exclude);
    }

    private readonly struct EligibleFilter : IKetamaNodeFilter
    {
        private readonly ServerModel[] _servers;
        private readonly ServerModel? _exclude;

        public EligibleFilter(ServerModel[] servers, ServerModel? exclude)
        {
            _servers = servers;
            _exclude = exclude;
        }

        public bool IsEligible(int node) => SelectionHelpers.IsEligible(_servers[node], _exclude);
    }
}
