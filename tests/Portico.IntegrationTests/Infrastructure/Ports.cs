using System.Net;
using System.Net.Sockets;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>Free TCP ports on 127.0.0.1 for processes that cannot bind port 0 and report back.</summary>
public static class Ports
{
    // 20000-31999: below Linux's ephemeral range (32768-60999 by default). Servers bound to port 0 (TestUpstream)
    // and outgoing connections take their ports from that range, so a port handed out there could be taken between
    // this check and the gateway's bind, and the gateway would fail to start.
    private const int First = 20000;
    private const int Count = 12000;
    private static int _next = Environment.ProcessId % 4000 * 3;

    /// <summary>A port that was free a moment ago (bound and released, from a per-process range to avoid clashes).</summary>
    public static int GetFree()
    {
        while (true)
        {
            var candidate = First + (int)((uint)Interlocked.Increment(ref _next) % Count);
            try
            {
                using var listener = new TcpListener(IPAddress.Loopback, candidate);
                listener.Start();
                listener.Stop();
                return candidate;
            }
            catch (SocketException)
            {
            }
        }
    }
}
