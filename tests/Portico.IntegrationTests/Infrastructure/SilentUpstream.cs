using System.Net.Sockets;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// An "upstream" that accepts TCP connections and never answers: the sockets are held open (and whatever arrives
/// is read and discarded) until disposal. For read-timeout tests.
/// </summary>
public sealed class SilentUpstream : TcpTestUpstream
{
    private SilentUpstream()
    {
        StartAccepting();
    }

    /// <summary>Connections accepted so far.</summary>
    public int Accepted => ConnectionsAccepted;

    public static SilentUpstream Start() => new();

    protected override async Task ServeAsync(TcpClient client, int connection)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            var stream = client.GetStream();
            while (await stream.ReadAsync(buffer, Stopping) > 0)
            {
            }
        }
        catch (Exception)
        {
            // Disposal or a reset ends the drain; nothing to report.
        }
    }
}
