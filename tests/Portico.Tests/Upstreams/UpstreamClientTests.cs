using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Portico.Observability.Metrics;
using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

// The pool connects through its own ConnectCallback (to count new connections). These tests use real loopback
// sockets because what matters is that a refused or hung connect still fails the way the forwarder classifies
// (a connect failure, safe to retry) and that kept-alive connections are reused, not counted again.
public sealed class UpstreamClientTests
{
    private static async Task<HttpResponseMessage> GetAsync(UpstreamClient client, int port, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/") { Version = HttpVersion.Version11 };
        return await client.Invoker.SendAsync(request, cancellationToken);
    }

    [Fact]
    public async Task ConnectCallback_SequentialRequests_OneConnectionCountedAndReused()
    {
        await using var app = await StartTargetAsync();
        using var client = new UpstreamClient(new UpstreamClientOptions());
        var counter = new CounterCell();
        client.ConnectionCounter = counter;

        for (var i = 0; i < 5; i++)
        {
            using var response = await GetAsync(client, app.Port);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await response.Content.ReadAsByteArrayAsync();
        }

        Assert.Equal(1, counter.Value);
        Assert.Equal(1, app.Connections);
    }

    [Fact]
    public async Task ConnectCallback_ConnectionRefused_FailsAsConnectionErrorAndCountsNothing()
    {
        using var held = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        held.Bind(new IPEndPoint(IPAddress.Loopback, 0));   // bound, not listening: connects are refused
        using var client = new UpstreamClient(new UpstreamClientOptions());
        var counter = new CounterCell();
        client.ConnectionCounter = counter;

        var error = await Assert.ThrowsAsync<HttpRequestException>(() => GetAsync(client, ((IPEndPoint)held.LocalEndPoint!).Port));

        Assert.Equal(HttpRequestError.ConnectionError, error.HttpRequestError);
        Assert.Equal(0, counter.Value);
    }

    [Fact]
    public async Task ConnectCallback_ServerNeverCompletesHandshake_ConnectTimeoutStillApplies()
    {
        // A listener whose accept queue is full: Linux drops further SYNs, so a connect hangs until the timeout.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var fillers = new List<Socket>();
        try
        {
            // A loopback connect to a queue with room completes in well under a second even on a loaded machine, so a
            // filler still pending after one is the sign the queue is full (a shorter wait once mistook a slow
            // machine for a full queue: the client then connected, and its request waited for an answer forever).
            var full = false;
            for (var i = 0; i < 8 && !full; i++)
            {
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                fillers.Add(filler);
                using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                try
                {
                    await filler.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), quick.Token);
                }
                catch (OperationCanceledException)
                {
                    full = true;
                }
            }
            Assert.True(full, "the accept queue did not fill");
            using var client = new UpstreamClient(new UpstreamClientOptions { ConnectTimeout = TimeSpan.FromMilliseconds(300) });
            var clock = Stopwatch.StartNew();

            // Bounded: if the connect timeout did not apply, this fails instead of hanging the run.
            using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            var error = await Record.ExceptionAsync(() => GetAsync(client, port, bound.Token));

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
            // The two shapes HttpForwarder.ClassifySendFailure maps to ConnectTimeout.
            Assert.True(error is OperationCanceledException { InnerException: TimeoutException }
                || error is HttpRequestException { InnerException: TimeoutException or OperationCanceledException { InnerException: TimeoutException } },
                $"unexpected: {error}");
        }
        finally
        {
            foreach (var filler in fillers)
            {
                filler.Dispose();
            }
        }
    }

    private static async Task<Target> StartTargetAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        var target = new Target();
        builder.WebHost.UseKestrel(options => options.Listen(IPAddress.Loopback, 0, listen => listen.Use(next => connection =>
        {
            Interlocked.Increment(ref target.ConnectionCount);
            return next(connection);
        })));
        var app = builder.Build();
        app.Run(static context => context.Response.WriteAsync("ok"));
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        target.App = app;
        target.Port = new Uri(address).Port;
        return target;
    }

    private sealed class Target : IAsyncDisposable
    {
        public int ConnectionCount;

        public WebApplication App { get; set; } = null!;

        public int Port { get; set; }

        public int Connections => Volatile.Read(ref ConnectionCount);

        public async ValueTask DisposeAsync()
        {
            await App.StopAsync();
            await App.DisposeAsync();
        }
    }
}
