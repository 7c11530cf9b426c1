using System.Net;
using System.Net.Sockets;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// An "upstream" that accepts a connection, reads the request head, then resets the connection (RST, no response):
/// the failure after connecting that idempotent retries and passive health checks deal with.
/// </summary>
public sealed class ResettingUpstream : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _requests;

    private ResettingUpstream()
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = LoopAsync();
    }

    public int Port { get; }

    public string Address => $"127.0.0.1:{Port}";

    /// <summary>Requests whose head arrived before the reset.</summary>
    public int Requests => Volatile.Read(ref _requests);

    public static ResettingUpstream Start() => new();

    private async Task LoopAsync()
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                _ = HandleAsync(client);
            }
        }
        catch (Exception) when (_stop.IsCancellationRequested)
        {
        }
    }

    private async Task HandleAsync(TcpClient client)
    {
        try
        {
            var stream = client.GetStream();
            var buffer = new byte[8192];
            var seen = 0;
            while (seen < buffer.Length)
            {
                var read = await stream.ReadAsync(buffer.AsMemory(seen), _stop.Token);
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

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        try
        {
            await _loop;
        }
        catch (Exception)
        {
        }
    }
}
