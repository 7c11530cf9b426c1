using System.Net;
using System.Runtime.InteropServices;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
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
    private readonly string _configPath;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly GatewayApp _app;
    private readonly List<WebApplication> _servers = [];
    private readonly TaskCompletionSource _stopRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _reloadLock = new(1, 1);
    private readonly List<PosixSignalRegistration> _signals = [];
    private readonly Upstreams.Health.ActiveHealthChecker _healthChecker;

    private PorticoHost(string configPath, GatewaySnapshot snapshot, ILoggerFactory loggerFactory)
    {
        _configPath = configPath;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Portico");
        _app = new GatewayApp(snapshot, loggerFactory);
        _healthChecker = new Upstreams.Health.ActiveHealthChecker(loggerFactory, TimeProvider.System);
    }

    /// <summary>Active health checks of the current snapshot's servers.</summary>
    public Upstreams.Health.ActiveHealthChecker HealthChecker => _healthChecker;

    /// <summary>The gateway app (current snapshot, phases).</summary>
    public GatewayApp App => _app;

    /// <summary>The bound addresses of the data-plane listeners, after start.</summary>
    public IReadOnlyList<string> Addresses { get; private set; } = [];

    /// <summary>
    /// Loads <paramref name="configPath"/> and creates the host; returns null and writes the errors to
    /// <paramref name="errorOutput"/> when the config is invalid.
    /// </summary>
    public static PorticoHost? Create(string configPath, TextWriter errorOutput)
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
        return new PorticoHost(configPath, snapshot, loggerFactory);
    }

    /// <summary>Starts every listener. Throws when a port cannot be bound or a certificate cannot be loaded.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        var config = _app.Snapshot.Config;
        // Signals first: once a port accepts connections, an operator (or a test) may send SIGHUP, whose default
        // action would end the process.
        if (!OperatingSystem.IsWindows())
        {
            _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true;
                _ = ReloadAsync();
            }));
        }
        _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnStopSignal));
        _signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, OnStopSignal));
        var dataPlane = BuildDataPlane(config);
        _servers.Add(dataPlane);
        if (config.Admin.Enabled)
        {
            _servers.Add(AdminServer.Build(config, _app, _loggerFactory));
        }
        foreach (var server in _servers)
        {
            await server.StartAsync(cancellationToken);
        }
        Addresses = [.. dataPlane.Urls];
        _healthChecker.Apply(_app.Snapshot);
        WarnAboutUnservedFeatures(config);
        if (config.Server.WatchConfig)
        {
            WatchConfigFile();
        }
        Log.Started(_logger, string.Join(", ", Addresses), config.Admin.Enabled ? $"{config.Admin.ListenAddress}:{config.Admin.ListenPort}" : "off");
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

    /// <summary>Completes when SIGTERM/SIGINT arrives or <see cref="RequestStop"/> is called.</summary>
    public Task WaitForStopSignalAsync() => _stopRequested.Task;

    public void RequestStop() => _stopRequested.TrySetResult();

    /// <summary>
    /// Stops accepting connections and waits for in-flight requests up to graceful_timeout_seconds, then closes
    /// what is left.
    /// </summary>
    public async Task StopAsync()
    {
        var config = _app.Snapshot.Config;
        var timeout = TimeSpan.FromSeconds(config.Server.GracefulShutdown ? config.Server.GracefulTimeoutSeconds : 0);
        using var cts = new CancellationTokenSource(timeout);
        await _healthChecker.DisposeAsync();
        var stops = new List<Task>();
        foreach (var server in _servers)
        {
            stops.Add(server.StopAsync(cts.Token));
        }
        await Task.WhenAll(stops);
        Log.Stopped(_logger);
    }

    /// <summary>Reloads the config file: validated beside the current one, swapped atomically, or rejected and logged.</summary>
    public async Task<bool> ReloadAsync()
    {
        await _reloadLock.WaitAsync();
        try
        {
            var result = ConfigLoader.LoadFile(_configPath);
            if (!result.IsValid)
            {
                Log.ReloadRejected(_logger, _configPath, result.ToString());
                return false;
            }
            var current = _app.Snapshot;
            var next = GatewayCompiler.Compile(result.Config!, current);
            var old = _app.Swap(next);
            _healthChecker.Apply(next);
            // In-flight requests on the old snapshot may still use its pools; give them the drain window first.
            _ = Task.Delay(TimeSpan.FromSeconds(Math.Max(30, next.Config.Server.GracefulTimeoutSeconds)))
                .ContinueWith(_ => GatewayCompiler.DisposeUnused(old, next), TaskScheduler.Default);
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
            _reloadLock.Release();
        }
    }

    private WebApplication BuildDataPlane(GatewayConfig config)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddSingleton(_loggerFactory);
        builder.Services.AddSingleton<IHostLifetime, ManualLifetime>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(config.Server.GracefulTimeoutSeconds));
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            ApplyLimits(kestrel, config.Server);
            foreach (var endpoint in MainEndpoints(config))
            {
                kestrel.Listen(endpoint, listen =>
                {
                    // Protocols left at Kestrel's default (HTTP/1.1 and HTTP/2): setting them explicitly only adds a
                    // start-up warning that cleartext HTTP/2 is off, which H2cPriorKnowledge makes untrue.
                    listen.Use(H2cPriorKnowledge.Middleware);
                });
            }
            if (config.Tls.Enabled)
            {
                ConfigureTls(kestrel, config);
            }
        });
        var app = builder.Build();
        var service = new ProxyService<GatewayContext>(_app, _loggerFactory.CreateLogger("Portico.Proxy"));
        app.Run(service.InvokeAsync);
        return app;
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

    private static void ApplyLimits(KestrelServerOptions kestrel, ServerConfig server)
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
        limits.MaxConcurrentConnections = server.MaxConnections > 0 ? server.MaxConnections : null;
        limits.MaxConcurrentUpgradedConnections = null;
        limits.Http2.MaxRequestHeaderFieldSize = Math.Max(limits.Http2.MaxRequestHeaderFieldSize, Math.Min(server.MaxRequestHeadersBytes, 64 * 1024));
    }

    private void ConfigureTls(KestrelServerOptions kestrel, GatewayConfig config)
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
                return;
            }
            throw new InvalidOperationException($"tls.cert_path '{tls.CertPath}' or tls.key_path '{tls.KeyPath}' not found");
        }
        var chain = new X509Certificate2Collection();
        chain.ImportFromPemFile(certPath);
        var leaf = X509Certificate2.CreateFromPemFile(certPath, keyPath);
        var intermediates = new X509Certificate2Collection();
        for (var i = 1; i < chain.Count; i++)
        {
            intermediates.Add(chain[i]);
        }
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
        foreach (var endpoint in endpoints)
        {
            kestrel.Listen(endpoint, listen =>
            {
                listen.Protocols = tls.Http2Enabled ? HttpProtocols.Http1AndHttp2 : HttpProtocols.Http1;
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = leaf;
                    https.ServerCertificateChain = intermediates;
                    https.SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13;
                });
            });
        }
    }

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
        Check(config.Monitoring.Prometheus.Enabled || config.Metrics is { Enabled: true }, "metrics endpoint (monitoring.prometheus / metrics)");
        Check(config.Monitoring.Tracing.Enabled, "monitoring.tracing");
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
        Check(config.Admin.Token is not null, "admin.token");
        Check(config.Logging.OtlpEndpoint is not null || config.Monitoring.Tracing.OtlpEndpoint is not null, "OTLP export (otlp_endpoint)");
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
        foreach (var server in _servers)
        {
            await server.DisposeAsync();
        }
        foreach (var client in _app.Snapshot.Clients)
        {
            client.Dispose();
        }
        _loggerFactory.Dispose();
    }

    /// <summary>The host's lifetime is driven by <see cref="PorticoHost"/>'s own signal handling.</summary>
    private sealed class ManualLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Portico listening on {Addresses}; admin on {Admin}")]
        public static partial void Started(ILogger logger, string addresses, string admin);

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
    }
}
