using System.Collections.Concurrent;
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
using Portico.Config;
using Portico.Gateway;
using Portico.Upstreams;
using Portico.Upstreams.Health;

namespace Portico.Tests.Upstreams;

// These tests probe real loopback sockets with real time: the probe loop's value is in how it behaves against a
// real HTTP server and a real refused connect. Intervals are 1 s (the config's smallest) and thresholds 1–2, so
// each test runs in a few seconds. Conditions are polled, not slept for; the few fixed waits check that
// something does NOT happen (no duplicate or leftover probes) and say so.
public sealed class ActiveHealthCheckerTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(8);

    [Fact]
    public async Task HttpCheck_TargetAnswers200_StaysHealthyAndSendsProbeRequest()
    {
        await using var target = await HttpTarget.StartAsync();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(path: "/healthz"), target.Port)));
        await using var checker = NewChecker();
        checker.Apply(snapshot);
        var state = StateOf(snapshot, "api", 0);

        await WaitUntil(() => checker.GetStatus(state)?.Probes >= 2, "two probes");

        Assert.True(state.IsHealthy);
        var status = checker.GetStatus(state)!;
        Assert.True(status.Succeeded);
        Assert.Equal("status 200", status.Result);
        Assert.True(status.ConsecutiveSuccesses >= 2);
        Assert.Equal(0, status.ConsecutiveFailures);
        Assert.Equal("api", status.Upstream);
        Assert.Equal($"127.0.0.1:{target.Port}", status.Server);
        Assert.Equal("http", status.Type);
        Assert.Equal($"GET http://127.0.0.1:{target.Port}/healthz", status.Target);
        Assert.NotNull(status.CheckedAt);
        Assert.True(target.Seen.TryPeek(out var seen));
        Assert.Equal("GET", seen.Method);
        Assert.Equal("/healthz", seen.Path);
        Assert.Equal($"127.0.0.1:{target.Port}", seen.Host);
        Assert.Equal("portico-health-check", seen.UserAgent);
    }

    [Fact]
    public async Task HttpCheck_TargetAnswers500_DownAfterUnhealthyThresholdAndUpAfterHealthyThreshold()
    {
        await using var target = await HttpTarget.StartAsync();
        target.StatusCode = 500;
        var sink = new LogSink();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(unhealthy: 2, healthy: 2), target.Port)));
        await using var checker = NewChecker(sink);
        checker.Apply(snapshot);
        var state = StateOf(snapshot, "api", 0);

        await WaitUntil(() => checker.GetStatus(state)?.Probes >= 1, "the first probe");
        Assert.True(state.IsHealthy); // one failure is below unhealthy_threshold 2
        await WaitUntil(() => !state.IsHealthy, "the server to go down");
        var down = checker.GetStatus(state)!;
        Assert.True(down.Probes >= 2);
        Assert.True(down.ConsecutiveFailures >= 2);
        Assert.Equal("status 500", down.Result);
        Assert.False(down.Succeeded);

        target.StatusCode = 200;
        await WaitUntil(() => checker.GetStatus(state) is { Succeeded: true }, "the first good probe");
        Assert.False(state.IsHealthy); // one success is below healthy_threshold 2
        await WaitUntil(() => state.IsHealthy, "the server to come back");
        Assert.True(checker.GetStatus(state)!.ConsecutiveSuccesses >= 2);

        // One log line per transition, not one per failed probe.
        var warning = Assert.Single(sink.Entries, e => e.Level == LogLevel.Warning);
        Assert.Equal(3001, warning.EventId);
        Assert.Contains("api", warning.Message);
        Assert.Contains($"127.0.0.1:{target.Port}", warning.Message);
        Assert.Contains("status 500", warning.Message);
        var info = Assert.Single(sink.Entries, e => e.Level == LogLevel.Information);
        Assert.Equal(3002, info.EventId);
    }

    [Fact]
    public async Task TcpCheck_ListeningPort_StaysHealthy()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            var snapshot = GatewayCompiler.Compile(Config(null, Upstream("db", Tcp(), port)));
            await using var checker = NewChecker();
            checker.Apply(snapshot);
            var state = StateOf(snapshot, "db", 0);

            await WaitUntil(() => checker.GetStatus(state)?.Probes >= 2, "two probes");

            Assert.True(state.IsHealthy);
            var status = checker.GetStatus(state)!;
            Assert.Equal("connected", status.Result);
            Assert.Equal("tcp", status.Type);
            Assert.Equal($"tcp 127.0.0.1:{port}", status.Target);
        }
        finally
        {
            listener.Stop();
        }
    }

    [Fact]
    public async Task TcpCheck_ClosedPort_GoesDownWithConnectionRefused()
    {
        var port = ClosedPort();
        var sink = new LogSink();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("db", Tcp(), port)));
        await using var checker = NewChecker(sink);
        checker.Apply(snapshot);
        var state = StateOf(snapshot, "db", 0);

        await WaitUntil(() => !state.IsHealthy, "the server to go down");

        Assert.Equal("connection refused", checker.GetStatus(state)!.Result);
        var warning = Assert.Single(sink.Entries, e => e.Level == LogLevel.Warning);
        Assert.Contains("connection refused", warning.Message);
    }

    [Fact]
    public async Task HttpCheck_TargetNeverAnswers_FailsWithTimeout()
    {
        // Accepts connections and never writes a byte.
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = new ConcurrentBag<Socket>();
        using var stop = new CancellationTokenSource();
        var acceptLoop = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    accepted.Add(await listener.AcceptSocketAsync(stop.Token));
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
        try
        {
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            var snapshot = GatewayCompiler.Compile(Config(null, Upstream("slow", Http(), port)));
            await using var checker = NewChecker();
            checker.Apply(snapshot);
            var state = StateOf(snapshot, "slow", 0);

            await WaitUntil(() => !state.IsHealthy, "the server to go down");

            Assert.Equal("timeout", checker.GetStatus(state)!.Result);
        }
        finally
        {
            stop.Cancel();
            await acceptLoop;
            listener.Stop();
            foreach (var socket in accepted)
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task Apply_UnchangedServer_KeepsItsLoopWithoutDuplicateProbes()
    {
        await using var target = await HttpTarget.StartAsync();
        // A fresh config object per call, as a reload parses one: equal values, new list instances.
        GatewayConfig NewConfig() => Config(null, Upstream("api", Http(unhealthy: 2), target.Port));
        var snapshot = GatewayCompiler.Compile(NewConfig());
        await using var checker = NewChecker();
        checker.Apply(snapshot);
        var state = StateOf(snapshot, "api", 0);
        await WaitUntil(() => checker.GetStatus(state)?.Probes >= 2, "two probes");
        var probesBefore = checker.GetStatus(state)!.Probes;

        for (var i = 0; i < 10; i++)
        {
            snapshot = GatewayCompiler.Compile(NewConfig(), snapshot);
            Assert.Same(state, StateOf(snapshot, "api", 0));
            checker.Apply(snapshot);
        }

        // A restarted loop would start over from zero probes.
        Assert.True(checker.GetStatus(state)!.Probes >= probesBefore);
        // Timing: over two seconds one loop at 1 s sends about two probes; ten restarted loops would each have
        // probed at once (the first probe comes within 10 % of the interval).
        var requestsBefore = target.Requests;
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.InRange(target.Requests - requestsBefore, 1, 3);
        Assert.True(checker.GetStatus(state)!.Probes > probesBefore);
    }

    [Fact]
    public async Task Apply_ChangedSettings_RestartsTheLoopWithTheNewSettings()
    {
        await using var target = await HttpTarget.StartAsync();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(path: "/old"), target.Port)));
        await using var checker = NewChecker();
        checker.Apply(snapshot);
        var state = StateOf(snapshot, "api", 0);
        await WaitUntil(() => target.CountPath("/old") >= 1, "a probe of /old");

        snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(path: "/new"), target.Port)), snapshot);
        Assert.Same(state, StateOf(snapshot, "api", 0));
        checker.Apply(snapshot);
        await WaitUntil(() => target.CountPath("/new") >= 1, "a probe of /new");
        var oldProbes = target.CountPath("/old");

        // Timing: a leftover loop would probe /old again within its 1 s interval.
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Assert.Equal(oldProbes, target.CountPath("/old"));
        Assert.EndsWith("/new", checker.GetStatus(state)!.Target);
    }

    [Fact]
    public async Task Apply_ServerRemoved_StopsItsLoop()
    {
        await using var kept = await HttpTarget.StartAsync();
        await using var removed = await HttpTarget.StartAsync();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(), kept.Port, removed.Port)));
        await using var checker = NewChecker();
        checker.Apply(snapshot);
        var removedState = StateOf(snapshot, "api", 1);
        await WaitUntil(() => kept.Requests >= 1 && removed.Requests >= 1, "a probe of each server");

        snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(), kept.Port)), snapshot);
        checker.Apply(snapshot);

        Assert.Null(checker.GetStatus(removedState));
        var removedRequests = removed.Requests;
        var keptRequests = kept.Requests;
        // Timing: a loop left running would probe the removed server again within its 1 s interval.
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.Equal(removedRequests, removed.Requests);
        Assert.True(kept.Requests > keptRequests);
    }

    [Fact]
    public async Task Apply_TopLevelHealthCheck_IsTheDefaultForUpstreamsWithoutTheirOwn()
    {
        await using var inherits = await HttpTarget.StartAsync();
        await using var optsOut = await HttpTarget.StartAsync();
        await using var ownTcp = await HttpTarget.StartAsync();
        var snapshot = GatewayCompiler.Compile(Config(
            Http(path: "/ping"),
            Upstream("inherits", null, inherits.Port),
            Upstream("opts-out", Http() with { Enabled = false }, optsOut.Port),
            Upstream("own-tcp", Tcp(), ownTcp.Port)));
        await using var checker = NewChecker();
        checker.Apply(snapshot);

        await WaitUntil(() => inherits.CountPath("/ping") >= 2, "two probes of /ping");
        await WaitUntil(() => checker.GetStatus(StateOf(snapshot, "own-tcp", 0))?.Probes >= 1, "a tcp probe");

        Assert.Equal(inherits.Requests, inherits.CountPath("/ping"));
        Assert.Null(checker.GetStatus(StateOf(snapshot, "opts-out", 0)));
        Assert.Equal(0, optsOut.Requests);
        Assert.Equal("tcp", checker.GetStatus(StateOf(snapshot, "own-tcp", 0))!.Type);
        Assert.Equal(0, ownTcp.Requests); // a tcp check connects and sends nothing
    }

    [Fact]
    public void ResolveConfig_PicksOwnThenTopLevelThenSeed002Shorthand()
    {
        var topLevel = Http(path: "/top");
        var own = Http(path: "/own");

        Assert.Same(own, ActiveHealthChecker.ResolveConfig(new GatewayConfig { HealthCheck = topLevel }, new UpstreamConfig { HealthCheck = own }));
        Assert.Same(topLevel, ActiveHealthChecker.ResolveConfig(new GatewayConfig { HealthCheck = topLevel }, new UpstreamConfig()));
        Assert.Null(ActiveHealthChecker.ResolveConfig(new GatewayConfig(), new UpstreamConfig()));
        Assert.Null(ActiveHealthChecker.ResolveConfig(new GatewayConfig { HealthCheck = topLevel with { Enabled = false } }, new UpstreamConfig()));

        // Seed 002: health_check_interval_secs alone is Pingora's TcpHealthCheck at that interval ...
        var shorthand = ActiveHealthChecker.ResolveConfig(new GatewayConfig(), new UpstreamConfig { HealthCheckIntervalSecs = 7 });
        Assert.NotNull(shorthand);
        Assert.Equal("tcp", shorthand.Type);
        Assert.Equal(7, shorthand.IntervalSeconds);
        // ... sets the interval of the top-level default ...
        var inherited = ActiveHealthChecker.ResolveConfig(new GatewayConfig { HealthCheck = topLevel }, new UpstreamConfig { HealthCheckIntervalSecs = 7 });
        Assert.Equal("/top", inherited!.Path);
        Assert.Equal(7, inherited.IntervalSeconds);
        // ... and yields to the upstream's own block.
        Assert.Same(own, ActiveHealthChecker.ResolveConfig(new GatewayConfig(), new UpstreamConfig { HealthCheck = own, HealthCheckIntervalSecs = 7 }));
    }

    [Fact]
    public async Task HttpCheck_ExpectedStatusCodes200And204_Accepts204()
    {
        await using var lenient = await HttpTarget.StartAsync();
        await using var strict = await HttpTarget.StartAsync();
        lenient.StatusCode = 204;
        strict.StatusCode = 204;
        var snapshot = GatewayCompiler.Compile(Config(null,
            Upstream("lenient", Http(codes: [200, 204]), lenient.Port),
            Upstream("strict", Http(codes: [200]), strict.Port)));
        await using var checker = NewChecker();
        checker.Apply(snapshot);
        var lenientState = StateOf(snapshot, "lenient", 0);
        var strictState = StateOf(snapshot, "strict", 0);

        await WaitUntil(() => !strictState.IsHealthy, "the strict server to go down");
        await WaitUntil(() => checker.GetStatus(lenientState)?.Probes >= 1, "a probe of the lenient server");

        Assert.Equal("status 204", checker.GetStatus(strictState)!.Result);
        Assert.True(lenientState.IsHealthy);
        Assert.True(checker.GetStatus(lenientState)!.Succeeded);
        Assert.Equal("status 204", checker.GetStatus(lenientState)!.Result);
    }

    [Fact]
    public async Task Apply_ChecksTurnedOff_MarksTheServerItTookDownUpAgain()
    {
        var port = ClosedPort();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("db", Tcp(), port)));
        await using var checker = NewChecker();
        checker.Apply(snapshot);
        var state = StateOf(snapshot, "db", 0);
        await WaitUntil(() => !state.IsHealthy, "the server to go down");

        snapshot = GatewayCompiler.Compile(Config(null, Upstream("db", Tcp() with { Enabled = false }, port)), snapshot);
        checker.Apply(snapshot);

        Assert.True(state.IsHealthy); // nothing else would ever bring it back
        Assert.Null(checker.GetStatus(state));
    }

    [Fact]
    public async Task DisposeAsync_StopsEveryLoop()
    {
        await using var target = await HttpTarget.StartAsync();
        var snapshot = GatewayCompiler.Compile(Config(null, Upstream("api", Http(), target.Port)));
        var checker = NewChecker();
        checker.Apply(snapshot);
        await WaitUntil(() => target.Requests >= 1, "a probe");

        await checker.DisposeAsync();
        checker.Apply(snapshot); // a reload racing with shutdown: ignored
        var requests = target.Requests;

        Assert.Null(checker.GetStatus(StateOf(snapshot, "api", 0)));
        // Timing: a loop left running would probe again within its 1 s interval.
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Assert.Equal(requests, target.Requests);
    }

    private static ActiveHealthChecker NewChecker(LogSink? sink = null)
    {
        var factory = LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(LogLevel.Information);
            if (sink is not null)
            {
                builder.AddProvider(sink);
            }
        });
        return new ActiveHealthChecker(factory, TimeProvider.System);
    }

    private static GatewayConfig Config(HealthCheckConfig? topLevel, params UpstreamConfig[] upstreams) =>
        new() { HealthCheck = topLevel, Upstreams = upstreams };

    private static UpstreamConfig Upstream(string name, HealthCheckConfig? check, params int[] ports)
    {
        var servers = new UpstreamServerConfig[ports.Length];
        for (var i = 0; i < ports.Length; i++)
        {
            servers[i] = new UpstreamServerConfig { Host = "127.0.0.1", Port = ports[i] };
        }

        return new UpstreamConfig { Name = name, HealthCheck = check, Servers = servers };
    }

    private static HealthCheckConfig Http(int unhealthy = 1, int healthy = 1, string path = "/health", int[]? codes = null) => new()
    {
        Type = "http",
        IntervalSeconds = 1,
        TimeoutSeconds = 1,
        UnhealthyThreshold = unhealthy,
        HealthyThreshold = healthy,
        Path = path,
        ExpectedStatusCodes = codes is null ? [200] : [.. codes],
    };

    private static HealthCheckConfig Tcp() => new()
    {
        Type = "tcp",
        IntervalSeconds = 1,
        TimeoutSeconds = 1,
        UnhealthyThreshold = 1,
        HealthyThreshold = 1,
    };

    private static ServerState StateOf(GatewaySnapshot snapshot, string upstream, int index) =>
        snapshot.Upstreams[upstream].Servers[index].State;

    /// <summary>
    /// A loopback port that refuses connections for the whole test run: a socket is bound to it but never listens,
    /// so no other test can take the port (a port merely bound and released could be reused by a parallel test).
    /// </summary>
    private static int ClosedPort()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        HeldSockets.Add(socket);
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private static readonly ConcurrentBag<Socket> HeldSockets = [];

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > Wait)
            {
                Assert.Fail($"Timed out after {Wait.TotalSeconds} s waiting for {what}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>An in-process Kestrel server on 127.0.0.1:0 that answers every request with <see cref="StatusCode"/>.</summary>
    private sealed class HttpTarget : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private int _statusCode = 200;
        private int _requests;

        private HttpTarget(WebApplication app) => _app = app;

        public int Port { get; private set; }

        public int StatusCode
        {
            get => Volatile.Read(ref _statusCode);
            set => Volatile.Write(ref _statusCode, value);
        }

        public int Requests => Volatile.Read(ref _requests);

        public ConcurrentQueue<(string Method, string Path, string Host, string UserAgent)> Seen { get; } = new();

        public int CountPath(string path)
        {
            var count = 0;
            foreach (var request in Seen)
            {
                if (request.Path == path)
                {
                    count++;
                }
            }

            return count;
        }

        public static async Task<HttpTarget> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseKestrel(options => options.Listen(IPAddress.Loopback, 0));
            var app = builder.Build();
            var target = new HttpTarget(app);
            app.Run(context =>
            {
                var request = context.Request;
                target.Seen.Enqueue((request.Method, request.Path.Value ?? "", request.Host.Value ?? "", request.Headers.UserAgent.ToString()));
                Interlocked.Increment(ref target._requests);
                context.Response.StatusCode = target.StatusCode;
                return Task.CompletedTask;
            });
            await app.StartAsync();
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            target.Port = new Uri(address).Port;
            return target;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }

    /// <summary>Captures log entries so a test can count transitions.</summary>
    private sealed class LogSink : ILoggerProvider, ILogger
    {
        public ConcurrentQueue<(LogLevel Level, int EventId, string Message)> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Enqueue((logLevel, eventId.Id, formatter(state, exception)));

        public void Dispose()
        {
        }
    }
}
