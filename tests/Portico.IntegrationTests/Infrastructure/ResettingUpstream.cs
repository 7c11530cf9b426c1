using System.Net.Sockets;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// An "upstream" that accepts a connection, reads the request head, then resets the connection (RST, no response):
/// the failure after connecting that idempotent retries and passive health checks deal with.
/// </summary>
public sealed class ResettingUpstream : TcpTestUpstream
{
    private int _requests;

    private ResettingUpstream()
    {
        StartAccepting();
    }

    /// <summary>Requests whose head arrived before the reset.</summary>
    public int Requests => Volatile.Read(ref _requests);

    public static ResettingUpstream Start() => new();

    protected override async Task ServeAsync(TcpClient client, int connection)
    {
        try
        {
            var stream = client.GetStream();
            var buffer = new byte[8192];
            var seen = 0;
            while (seen < buffer.Length)
            {
                var read = await stream.ReadAsync(buffer.AsMemory(seen), Stopping);
                if (read == 0)
                {
                    break;
                }
                seen += read;
                if (buffer.AsSpan(0, seen).IndexOf("\r\n\r\n"u8) >= 0)
                {
                    Interlocked.Increment(ref _requests);
                    break;
                }
            }
            client.Client.LingerState = new LingerOption(true, 0);
        }
        catch (Exception)
        {
        }
        finally
        {
            client.Close();
        }
    }
}
