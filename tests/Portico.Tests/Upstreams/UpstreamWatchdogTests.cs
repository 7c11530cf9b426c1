using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

// The own HTTP/1.1 client's read timeout and client-abort handling: one periodic scan closes connections whose
// exchange is overdue or whose client went away. Real loopback sockets: what matters is that a pending receive ends.
public sealed class UpstreamWatchdogTests
{
    private sealed class Pair : IDisposable
    {
        private readonly Socket _listener;
        public readonly UpstreamClient Client;
        public readonly Socket Server;
        public readonly UpstreamConnection Connection;
        public readonly Http1Pool Pool;

        private Pair(Socket listener, UpstreamClient client, Socket server, UpstreamConnection connection, Http1Pool pool)
        {
            _listener = listener;
            Client = client;
            Server = server;
            Connection = connection;
            Pool = pool;
        }

        public static async Task<Pair> OpenAsync()
        {
            var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen();
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(listener.LocalEndPoint!);
            var server = await listener.AcceptAsync();
            var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
            var upstreamClient = new UpstreamClient(new UpstreamClientOptions());
            var pool = new Http1Pool(upstreamClient, "127.0.0.1", port, $"127.0.0.1:{port}");
            return new Pair(listener, upstreamClient, server, new UpstreamConnection(client, pool), pool);
        }

        public void Dispose()
        {
            Connection.Dispose();
            Server.Dispose();
            _listener.Dispose();
            Pool.Dispose();
            Client.Dispose();
        }
    }

    [Fact]
    public async Task Watch_NoAnswer_ClosesAfterTheTimeoutAndSaysTimedOut()
    {
        using var pair = await Pair.OpenAsync();
        var clock = Stopwatch.StartNew();

        pair.Connection.Watch(Environment.TickCount64 + 300, 300, CancellationToken.None);
        var receive = pair.Connection.ReceiveAsync(new byte[16]).AsTask();
        var error = await Record.ExceptionAsync(() => receive.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.True(error is SocketException or ObjectDisposedException, $"the pending receive ended with {error?.GetType().Name ?? "bytes"}");
        Assert.InRange(clock.ElapsedMilliseconds, 290, 3000);
        Assert.True(pair.Connection.TimedOut);
        Assert.True(pair.Connection.Expired);
        Assert.False(pair.Connection.EndWatch());
    }

    [Fact]
    public async Task Rearm_BeforeEachRead_KeepsASlowButSteadyExchangeOpen()
    {
        using var pair = await Pair.OpenAsync();

        pair.Connection.Watch(Environment.TickCount64 + 300, 300, CancellationToken.None);
        for (var i = 0; i < 8; i++)
        {
            // 8 × 150 ms = 1.2 s in all, four times the timeout, but never 300 ms without a rearm. Blocking sleeps and no
            // socket I/O here: the test host's thread pool can be starved, and the watchdog runs on its own thread.
            pair.Connection.Rearm(300);
            var started = Stopwatch.GetTimestamp();
            Thread.Sleep(150);
            Assert.False(pair.Connection.Expired, $"round {i}: closed within {Stopwatch.GetElapsedTime(started).TotalMilliseconds:0} ms of the rearm");
        }

        Assert.True(pair.Connection.EndWatch());
        await pair.Server.SendAsync(new byte[] { 7 });
        Assert.Equal(1, await pair.Connection.ReceiveAsync(new byte[16]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task EndWatch_ThenIdleLongerThanTheTimeout_ConnectionStaysOpen()
    {
        using var pair = await Pair.OpenAsync();

        pair.Connection.Watch(Environment.TickCount64 + 50, 50, CancellationToken.None);
        Assert.True(pair.Connection.EndWatch());
        await Task.Delay(300);   // several scans pass

        await pair.Server.SendAsync(new byte[] { 1, 2 });
        Assert.Equal(2, await pair.Connection.ReceiveAsync(new byte[16]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.False(pair.Connection.Expired);
    }

    [Fact]
    public async Task Watch_ClientAborts_ClosesTheConnectionButNotAsATimeout()
    {
        using var pair = await Pair.OpenAsync();
        using var aborted = new CancellationTokenSource();

        pair.Connection.Watch(Environment.TickCount64 + 60_000, 60_000, aborted.Token);
        var receive = pair.Connection.ReceiveAsync(new byte[16]).AsTask();
        var clock = Stopwatch.StartNew();
        aborted.Cancel();
        var error = await Record.ExceptionAsync(() => receive.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.True(error is SocketException or ObjectDisposedException, $"the pending receive ended with {error?.GetType().Name ?? "bytes"}");
        Assert.InRange(clock.ElapsedMilliseconds, 0, 3000);
        Assert.True(pair.Connection.Expired);
        Assert.False(pair.Connection.TimedOut);
    }

    [Fact]
    public async Task Dispose_LeavesTheWatchedSet()
    {
        var pair = await Pair.OpenAsync();
        Assert.True(pair.Connection.WatchSlot >= 0);

        pair.Dispose();

        Assert.Equal(-1, pair.Connection.WatchSlot);
    }

    [Fact]
    public void NoteTimeout_ShortTimeout_MakesTheScanAtLeastFourTimesAsFrequent()
    {
        UpstreamWatchdog.NoteTimeout(40);

        Assert.InRange(UpstreamWatchdog.PeriodMs, UpstreamWatchdog.MinPeriodMs, 10);
    }
}
