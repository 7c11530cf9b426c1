using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using Microsoft.Extensions.Logging;
using Portico.Config;
using Portico.Gateway;

namespace Portico.Upstreams.Health;

/// <summary>
/// Active health checks: one background probe loop per upstream server whose effective
/// <see cref="HealthCheckConfig"/> is enabled. A loop marks its server down with
/// <see cref="ServerState.SetHealthy"/> after <c>unhealthy_threshold</c> consecutive failed probes and up again
/// after <c>healthy_threshold</c> consecutive successful ones.
/// </summary>
/// <remarks>
/// <para>How it is meant to be wired (the host owns exactly one instance):</para>
/// <list type="number">
/// <item>Create it once in the host, next to the snapshot holder:
/// <c>new ActiveHealthChecker(loggerFactory, TimeProvider.System)</c>.</item>
/// <item>Call <see cref="Apply"/> with the first snapshot when the gateway starts, and again with the new
/// snapshot after every successful reload (after the <c>Interlocked.Exchange</c>). Apply is cheap and
/// idempotent: the loop of a server whose <see cref="ServerState"/> object and check settings did not change
/// keeps running (the compiler hands unchanged servers the same state object), so a reload neither resets the
/// thresholds nor sends an extra probe. Loops of removed servers, or whose settings changed, are stopped;
/// a changed server gets a fresh loop.</item>
/// <item>Call <see cref="DisposeAsync"/> when the host stops (after the listeners stop accepting); it cancels
/// every loop, waits for them, and disposes the probe connection pool.</item>
/// <item>The admin plane reads <see cref="GetStatus"/> per server to show the last probe result.</item>
/// </list>
/// <para>
/// Probes never use the data-plane pools (<see cref="UpstreamClient"/>): they would show up in the reuse
/// statistics and keep idle connections alive that the balancer would otherwise let go. All HTTP probes share
/// one <see cref="SocketsHttpHandler"/> with a short connection lifetime. The one exception is a second
/// handler, created only when some server has <c>tls_verify: false</c>: with a bare SocketsHttpHandler the
/// certificate callback receives the <see cref="SslStream"/>, not the request, so it cannot tell which server
/// (host and port) it is validating; it may seem simpler to match on the TLS host name, but two servers on
/// one host with different ports and different tls_verify would then share one answer.
/// </para>
/// <para>
/// The healthy flag is shared with anything else that calls <see cref="ServerState.SetHealthy"/> (passive
/// checks, a circuit breaker): after <c>healthy_threshold</c> good probes this checker marks the server up
/// even if someone else marked it down. When checks are turned off for a server that this checker marked
/// down, it is marked up again, since nothing else would ever bring it back.
/// </para>
/// </remarks>
public sealed partial class ActiveHealthChecker : IAsyncDisposable
{
    /// <summary>The User-Agent of every HTTP probe, so upstream access logs can filter probes out.</summary>
    public const string UserAgent = "portico-health-check";

    // Short, so that DNS changes and upstream restarts are noticed quickly and a probe regularly exercises the
    // connect path; probes are rare, so reconnecting costs nothing worth measuring.
    private static readonly TimeSpan ProbeConnectionLifetime = TimeSpan.FromSeconds(30);

    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private readonly Lock _lock = new();
    private readonly Dictionary<ServerState, ProbeLoop> _loops = new(ReferenceEqualityComparer.Instance);
    private readonly List<Task> _stopping = [];
    private readonly ConditionalWeakTable<ServerState, HealthCheckStatus> _statuses = new();
    private readonly HttpMessageInvoker _invoker;
    private HttpMessageInvoker? _insecureInvoker;
    private bool _disposed;

    /// <param name="loggerFactory">Transitions log at Warning (down) and Information (up); each probe at Debug.</param>
    /// <param name="timeProvider">The clock for intervals, jitter delays, timeouts and <see cref="HealthCheckStatus.CheckedAt"/>.</param>
    public ActiveHealthChecker(ILoggerFactory loggerFactory, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        ArgumentNullException.ThrowIfNull(timeProvider);
        _logger = loggerFactory.CreateLogger<ActiveHealthChecker>();
        _timeProvider = timeProvider;
        _invoker = CreateInvoker(verifyCertificates: true);
    }

    /// <summary>
    /// The health check that applies to <paramref name="upstream"/>, or null when it has none or it is disabled.
    /// The upstream's own <c>health_check</c> wins; otherwise the top-level <c>health_check</c> is the default.
    /// Seed 002's <c>health_check_interval_secs</c> (used only when the upstream has no block of its own) sets
    /// the interval of the default, or alone means a TCP check at that interval, as the seed's Pingora
    /// <c>TcpHealthCheck</c>.
    /// </summary>
    public static HealthCheckConfig? ResolveConfig(GatewayConfig config, UpstreamConfig upstream)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(upstream);
        var check = upstream.HealthCheck ?? config.HealthCheck;
        if (upstream.HealthCheck is null && upstream.HealthCheckIntervalSecs is { } seconds)
        {
            check = (check ?? new HealthCheckConfig { Type = "tcp" }) with { IntervalSeconds = seconds };
        }

        return check is { Enabled: true } ? check : null;
    }

    /// <summary>
    /// (Re)configures the probe loops for <paramref name="snapshot"/>: starts one for every server with an
    /// enabled check, keeps the running loop of a server whose state object and settings are unchanged, and
    /// stops the others. Returns at once; probes run in the background. Does nothing after <see cref="DisposeAsync"/>
    /// (a reload racing with shutdown is not an error).
    /// </summary>
    public void Apply(GatewaySnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            var present = new HashSet<ServerState>(ReferenceEqualityComparer.Instance);
            var wanted = new Dictionary<ServerState, (ProbeSettings Settings, HealthCheckConfig Check)>(ReferenceEqualityComparer.Instance);
            foreach (var upstream in snapshot.Upstreams.Values)
            {
                var check = ResolveConfig(snapshot.Config, upstream.Config);
                foreach (var server in upstream.Servers)
                {
                    present.Add(server.State);
                    if (check is not null)
                    {
                        // The compiler gives every upstream its own state objects, so a state appears once; if it
                        // ever appeared twice, one loop is enough.
                        wanted.TryAdd(server.State, (ProbeSettings.Create(upstream, server, check), check));
                    }
                }
            }

            _stopping.RemoveAll(static t => t.IsCompleted);
            var stale = new List<ServerState>();
            foreach (var (state, loop) in _loops)
            {
                if (!wanted.TryGetValue(state, out var next) || next.Settings != loop.Settings)
                {
                    stale.Add(state);
                }
            }

            var inherited = new HashSet<ServerState>(ReferenceEqualityComparer.Instance);
            foreach (var state in stale)
            {
                var loop = _loops[state];
                _loops.Remove(state);
                loop.Stop();
                _stopping.Add(loop.Task);
                if (wanted.ContainsKey(state))
                {
                    // Settings changed: the new loop takes over, and with it the duty to bring the server back.
                    if (loop.MarkedDown)
                    {
                        inherited.Add(state);
                    }

                    continue;
                }

                _statuses.Remove(state);
                if (present.Contains(state) && loop.MarkedDown && !state.IsHealthy)
                {
                    state.SetHealthy(true);
                    Log.ChecksOffMarkedUp(_logger, loop.Settings.Upstream, loop.Settings.Authority);
                }
            }

            foreach (var (state, next) in wanted)
            {
                if (_loops.ContainsKey(state))
                {
                    continue;
                }

                var invoker = next.Settings.VerifyCertificate ? _invoker : _insecureInvoker ??= CreateInvoker(verifyCertificates: false);
                var loop = new ProbeLoop(this, state, next.Settings, next.Check, invoker, inherited.Contains(state));
                _loops.Add(state, loop);
                _statuses.AddOrUpdate(state, loop.InitialStatus());
                loop.Start();
            }
        }
    }

    /// <summary>The last probe result of a server, or null when no active check runs for it.</summary>
    public HealthCheckStatus? GetStatus(ServerState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        return _statuses.TryGetValue(state, out var status) ? status : null;
    }

    /// <summary>Stops every probe loop, waits for them to end, and closes the probe connections.</summary>
    public async ValueTask DisposeAsync()
    {
        var tasks = new List<Task>();
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var (state, loop) in _loops)
            {
                loop.Stop();
                tasks.Add(loop.Task);
                _statuses.Remove(state);
            }

            _loops.Clear();
            tasks.AddRange(_stopping);
            _stopping.Clear();
        }

        // The loops catch everything, so this never throws.
        await Task.WhenAll(tasks);
        _invoker.Dispose();
        _insecureInvoker?.Dispose();
    }

    private static HttpMessageInvoker CreateInvoker(bool verifyCertificates)
    {
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            // No ConnectTimeout of its own: the probe's timeout_seconds covers connect and response alike.
            PooledConnectionLifetime = ProbeConnectionLifetime,
            PooledConnectionIdleTimeout = ProbeConnectionLifetime,
            MaxResponseHeadersLength = 64,
            // No traceparent on probes: they are not part of any request's trace.
            ActivityHeadersPropagator = null,
            SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                RemoteCertificateValidationCallback = verifyCertificates ? null : static (_, _, _, _) => true,
            },
        };
        return new HttpMessageInvoker(handler, disposeHandler: true);
    }

    /// <summary>Records a probe result and applies the thresholds; false when the loop was stopped meanwhile.</summary>
    private bool Record(ProbeLoop loop, ProbeResult result, CancellationToken token)
    {
        // Under the lock, so that a loop that Apply just stopped cannot flip the state or re-add a status
        // after Apply removed it.
        lock (_lock)
        {
            if (token.IsCancellationRequested)
            {
                return false;
            }

            var status = loop.Count(result, _timeProvider.GetUtcNow());
            _statuses.AddOrUpdate(loop.State, status);
            var settings = loop.Settings;
            Log.Probe(_logger, settings.Upstream, settings.Authority, result.Text);
            if (!result.Succeeded && status.ConsecutiveFailures >= settings.UnhealthyThreshold && loop.State.IsHealthy)
            {
                // Logged before the flip, so whoever sees the server down also finds the reason in the log.
                Log.MarkedDown(_logger, settings.Upstream, settings.Authority, status.ConsecutiveFailures, result.Text);
                loop.MarkedDown = true;
                loop.State.SetHealthy(false);
            }
            else if (result.Succeeded && status.ConsecutiveSuccesses >= settings.HealthyThreshold && !loop.State.IsHealthy)
            {
                Log.MarkedUp(_logger, settings.Upstream, settings.Authority, status.ConsecutiveSuccesses, result.Text);
                loop.MarkedDown = false;
                loop.State.SetHealthy(true);
            }

            return true;
        }
    }

    private static string Describe(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is SocketException socket)
            {
                return socket.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => "connection refused",
                    SocketError.TimedOut => "timeout",
                    SocketError.ConnectionReset => "connection reset",
                    SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => "host not found",
                    SocketError.HostUnreachable or SocketError.NetworkUnreachable => "host unreachable",
                    _ => $"socket error {socket.SocketErrorCode}",
                };
            }

            if (e is AuthenticationException)
            {
                return $"tls handshake failed: {e.Message}";
            }
        }

        if (exception is HttpRequestException http)
        {
            return http.HttpRequestError switch
            {
                HttpRequestError.NameResolutionError => "host not found",
                HttpRequestError.SecureConnectionError => "tls handshake failed",
                HttpRequestError.ResponseEnded => "connection closed before the response",
                HttpRequestError.InvalidResponse => "invalid response",
                HttpRequestError.VersionNegotiationError => "http version not supported",
                _ => $"http error: {http.Message}",
            };
        }

        return $"{exception.GetType().Name}: {exception.Message}";
    }

    /// <summary>
    /// Everything that decides how a server is probed. Equal settings (and the same state object) mean a reload
    /// keeps the running loop. Status codes are a string so that record equality compares them by value.
    /// </summary>
    private sealed record ProbeSettings(
        string Upstream,
        string Host,
        int Port,
        string Authority,
        bool Tcp,
        bool Https,
        bool VerifyCertificate,
        bool Http2,
        string Method,
        string Path,
        string ExpectedStatusCodes,
        TimeSpan Interval,
        TimeSpan Timeout,
        int HealthyThreshold,
        int UnhealthyThreshold)
    {
        public static ProbeSettings Create(UpstreamModel upstream, ServerModel server, HealthCheckConfig check)
        {
            var host = server.Host.StartsWith('[') && server.Host.EndsWith(']') ? server.Host[1..^1] : server.Host;
            return new ProbeSettings(
                upstream.Name,
                host,
                server.Port,
                server.Authority,
                Tcp: string.Equals(check.Type, "tcp", StringComparison.OrdinalIgnoreCase),
                Https: check.UseHttps || server.Tls,
                VerifyCertificate: server.TlsVerify,
                // An h2c or gRPC upstream may not speak HTTP/1.1 at all; probe it the way the data plane talks to it.
                Http2: upstream.Protocol == UpstreamProtocol.Http2,
                check.Method,
                check.Path,
                string.Join(',', check.ExpectedStatusCodes),
                TimeSpan.FromSeconds(Math.Max(1, check.IntervalSeconds)),
                TimeSpan.FromSeconds(Math.Max(1, check.TimeoutSeconds)),
                Math.Max(1, check.HealthyThreshold),
                Math.Max(1, check.UnhealthyThreshold));
        }
    }

    private readonly record struct ProbeResult(bool Succeeded, string Text);

    /// <summary>One server's probe loop: jitter, probe, record, wait an interval, repeat until stopped.</summary>
    private sealed class ProbeLoop
    {
        private readonly ActiveHealthChecker _owner;
        private readonly HttpMessageInvoker _invoker;
        private readonly CancellationTokenSource _stop = new();
        private readonly int[] _expected;
        private readonly HttpMethod _method;
        private readonly Uri? _uri;
        private readonly string _target;
        private HealthCheckStatus _status;
        private volatile bool _markedDown;

        public ProbeLoop(ActiveHealthChecker owner, ServerState state, ProbeSettings settings, HealthCheckConfig check,
            HttpMessageInvoker invoker, bool markedDown)
        {
            _owner = owner;
            State = state;
            Settings = settings;
            _invoker = invoker;
            _markedDown = markedDown;
            _expected = [.. check.ExpectedStatusCodes];
            _method = new HttpMethod(settings.Method);
            if (settings.Tcp)
            {
                _target = $"tcp {settings.Authority}";
            }
            else
            {
                _uri = new Uri($"{(settings.Https ? "https" : "http")}://{settings.Authority}{settings.Path}");
                _target = $"{settings.Method} {_uri}";
            }

            _status = new HealthCheckStatus(settings.Upstream, settings.Authority, settings.Tcp ? "tcp" : "http", _target);
        }

        public ServerState State { get; }
        public ProbeSettings Settings { get; }
        public Task Task { get; private set; } = Task.CompletedTask;

        /// <summary>True while this checker (not someone else) holds the server down.</summary>
        public bool MarkedDown
        {
            get => _markedDown;
            set => _markedDown = value;
        }

        public HealthCheckStatus InitialStatus() => _status;

        public void Start() => Task = Task.Run(RunAsync);

        public void Stop() => _stop.Cancel();

        /// <summary>Counts a result into the next status; called under the owner's lock.</summary>
        public HealthCheckStatus Count(ProbeResult result, DateTimeOffset now)
        {
            var previous = _status;
            var successes = result.Succeeded ? Saturate(previous.ConsecutiveSuccesses) : 0;
            var failures = result.Succeeded ? 0 : Saturate(previous.ConsecutiveFailures);
            _status = new HealthCheckStatus(previous.Upstream, previous.Server, previous.Type, previous.Target)
            {
                CheckedAt = now,
                Succeeded = result.Succeeded,
                Result = result.Text,
                ConsecutiveSuccesses = successes,
                ConsecutiveFailures = failures,
                Probes = previous.Probes + 1,
            };
            return _status;
        }

        private static int Saturate(int value) => value == int.MaxValue ? value : value + 1;

        private async Task RunAsync()
        {
            var token = _stop.Token;
            var time = _owner._timeProvider;
            try
            {
                // First probe at once, shifted by up to 10 % of the interval so that the servers of a group (and
                // the gateways of a fleet, restarted together) do not probe in lock step.
                var jitter = TimeSpan.FromTicks((long)(Settings.Interval.Ticks * 0.1 * Random.Shared.NextDouble()));
                await Task.Delay(jitter, time, token);
                while (true)
                {
                    var result = await ProbeAsync(token);
                    if (!_owner.Record(this, result, token))
                    {
                        return;
                    }

                    // The interval runs from the end of a probe (as Envoy's interval), so a server that answers
                    // slowly is never probed more often than once per interval.
                    await Task.Delay(Settings.Interval, time, token);
                }
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                // Stopped by Apply or DisposeAsync.
            }
            catch (Exception ex)
            {
                Log.LoopFailed(_owner._logger, Settings.Upstream, Settings.Authority, ex);
            }
        }

        private async Task<ProbeResult> ProbeAsync(CancellationToken stopping)
        {
            using var timeout = new CancellationTokenSource(Settings.Timeout, _owner._timeProvider);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, timeout.Token);
            try
            {
                return Settings.Tcp ? await ConnectAsync(linked.Token) : await RequestAsync(linked.Token);
            }
            catch (Exception) when (stopping.IsCancellationRequested)
            {
                // Stopped: whatever the probe threw, the loop ends without recording it.
                throw new OperationCanceledException(stopping);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested)
            {
                return new ProbeResult(false, "timeout");
            }
            catch (Exception ex)
            {
                // Every failure of the target is a failed probe, not a crash of the loop.
                return new ProbeResult(false, Describe(ex));
            }
        }

        private async Task<ProbeResult> ConnectAsync(CancellationToken token)
        {
            using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            socket.NoDelay = true;
            await socket.ConnectAsync(Settings.Host, Settings.Port, token);
            return new ProbeResult(true, "connected");
        }

        private async Task<ProbeResult> RequestAsync(CancellationToken token)
        {
            using var request = new HttpRequestMessage(_method, _uri)
            {
                Version = Settings.Http2 ? HttpVersion.Version20 : HttpVersion.Version11,
                VersionPolicy = Settings.Http2 ? HttpVersionPolicy.RequestVersionExact : HttpVersionPolicy.RequestVersionOrLower,
            };
            request.Headers.Host = Settings.Authority;
            request.Headers.TryAddWithoutValidation("User-Agent", UserAgent);
            // Headers only: disposing the response lets the handler drain a small body and keep the connection.
            using var response = await _invoker.SendAsync(request, token);
            var code = (int)response.StatusCode;
            return new ProbeResult(IsExpected(code), $"status {code}");
        }

        private bool IsExpected(int code)
        {
            if (_expected.Length == 0)
            {
                // An empty expected_status_codes list means any 2xx or 3xx, as HAProxy's default http-check.
                return code is >= 200 and < 400;
            }

            return Array.IndexOf(_expected, code) >= 0;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 3001, Level = LogLevel.Warning,
            Message = "Health check: {Upstream}/{Server} is down after {Failures} consecutive failed probes: {Reason}")]
        public static partial void MarkedDown(ILogger logger, string upstream, string server, int failures, string reason);

        [LoggerMessage(EventId = 3002, Level = LogLevel.Information,
            Message = "Health check: {Upstream}/{Server} is up again after {Successes} consecutive good probes ({Result})")]
        public static partial void MarkedUp(ILogger logger, string upstream, string server, int successes, string result);

        [LoggerMessage(EventId = 3003, Level = LogLevel.Debug, Message = "Health probe {Upstream}/{Server}: {Result}")]
        public static partial void Probe(ILogger logger, string upstream, string server, string result);

        [LoggerMessage(EventId = 3004, Level = LogLevel.Information,
            Message = "Health check: checks for {Upstream}/{Server} are off; marking it up again")]
        public static partial void ChecksOffMarkedUp(ILogger logger, string upstream, string server);

        [LoggerMessage(EventId = 3005, Level = LogLevel.Error, Message = "Health check loop for {Upstream}/{Server} failed; it is no longer probed")]
        public static partial void LoopFailed(ILogger logger, string upstream, string server, Exception exception);
    }
}

/// <summary>
/// The last active health check result of one server, for the admin plane. Immutable: each probe publishes a
/// new instance, so the fields read together always belong to the same probe.
/// </summary>
public sealed class HealthCheckStatus
{
    internal HealthCheckStatus(string upstream, string server, string type, string target)
    {
        Upstream = upstream;
        Server = server;
        Type = type;
        Target = target;
    }

    /// <summary>The upstream group's name.</summary>
    public string Upstream { get; }

    /// <summary>The server's authority, "host:port".</summary>
    public string Server { get; }

    /// <summary>"http" or "tcp".</summary>
    public string Type { get; }

    /// <summary>What is probed: "GET http://10.0.0.1:8080/health" or "tcp 10.0.0.1:8080".</summary>
    public string Target { get; }

    /// <summary>When the last probe finished (from the checker's <see cref="TimeProvider"/>); null before the first.</summary>
    public DateTimeOffset? CheckedAt { get; init; }

    /// <summary>Whether the last probe succeeded; null before the first.</summary>
    public bool? Succeeded { get; init; }

    /// <summary>The last result: "status 200", "connected", "status 500", "connection refused", "timeout", ...; null before the first.</summary>
    public string? Result { get; init; }

    /// <summary>Successful probes in a row, up to the last one.</summary>
    public int ConsecutiveSuccesses { get; init; }

    /// <summary>Failed probes in a row, up to the last one.</summary>
    public int ConsecutiveFailures { get; init; }

    /// <summary>Probes since this server's check (re)started: with its settings, it survives reloads.</summary>
    public long Probes { get; init; }
}
