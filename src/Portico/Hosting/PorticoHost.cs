using System.Net;
using System.Runtime.InteropServices;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Portico.Config;
using Portico.Gateway;
using Portico.Proxy;

namespace Portico.Hosting;

/// <summary>
/// Runs the gateway: the data-plane listeners (HTTP/1.1 + h2c, HTTPS with ALPN) and the admin listener, both on
/// Kestrel; SIGHUP reloads the config, SIGTERM/SIGINT drain and stop.
/// </summary>
public sealed partial class PorticoHost : IAsyncDisposable
{
    private const int SigUsr2 = 12;

    private readonly string _configPath;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly GatewayApp _app;
    private readonly ProxyService<GatewayContext> _service;
    private readonly ListenSockets _sockets = new();
    private readonly Dictionary<ListenerSpec, WebApplication> _listeners = [];
    private readonly List<Task> _retiring = [];
    private readonly CancellationTokenSource _hardStop = new();
    private readonly TaskCompletionSource _stopRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _reloadLock = new(1, 1);
    private readonly List<PosixSignalRegistration> _signals = [];
    private readonly Upstreams.Health.ActiveHealthChecker _healthChecker;
    private UpgradeHandoff? _handoff;
    private int _upgradeChildPid;
    /// <summary>monitoring.tracing's OTLP pipeline, built at start; null when tracing is off.</summary>
    private Observability.OtlpTracing? _tracing;

    private PorticoHost(string configPath, GatewaySnapshot snapshot, ILoggerFactory loggerFactory)
    {
        _configPath = configPath;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Portico");
        _app = new GatewayApp(snapshot, loggerFactory);
        _service = new ProxyService<GatewayContext>(_app, loggerFactory.CreateLogger("Portico.Proxy"));
        _healthChecker = new Upstreams.Health.ActiveHealthChecker(loggerFactory, TimeProvider.System);
    }

    /// <summary>Active health checks of the current snapshot's servers.</summary>
    public Upstreams.Health.ActiveHealthChecker HealthChecker => _healthChecker;

    /// <summary>The gateway app (current snapshot, phases).</summary>
    public GatewayApp App => _app;

    /// <summary>The bound addresses of the data-plane listeners, after start.</summary>
    public IReadOnlyList<string> Addresses { get; private set; } = [];

    /// <summary>
    /// Take over the listening sockets of the process already serving this config (zero-downtime upgrade, the
    /// `--upgrade` flag) instead of binding them.
    /// </summary>
    public bool TakeOver { get; init; }

    /// <summary>
    /// How to start a new copy of this process (the executable and its arguments) for SIGUSR2: the copy takes over
    /// with <see cref="TakeOver"/>, from the binary now on disk. Null disables SIGUSR2.
    /// </summary>
    public (string FileName, IReadOnlyList<string> Arguments)? UpgradeCommand { get; init; }

    /// <summary>
    /// Loads <paramref name="configPath"/> and creates the host; returns null and writes the errors to
    /// <paramref name="errorOutput"/> when the config is invalid.
    /// </summary>
    public static PorticoHost? Create(string configPath, TextWriter errorOutput, bool takeOver = false,
        (string FileName, IReadOnlyList<string> Arguments)? upgradeCommand = null)
    {
        var result = ConfigLoader.LoadFile(configPath);
        if (!result.IsValid)
        {
            errorOutput.WriteLine(result.ToString());
            return null;
        }
        var config = result.Config!;
        var loggerFactory = Logging.PorticoLogging.CreateFactory(config.Logging);
        var logger = loggerFactory.CreateLogger("Portico");
        foreach (var warning in result.Warnings)
        {
            Log.ConfigWarning(logger, warning.ToString());
        }
        var snapshot = GatewayCompiler.Compile(config);
        return new PorticoHost(configPath, snapshot, loggerFactory) { TakeOver = takeOver, UpgradeCommand = upgradeCommand };
    }

    /// <summary>Starts every listener. Throws when a port cannot be bound or a certificate cannot be loaded.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        var config = _app.Snapshot.Config;
        // Before any listener accepts, so the first requests are traced too.
        _tracing = Observability.OtlpTracing.Start(config, _logger);
        // Signals first: once a port accepts connections, an operator (or a test) may send SIGHUP, whose default
        // action would end the process.
        if (!OperatingSystem.IsWindows())
        {
            if (OperatingSystem.IsLinux() && UnixNative.UnignoreSignal(1))
            {
                // Started under nohup (SIGHUP ignored): SIGHUP still means reload, as it does for nginx.
                Log.SighupWasIgnored(_logger);
            }
            _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true;
                _ = ReloadAsync();
            }));
            if (OperatingSystem.IsLinux())
            {
                _signals.Add(PosixSignalRegistration.Create((PosixSignal)SigUsr2, context =>
                {
                    context.Cancel = true;
                    StartUpgradeProcess();
                }));
            }
        }
        _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnStopSignal));
        _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, OnStopSignal));

        var handoffPath = UpgradeSocketPath(config);
        UpgradeHandoff.Takeover? takeover = null;
        if (handoffPath is not null)
        {
            var running = UpgradeHandoff.ProbeRunning(handoffPath);
            if (running is { } pid && !TakeOver)
            {
                throw new InvalidOperationException(
                    $"another portico (pid {pid}) is serving this config (upgrade socket {handoffPath}); start with --upgrade to take over its listeners without dropping a connection, or stop it first");
            }
            if (running is not null)
            {
                takeover = UpgradeHandoff.Receive(handoffPath, _sockets, TimeSpan.FromSeconds(10));
                Log.Adopted(_logger, takeover.Keys.Count, takeover.OldPid, string.Join(", ", takeover.Keys));
            }
            else if (TakeOver)
            {
                Log.NothingToTakeOver(_logger, handoffPath);
            }
        }
        else if (TakeOver)
        {
            throw new InvalidOperationException("--upgrade needs server.upgrade_socket (it is off, or this platform cannot pass sockets)");
        }

        try
        {
            await ApplyListenersAsync(config, initial: true);
        }
        catch
        {
            takeover?.Dispose();
            throw;
        }
        if (takeover is not null)
        {
            using (takeover)
            {
                if (!takeover.Confirm(TimeSpan.FromSeconds(10)))
                {
                    Log.OldProcessSilent(_logger, takeover.OldPid);
                }
            }
        }
        if (handoffPath is not null)
        {
            _handoff = UpgradeHandoff.Listen(handoffPath, _sockets, OnTakenOverAsync, _logger);
        }
        _healthChecker.Apply(_app.Snapshot);
        WarnAboutUnservedFeatures(config);
        if (config.Server.WatchConfig)
        {
            WatchConfigFile();
        }
        Log.Started(_logger, string.Join(", ", Addresses), config.Admin.Enabled ? $"{config.Admin.ListenAddress}:{config.Admin.ListenPort}" : "off",
            handoffPath ?? "off", SocketEngine.Mode, Server.Http1Server.Mode, Upstreams.UpstreamClient.Http1Engine, Server.Epoll.EpollLoop.Mode);
        SystemdNotify.Notify($"READY=1\nMAINPID={Environment.ProcessId}\nSTATUS=serving on {string.Join(", ", Addresses)}");
    }

    /// <summary>server.upgrade_socket, or its default: $RUNTIME_DIRECTORY (systemd) or /tmp, "portico-PORT.sock".</summary>
    internal static string? UpgradeSocketPath(GatewayConfig config)
    {
        var configured = config.Server.UpgradeSocket;
        if (!UnixNative.IsSupported || configured is "off" or "")
        {
            return null;
        }
        if (configured is not null)
        {
            return configured;
        }
        var directory = Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY")?.Split(':')[0];
        if (string.IsNullOrEmpty(directory))
        {
            directory = "/tmp";
        }
        var port = MainEndpoints(config).FirstOrDefault()?.Port ?? config.Server.ListenPort;
        return Path.Combine(directory, $"portico-{port}.sock");
    }

    /// <summary>The old process's side of an upgrade: a new process accepts on the sockets; drain and exit.</summary>
    private Task OnTakenOverAsync(int newPid)
    {
        Log.Draining(_logger, newPid);
        _stopRequested.TrySetResult();
        return Task.CompletedTask;
    }

    /// <summary>SIGUSR2: start the binary now on disk with --upgrade; it takes over and this process drains.</summary>
    private void StartUpgradeProcess()
    {
        if (UpgradeCommand is not { } command || _handoff is null)
        {
            Log.UpgradeUnavailable(_logger);
            return;
        }
        if (_upgradeChildPid != 0)
        {
            try
            {
                using var previous = System.Diagnostics.Process.GetProcessById(_upgradeChildPid);
                if (!previous.HasExited)
                {
                    Log.UpgradeInProgress(_logger, _upgradeChildPid);
                    return;
                }
            }
            catch (ArgumentException)
            {
                // Gone.
            }
        }
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo(command.FileName) { UseShellExecute = false };
            foreach (var argument in command.Arguments)
            {
                psi.ArgumentList.Add(argument);
            }
            if (!psi.ArgumentList.Contains("--upgrade"))
            {
                psi.ArgumentList.Add("--upgrade");
            }
            using var child = System.Diagnostics.Process.Start(psi)!;
            _upgradeChildPid = child.Id;
            Log.UpgradeStarted(_logger, child.Id, command.FileName);
        }
        catch (Exception ex)
        {
            Log.UpgradeStartFailed(_logger, ex.Message);
        }
    }

    /// <summary>
    /// Makes the running listeners match <paramref name="config"/>: starts a server for each new or changed
    /// listener (on the existing socket when the address is unchanged), then retires the servers no longer wanted
    /// (they stop accepting and finish their connections, WebSockets included) and closes sockets no listener uses.
    /// At start-up a failure throws; on reload it undoes what it started and returns false.
    /// </summary>
    private async Task<bool> ApplyListenersAsync(GatewayConfig config, bool initial)
    {
        List<ListenerSpec> desired;
        try
        {
            desired = ListenerSpecs(config);
        }
        catch (Exception ex) when (!initial)
        {
            Log.ListenersRejected(_logger, ex.Message);
            return false;
        }
        var started = new List<(ListenerSpec Spec, WebApplication App)>();
        try
        {
            foreach (var spec in desired)
            {
                if (_listeners.ContainsKey(spec))
                {
                    continue;
                }
                var server = BuildServer(spec, config);
                started.Add((spec, server));
                await server.StartAsync();
            }
        }
        catch (Exception ex)
        {
            foreach (var (_, server) in started)
            {
                using var now = new CancellationTokenSource(TimeSpan.Zero);
                try
                {
                    await server.StopAsync(now.Token);
                }
                catch (Exception)
                {
                    // Never started; nothing to drain.
                }
                await server.DisposeAsync();
            }
            var keep = new HashSet<string>(StringComparer.Ordinal);
            foreach (var spec in _listeners.Keys)
            {
                keep.Add(spec.Key);
            }
            _sockets.CloseExcept(keep);
            if (initial)
            {
                throw;
            }
            Log.ListenersRejected(_logger, ex.Message);
            return false;
        }
        foreach (var (spec, server) in started)
        {
            _listeners[spec] = server;
            if (!initial)
            {
                Log.ListenerStarted(_logger, spec.Description);
            }
        }
        var wanted = new HashSet<ListenerSpec>(desired);
        var wantedKeys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in desired)
        {
            wantedKeys.Add(spec.Key);
        }
        foreach (var spec in _listeners.Keys.ToList())
        {
            if (!wanted.Contains(spec))
            {
                var server = _listeners[spec];
                _listeners.Remove(spec);
                Log.ListenerRetired(_logger, spec.Description);
                lock (_retiring)
                {
                    _retiring.Add(RetireAsync(server));
                }
            }
        }
        _sockets.CloseExcept(wantedKeys);
        var addresses = new List<string>();
        foreach (var spec in desired)
        {
            if (spec.Kind != ListenerKind.Admin)
            {
                addresses.Add((spec.Kind == ListenerKind.Https ? "https://" : "http://") + spec.Key);
            }
        }
        Addresses = addresses;
        return true;
    }

    /// <summary>
    /// A retired server stops accepting at once and keeps its connections until they end by themselves (long
    /// downloads, WebSockets), or until a shutdown's graceful timeout runs out.
    /// </summary>
    private async Task RetireAsync(WebApplication server)
    {
        try
        {
            await server.StopAsync(_hardStop.Token);
        }
        catch (Exception ex)
        {
            Log.RetireFailed(_logger, ex.Message);
        }
        await server.DisposeAsync();
    }

    /// <summary>What listeners <paramref name="config"/> asks for. Throws when a TLS certificate is missing.</summary>
    private List<ListenerSpec> ListenerSpecs(GatewayConfig config)
    {
        var limits = ServerLimits.From(config.Server);
        var specs = new List<ListenerSpec>();
        foreach (var endpoint in MainEndpoints(config))
        {
            specs.Add(new ListenerSpec(ListenerKind.Http, ListenSockets.KeyOf(endpoint), endpoint, null, limits));
        }
        if (config.Tls.Enabled && TlsSpecFor(config) is { } tls)
        {
            foreach (var endpoint in TlsEndpoints(config))
            {
                specs.Add(new ListenerSpec(ListenerKind.Https, ListenSockets.KeyOf(endpoint), endpoint, tls, limits));
            }
        }
        if (config.Admin.Enabled)
        {
            if (!ListenAddress.TryParseHost(config.Admin.ListenAddress, out var ip))
            {
                ip = IPAddress.Loopback;
            }
            var endpoint = new IPEndPoint(ip, config.Admin.ListenPort);
            specs.Add(new ListenerSpec(ListenerKind.Admin, ListenSockets.KeyOf(endpoint), endpoint, null, null));
        }
        if (MetricsEndpointOf(config) is { } metrics)
        {
            specs.Add(new ListenerSpec(ListenerKind.Metrics, ListenSockets.KeyOf(metrics.Endpoint), metrics.Endpoint, null, null, metrics.Path));
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in specs)
        {
            if (!seen.Add(spec.Key))
            {
                throw new InvalidOperationException($"two listeners on {spec.Key}");
            }
        }
        return specs;
    }

    /// <summary>The Prometheus listener: seed 001's `metrics:` block when enabled, else monitoring.prometheus.</summary>
    private static (IPEndPoint Endpoint, string Path)? MetricsEndpointOf(GatewayConfig config)
    {
        if (config.Metrics is { Enabled: true } metrics && ListenAddress.TryParse(metrics.BindAddress, out var bound))
        {
            return (bound, metrics.Path);
        }
        var prometheus = config.Monitoring.Prometheus;
        if (prometheus.Enabled && ListenAddress.TryParseHost(prometheus.ListenAddress, out var ip))
        {
            return (new IPEndPoint(ip, prometheus.ListenPort), prometheus.MetricsPath);
        }
        return null;
    }

    private TlsSpec? TlsSpecFor(GatewayConfig config)
    {
        var tls = config.Tls;
        var certPath = ResolvePath(tls.CertPath);
        var keyPath = ResolvePath(tls.KeyPath);
        if (certPath is null || keyPath is null || !File.Exists(certPath) || !File.Exists(keyPath))
        {
            if (tls.Acme.Enabled)
            {
                // ACME issuance is a later feature; until then an operator must supply the files.
                Log.TlsSkipped(_logger, tls.CertPath ?? "(none)");
                return null;
            }
            throw new InvalidOperationException($"tls.cert_path '{tls.CertPath}' or tls.key_path '{tls.KeyPath}' not found");
        }
        // The files' times are part of the spec: a reload after a certificate renewal restarts the TLS listeners
        // on their sockets, with the new certificate, without dropping a connection.
        return new TlsSpec(certPath, keyPath, File.GetLastWriteTimeUtc(certPath), File.GetLastWriteTimeUtc(keyPath), tls.Http2Enabled);
    }

    private static List<IPEndPoint> TlsEndpoints(GatewayConfig config)
    {
        var tls = config.Tls;
        var address = tls.ListenAddress ?? config.Server.ListenAddress;
        if (!ListenAddress.TryParseHost(address, out var ip))
        {
            ip = IPAddress.Any;
        }
        var endpoints = new List<IPEndPoint> { new(ip, tls.ListenPort) };
        foreach (var listener in config.Server.Listeners)
        {
            if (listener.Tls && ListenAddress.TryParse(listener.Address, out var extra))
            {
                endpoints.Add(extra);
            }
        }
        return endpoints;
    }

    private WebApplication BuildServer(ListenerSpec spec, GatewayConfig config)
    {
        var sockets = UnixNative.IsSupported ? _sockets : null;
        if (spec.Kind == ListenerKind.Admin)
        {
            return AdminServer.Build(spec.Endpoint, _app, _loggerFactory, sockets, ReloadAsync, _configPath);
        }
        if (spec.Kind == ListenerKind.Metrics)
        {
            return BuildMetricsServer(spec, sockets);
        }
        var builder = ListenerServer.CreateBuilder(_loggerFactory, sockets);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            ApplyLimits(kestrel, spec.Limits!);
            if (spec.Kind == ListenerKind.Http)
            {
                // Protocols left at Kestrel's default (HTTP/1.1 and HTTP/2): setting them explicitly only adds a
                // start-up warning that cleartext HTTP/2 is off, which H2cPriorKnowledge makes untrue.
                Server.Http1Server.ListenCleartext(kestrel, spec.Endpoint, _service.ServeAsync, _loggerFactory, ConnectionHooks);
            }
            else
            {
                var tls = spec.Tls!;
                var chain = new X509Certificate2Collection();
                chain.ImportFromPemFile(tls.CertPath);
                var leaf = X509Certificate2.CreateFromPemFile(tls.CertPath, tls.KeyPath);
                var intermediates = new X509Certificate2Collection();
                for (var i = 1; i < chain.Count; i++)
                {
                    intermediates.Add(chain[i]);
                }
                kestrel.Listen(spec.Endpoint, listen =>
                {
                    listen.Protocols = tls.Http2 ? HttpProtocols.Http1AndHttp2 : HttpProtocols.Http1;
                    listen.Use(ConnectionHooks.Middleware);
                    listen.UseHttps(https =>
                    {
                        https.ServerCertificate = leaf;
                        https.ServerCertificateChain = intermediates;
                        https.SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13;
                    });
                    listen.Use(Server.Http1Server.Middleware(_service.ServeAsync, kestrel, _loggerFactory));
                });
            }
        });
        var app = builder.Build();
        app.Run(_service.InvokeAsync);
        return app;
    }

    /// <summary>The Prometheus scrape listener: the metrics path, 404 elsewhere.</summary>
    private WebApplication BuildMetricsServer(ListenerSpec spec, ListenSockets? sockets)
    {
        var builder = ListenerServer.CreateBuilder(_loggerFactory, sockets);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Listen(spec.Endpoint);
        });
        var app = builder.Build();
        app.Run(MetricsEndpoint.CreateHandler(_app, spec.Path ?? "/metrics"));
        return app;
    }

    /// <summary>
    /// server.watch_config: reload when the file changes. Editors save in bursts (truncate, write, rename), so
    /// changes are debounced by 500 ms and the reload reads the file once it has settled. The directory is watched,
    /// not the file, so a save by rename (vim, kubectl's ConfigMap symlink swap) is seen too.
    /// </summary>
    private void WatchConfigFile()
    {
        var full = Path.GetFullPath(_configPath);
        var watcher = new FileSystemWatcher(Path.GetDirectoryName(full)!, Path.GetFileName(full))
        {
            NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
        };
        var pending = 0;
        void OnChange(object? sender, FileSystemEventArgs e)
        {
            if (Interlocked.Exchange(ref pending, 1) == 1)
            {
                return;
            }
            _ = Task.Run(async () =>
            {
                await Task.Delay(500);
                Volatile.Write(ref pending, 0);
                await ReloadAsync();
            });
        }
        watcher.Changed += OnChange;
        watcher.Created += OnChange;
        watcher.Renamed += (sender, e) => OnChange(sender, e);
        watcher.EnableRaisingEvents = true;
        _watcher = watcher;
    }

    private FileSystemWatcher? _watcher;

    private void OnStopSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        Log.StopSignal(_logger, context.Signal.ToString());
        _stopRequested.TrySetResult();
    }

    /// <summary>Completes when SIGTERM/SIGINT arrives, a new process took over, or <see cref="RequestStop"/> is called.</summary>
    public Task WaitForStopSignalAsync() => _stopRequested.Task;

    public void RequestStop() => _stopRequested.TrySetResult();

    /// <summary>
    /// Stops accepting connections and waits for in-flight requests up to graceful_timeout_seconds, then closes
    /// what is left.
    /// </summary>
    public async Task StopAsync()
    {
        SystemdNotify.Notify("STOPPING=1");
        _handoff?.Close();
        var config = _app.Snapshot.Config;
        var timeout = TimeSpan.FromSeconds(config.Server.GracefulShutdown ? config.Server.GracefulTimeoutSeconds : 0);
        _hardStop.CancelAfter(timeout);
        await _healthChecker.DisposeAsync();
        // WebSockets and other upgraded connections never end by themselves: tell both sides the gateway is going
        // away (close 1001 at a frame boundary) and give the close handshake up to 5 s of the drain window.
        var handshake = TimeSpan.FromSeconds(Math.Min(5, Math.Max(0, timeout.TotalSeconds)));
        var stops = new List<Task> { _service.Tunnels.CloseAllAsync(handshake) };
        // Our descriptors close first: each listening socket then lives only on the listener's own descriptor and ends
        // the moment that listener stops accepting (new connections are refused), unless a new process took the sockets
        // over. Closed after the listeners, a socket would go on completing handshakes nobody accepts, and every
        // client in that queue would be reset when it closed, its request already sent (the SIGTERM-under-load test).
        _sockets.Dispose();
        foreach (var server in _listeners.Values)
        {
            stops.Add(server.StopAsync(_hardStop.Token));
        }
        lock (_retiring)
        {
            stops.AddRange(_retiring);
        }
        await Task.WhenAll(stops);
        Log.Stopped(_logger);
    }

    /// <summary>
    /// Reloads the config file: validated beside the current one, listeners brought in line, then swapped
    /// atomically; or rejected and logged, with the old config still serving.
    /// </summary>
    public async Task<bool> ReloadAsync()
    {
        // Reading the file, compiling the config and loading certificates block for milliseconds: never on a socket's
        // epoll thread (POST /api/reload arrives on one when socket completions run inline; see SocketEngine).
        await Task.Yield();
        await _reloadLock.WaitAsync();
        try
        {
            SystemdNotify.Notify("RELOADING=1");
            var result = ConfigLoader.LoadFile(_configPath);
            if (!result.IsValid)
            {
                Log.ReloadRejected(_logger, _configPath, result.ToString());
                return false;
            }
            var current = _app.Snapshot;
            var next = GatewayCompiler.Compile(result.Config!, current);
            if (!await ApplyListenersAsync(next.Config, initial: false))
            {
                GatewayCompiler.DisposeUnused(next, current);
                Log.ReloadRejected(_logger, _configPath, "the listeners could not be started (see above)");
                return false;
            }
            var old = _app.Swap(next);
            _healthChecker.Apply(next);
            // In-flight requests on the old snapshot may still use its pools; give them the drain window first.
            _ = Task.Delay(TimeSpan.FromSeconds(Math.Max(30, next.Config.Server.GracefulTimeoutSeconds)))
                .ContinueWith(_ => GatewayCompiler.DisposeUnused(old, next), TaskScheduler.Default);
            Observability.OtlpTracing.OnReload(_tracing, next.Config, _logger);
            Log.Reloaded(_logger, _configPath, next.Generation);
            return true;
        }
        catch (Exception ex)
        {
            Log.ReloadFailed(_logger, _configPath, ex);
            return false;
        }
        finally
        {
            SystemdNotify.Notify("READY=1");
            _reloadLock.Release();
        }
    }

    private static IEnumerable<IPEndPoint> MainEndpoints(GatewayConfig config)
    {
        var server = config.Server;
        if (server.BindAddress is { } bind && ListenAddress.TryParse(bind, out var bound))
        {
            yield return bound;
        }
        else if (ListenAddress.TryParseHost(server.ListenAddress, out var address))
        {
            yield return new IPEndPoint(address, server.ListenPort);
        }
        foreach (var listener in server.Listeners)
        {
            if (!listener.Tls && ListenAddress.TryParse(listener.Address, out var extra))
            {
                yield return extra;
            }
        }
    }

    private static void ApplyLimits(KestrelServerOptions kestrel, ServerLimits server)
    {
        kestrel.AddServerHeader = false;
        // Cleartext HTTP/2 is detected by H2cPriorKnowledge, which makes Kestrel see a TLS connection; without
        // this, Kestrel rejects h2c requests whose :scheme is "http". The scheme sent upstream (X-Forwarded-Proto)
        // comes from the connection, not from :scheme, so a client cannot claim https over cleartext.
        kestrel.AllowAlternateSchemes = true;
        var limits = kestrel.Limits;
        limits.MaxRequestHeadersTotalSize = server.MaxRequestHeadersBytes;
        limits.MaxRequestLineSize = Math.Min(limits.MaxRequestLineSize, server.MaxRequestHeadersBytes);
        limits.MaxRequestBodySize = server.MaxRequestBodyBytes > 0 ? server.MaxRequestBodyBytes : null;
        limits.KeepAliveTimeout = TimeSpan.FromSeconds(server.IdleTimeoutSeconds);
        limits.RequestHeadersTimeout = TimeSpan.FromSeconds(server.RequestHeadersTimeoutSeconds);
        limits.MaxConcurrentUpgradedConnections = null;
        limits.Http2.MaxRequestHeaderFieldSize = Math.Max(limits.Http2.MaxRequestHeaderFieldSize, Math.Min(server.MaxRequestHeadersBytes, 64 * 1024));
    }

    private enum ListenerKind
    {
        Http,
        Https,
        Admin,
        Metrics,
    }

    /// <summary>One listener as configured; a listener whose spec changes on reload gets a new server.</summary>
    private sealed record ListenerSpec(ListenerKind Kind, string Key, IPEndPoint Endpoint, TlsSpec? Tls, ServerLimits? Limits, string? Path = null)
    {
        public string Description => $"{Kind.ToString().ToLowerInvariant()} {Key}";
    }

    private sealed record TlsSpec(string CertPath, string KeyPath, DateTime CertWritten, DateTime KeyWritten, bool Http2);

    /// <summary>The server: settings Kestrel applies per listener.</summary>
    private sealed record ServerLimits(int MaxRequestHeadersBytes, long MaxRequestBodyBytes, int IdleTimeoutSeconds,
        int RequestHeadersTimeoutSeconds)
    {
        public static ServerLimits From(ServerConfig server) => new(server.MaxRequestHeadersBytes, server.MaxRequestBodyBytes,
            server.IdleTimeoutSeconds, server.RequestHeadersTimeoutSeconds);
    }

    private int _openConnections;

    /// <summary>
    /// server.max_connections across every data-plane listener (Kestrel's own limit would be per listener): a
    /// connection over the cap is closed as soon as it is accepted. Read per connection from the current config, so
    /// a reload changes it without restarting listeners.
    /// </summary>
    private Server.ConnectionHooks ConnectionHooks => _connectionHooks ??= new Server.ConnectionHooks(
        connection =>
        {
            var limit = _app.Snapshot.Config.Server.MaxConnections;
            var open = Interlocked.Increment(ref _openConnections);
            if (limit > 0 && open > limit)
            {
                Interlocked.Decrement(ref _openConnections);
                return false;
            }
            _app.Metrics.ConnectionOpened();
            return true;
        },
        connection =>
        {
            _app.Metrics.ConnectionClosed();
            Interlocked.Decrement(ref _openConnections);
        });

    private Server.ConnectionHooks? _connectionHooks;

    /// <summary>
    /// Says once, at start-up, which configured features this build parses and validates but does not serve
    /// yet, so nothing configured is ignored silently.
    /// </summary>
    /// <summary>A relative path is looked up in the working directory, then next to the config file (as validation does).</summary>
    private string? ResolvePath(string? path)
    {
        if (path is null || Path.IsPathRooted(path) || File.Exists(path))
        {
            return path;
        }
        var besideConfig = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(_configPath)) ?? ".", path);
        return File.Exists(besideConfig) ? besideConfig : path;
    }

    private void WarnAboutUnservedFeatures(GatewayConfig config)
    {
        var security = config.Security;
        var unserved = new List<string>();
        void Check(bool configured, string name)
        {
            if (configured)
            {
                unserved.Add(name);
            }
        }
        Check(security.RateLimit.Enabled, "security.rate_limit");
        Check(security.DdosProtection.Enabled, "security.ddos_protection");
        Check(security.AccessControl.IpWhitelist.Count > 0 || security.AccessControl.IpBlacklist.Count > 0, "security.access_control ip lists");
        Check(security.AccessControl.GeoBlocking.Enabled, "security.access_control.geo_blocking");
        Check(security.Headers.EnableDefaultHeaders || security.Headers.CustomHeaders.Count > 0, "security.headers");
        Check(security.TrustedProxies.Count > 0, "security.trusted_proxies");
        Check(config.Cache.Enabled, "cache");
        Check(config.Performance.CompressionEnabled, "performance.compression_enabled");
        Check(config.Tls.Acme.Enabled, "tls.acme");
        Check(config.Tls.OcspStapling, "tls.ocsp_stapling");
        Check(config.Tls.HstsEnabled, "tls.hsts_enabled");
        Check(config.Logging.OtlpEndpoint is not null && !config.Monitoring.Tracing.Enabled,
            "OTLP log export (logging.otlp_endpoint only carries traces, with monitoring.tracing.enabled)");
        var sni = false;
        foreach (var upstream in config.Upstreams)
        {
            foreach (var server in upstream.Servers)
            {
                sni |= server.Sni is not null;
            }
        }
        Check(sni, "upstream server sni (the request's Host is sent as SNI)");
        foreach (var name in unserved)
        {
            Log.NotYet(_logger, name);
        }
        if (config.Tls.Http3Enabled)
        {
            // HTTP/3 needs QUIC (libmsquic); where the platform lacks it, say so once and serve h1/h2.
            if (System.Net.Quic.QuicListener.IsSupported)
            {
                Log.NotYet(_logger, "tls.http3_enabled");
            }
            else
            {
                Log.Http3Unavailable(_logger);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _watcher?.Dispose();
        await _healthChecker.DisposeAsync();
        foreach (var signal in _signals)
        {
            signal.Dispose();
        }
        foreach (var server in _listeners.Values)
        {
            await server.DisposeAsync();
        }
        if (_handoff is not null)
        {
            await _handoff.DisposeAsync();
        }
        _sockets.Dispose();
        _hardStop.Dispose();
        foreach (var client in _app.Snapshot.Clients)
        {
            client.Dispose();
        }
        _tracing?.Dispose();
        _loggerFactory.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Portico listening on {Addresses}; admin on {Admin}; upgrade socket {UpgradeSocket}; socket completions {SocketCompletions}; HTTP/1.1 server {Http1Server}; upstream HTTP/1.1 client {Http1Client}; own sockets on {OwnSockets}")]
        public static partial void Started(ILogger logger, string addresses, string admin, string upgradeSocket, string socketCompletions, string http1Server, string http1Client, string ownSockets);

        [LoggerMessage(EventId = 110, Level = LogLevel.Information, Message = "Upgrade: took over {Count} listening sockets from process {Pid}: {Keys}")]
        public static partial void Adopted(ILogger logger, int count, int pid, string keys);

        [LoggerMessage(EventId = 111, Level = LogLevel.Warning, Message = "--upgrade: no running portico on {Path}; binding the listeners")]
        public static partial void NothingToTakeOver(ILogger logger, string path);

        [LoggerMessage(EventId = 112, Level = LogLevel.Warning, Message = "Upgrade: process {Pid} did not confirm that it is draining")]
        public static partial void OldProcessSilent(ILogger logger, int pid);

        [LoggerMessage(EventId = 113, Level = LogLevel.Information, Message = "Process {Pid} took over the listeners: draining in-flight requests")]
        public static partial void Draining(ILogger logger, int pid);

        [LoggerMessage(EventId = 114, Level = LogLevel.Warning, Message = "SIGUSR2: upgrade unavailable (no upgrade socket, or the command line is unknown)")]
        public static partial void UpgradeUnavailable(ILogger logger);

        [LoggerMessage(EventId = 115, Level = LogLevel.Warning, Message = "SIGUSR2: upgrade process {Pid} is still starting; ignored")]
        public static partial void UpgradeInProgress(ILogger logger, int pid);

        [LoggerMessage(EventId = 116, Level = LogLevel.Information, Message = "SIGUSR2: started process {Pid} ({FileName}) to take over the listeners")]
        public static partial void UpgradeStarted(ILogger logger, int pid, string fileName);

        [LoggerMessage(EventId = 117, Level = LogLevel.Error, Message = "SIGUSR2: could not start the upgrade process: {Message}")]
        public static partial void UpgradeStartFailed(ILogger logger, string message);

        [LoggerMessage(EventId = 118, Level = LogLevel.Error, Message = "Listeners could not be started: {Message}")]
        public static partial void ListenersRejected(ILogger logger, string message);

        [LoggerMessage(EventId = 119, Level = LogLevel.Information, Message = "Listener {Listener} started")]
        public static partial void ListenerStarted(ILogger logger, string listener);

        [LoggerMessage(EventId = 126, Level = LogLevel.Information, Message = "Listener {Listener} retired: no new connections; open ones finish")]
        public static partial void ListenerRetired(ILogger logger, string listener);

        [LoggerMessage(EventId = 127, Level = LogLevel.Warning, Message = "Stopping a retired listener failed: {Message}")]
        public static partial void RetireFailed(ILogger logger, string message);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Received {Signal}: draining in-flight requests")]
        public static partial void StopSignal(ILogger logger, string signal);

        [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "Portico stopped")]
        public static partial void Stopped(ILogger logger);

        [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "Config: {Warning}")]
        public static partial void ConfigWarning(ILogger logger, string warning);

        [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "Reloaded {Path} (generation {Generation})")]
        public static partial void Reloaded(ILogger logger, string path, long generation);

        [LoggerMessage(EventId = 105, Level = LogLevel.Error, Message = "Reload of {Path} rejected; the previous config keeps serving:\n{Errors}")]
        public static partial void ReloadRejected(ILogger logger, string path, string errors);

        [LoggerMessage(EventId = 106, Level = LogLevel.Error, Message = "Reload of {Path} failed; the previous config keeps serving")]
        public static partial void ReloadFailed(ILogger logger, string path, Exception exception);

        [LoggerMessage(EventId = 107, Level = LogLevel.Warning, Message = "TLS certificate {Path} not found and ACME issuance is not available in this build: the HTTPS listener is not started")]
        public static partial void TlsSkipped(ILogger logger, string path);

        [LoggerMessage(EventId = 108, Level = LogLevel.Warning, Message = "{Feature} is configured but not served by this build yet (it parses and validates)")]
        public static partial void NotYet(ILogger logger, string feature);

        [LoggerMessage(EventId = 109, Level = LogLevel.Warning, Message = "tls.http3_enabled: HTTP/3 is unavailable (QUIC/libmsquic not supported on this machine); serving HTTP/1.1 and HTTP/2 only")]
        public static partial void Http3Unavailable(ILogger logger);

        [LoggerMessage(EventId = 128, Level = LogLevel.Information, Message = "SIGHUP was ignored when Portico started (nohup?); it reloads the configuration all the same")]
        public static partial void SighupWasIgnored(ILogger logger);
    }
}
