using System.Net;
using System.Net.Sockets;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>Free TCP ports on 127.0.0.1 for processes that cannot bind port 0 and report back.</summary>
public static class Ports
{
    private static int _next = 20000 + Environment.ProcessId % 10000 * 3;

    /// <summary>A port that was free a moment ago (bound and released, from a per-process range to avoid clashes).</summary>
    public static int GetFree()
    {
        while (true)
        {
            var candidate = 20000 + Interlocked.Increment(ref _next) % 40000;
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
