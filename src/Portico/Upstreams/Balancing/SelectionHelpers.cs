namespace Portico.Upstreams;

/// <summary>Checks shared by the balancers.</summary>
internal static class SelectionHelpers
{
    /// <summary>True when the balancer may pick <paramref name="server"/> on a first choice: available and not excluded.</summary>
    public static bool IsEligible(ServerModel server, ServerModel? exclude) =>
        !ReferenceEquals(server, exclude) && server.State.IsAvailable;

    /// <summary>
    /// The answer when no server but <paramref name="exclude"/> is eligible: the excluded server if it is one of
    /// <paramref name="servers"/> and still available (a retry on the same server beats a 503), else null.
    /// </summary>
    public static ServerModel? FallbackToExcluded(ServerModel[] servers, ServerModel? exclude)
    {
        if (exclude is null || !exclude.State.IsAvailable)
        {
            return null;
        }

        // Index is the position in the upstream's list; the reference check guards against a server of another
        // upstream (or of an older snapshot) being passed in.
        var index = exclude.Index;
        return (uint)index < (uint)servers.Length && ReferenceEquals(servers[index], exclude) ? exclude : null;
    }
}
