using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// The common part of the raw TCP "upstreams" that misbehave on purpose (<see cref="SilentUpstream"/>,
/// <see cref="ResettingUpstream"/>, <see cref="ScriptedUpstream"/>): a listener on 127.0.0.1 with a free port, an accept
/// loop that hands each connection to <see cref="ServeAsync"/>, and a disposal that stops the loop and closes every
/// connection still open.
/// </summary>
public abstract class TcpTestUpstream : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly ConcurrentBag<TcpClient> _connections = [];
    private readonly CancellationTokenSource _stop = new();
    private Task _acceptLoop = Task.CompletedTask;
    private int _accepted;

    protected TcpTestUpstream()
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
    }

    public int Port { get; }

    public string Address => $"127.0.0.1:{Port}";

    /// <summary>Connections accepted so far; connection numbers run from 1 to this.</summary>
    public int ConnectionsAccepted => Volatile.Read(ref _accepted);

    /// <summary>Cancelled when the upstream is disposed.</summary>
    protected CancellationToken Stopping => _stop.Token;

    /// <summary>Starts accepting; called by the derived constructor once its own state is set.</summary>
    protected void StartAccepting() => _acceptLoop = AcceptLoopAsync();

    /// <summary>Serves one accepted connection (numbered from 1); its exceptions are the implementation's to handle.</summary>
    protected abstract Task ServeAsync(TcpClient client, int connection);

    private async Task AcceptLoopAsync()
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                client.NoDelay = true;
                _connections.Add(client);
                _ = ServeAsync(client, Interlocked.Increment(ref _accepted));
            }
        }
        catch (Exception) when (_stop.IsCancellationRequested)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _acceptLoop;
        foreach (var client in _connections)
        {
            client.Dispose();
        }
        _stop.Dispose();
        GC.SuppressFinalize(this);
    }
}
