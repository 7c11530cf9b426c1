using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using Portico.Config;
using Portico.Gateway;
using Portico.Observability.Metrics;
using Portico.Proxy;
using Portico.Routing;
using Portico.Upstreams;

namespace Portico.Observability;

/// <summary>
/// The gateway's Prometheus metrics: the families, named with a prefix (default <c>pingora</c>, so the seed's
/// dashboards and alert rules work), the recording methods the gateway calls per request, and the scrape.
/// docs/metrics.md lists every family.
/// </summary>
/// <remarks>
/// <para>
/// Owned by the <see cref="GatewayApp"/>, which outlives config snapshots: a reload binds the new snapshot's routes,
/// upstreams and servers to the cells that already exist for their names, so counters of what is still configured
/// keep counting (Prometheus counters must not reset on reload). Series of a route, upstream or server that the new
/// config no longer has are removed from the scrape; if one comes back later it starts again from zero, which
/// Prometheus' <c>rate()</c> treats as a counter reset.
/// </para>
/// <para>
/// Recording is lock-free and allocates nothing once a label set has been seen: the cells of each route, upstream
/// and server hang off its model (set by <see cref="Bind"/>), and the per-(method, status) cells of a route sit in an
/// array indexed by the status code. Health and circuit breaker state are not recorded at all: the scrape reads them
/// from the current snapshot.
/// </para>
/// <para>The prefix is read when the app starts; changing it takes a restart (a reload keeps the running prefix).</para>
/// </remarks>
public sealed class GatewayMetrics
{
    /// <summary>The prefix the seed's dashboards and alerts expect.</summary>
    public const string DefaultPrefix = "pingora";

    /// <summary>The <c>route</c> label of a request that matched no configured route (404, or the default upstream).</summary>
    public const string NoRoute = "-";

    /// <summary>The <c>upstream</c> label of a peer that belongs to no configured upstream (a library user's own peer).</summary>
    public const string NoUpstream = "-";

    internal static readonly string[] MethodLabels = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "_OTHER"];

    private static readonly string[] ServerLabelNames = ["upstream", "server"];

    private readonly ConcurrentDictionary<string, RouteMetrics> _routes = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, UpstreamMetrics> _upstreams = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<LabelValues, ServerMetrics> _servers = new();
    private readonly RouteMetrics _noRoute;
    private readonly Lock _bindGate = new();
    private readonly string _healthName;
    private readonly string _breakerName;
    private readonly ProcessMetrics? _process;

    /// <param name="prefix">Metric name prefix, <c>[a-zA-Z_:][a-zA-Z0-9_:]*</c>; see <see cref="PrefixOf"/>.</param>
    /// <param name="processMetrics">Also expose process_* and dotnet_* metrics (<see cref="ProcessMetrics"/>).</param>
    public GatewayMetrics(string prefix = DefaultPrefix, bool processMetrics = true)
    {
        MetricNames.ValidateMetricName(prefix);
        Prefix = prefix;
        var r = Registry = new MetricRegistry();
        Requests = r.Add(new Counter(prefix + "_requests_total",
            "Requests answered, by method, route and status code sent to the client.", "method", "route", "status_code"));
        RequestDuration = r.Add(new Histogram(prefix + "_request_duration_seconds",
            "Time from the request's arrival to the end of its response, in seconds, by route.", Histogram.LatencyBuckets, "route"));
        RequestBodyBytes = r.Add(new Counter(prefix + "_request_body_bytes_total",
            "Request body bytes read from clients, by route.", "route"));
        ResponseBodyBytes = r.Add(new Counter(prefix + "_response_body_bytes_total",
            "Response body bytes sent to clients, by route.", "route"));
        ConnectionsActive = r.Add(new Gauge(prefix + "_connections_active",
            "Client connections open now."));
        ConnectionsAccepted = r.Add(new Counter(prefix + "_connections_total",
            "Client connections accepted."));
        RateLimitHits = r.Add(new Counter(prefix + "_rate_limit_hits_total",
            "Requests refused by rate limiting."));
        UpstreamLatency = r.Add(new Histogram(prefix + "_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers, in seconds, by upstream (last attempt of each request).",
            Histogram.LatencyBuckets, "upstream"));
        UpstreamRequests = r.Add(new Counter(prefix + "_upstream_requests_total",
            "Requests sent to upstream servers, retries included, by upstream.", "upstream"));
        UpstreamConnectionsCreated = r.Add(new Counter(prefix + "_upstream_connections_created_total",
            "New TCP connections opened to upstream servers, by upstream; 1 - this / upstream_requests_total is the connection reuse ratio.",
            "upstream"));
        UpstreamRetries = r.Add(new Counter(prefix + "_upstream_retries_total",
            "Requests sent again to an upstream after a failed attempt, by upstream.", "upstream"));
        UpstreamConnectErrors = r.Add(new Counter(prefix + "_upstream_connect_errors_total",
            "Failed connects to upstream servers (refused, timed out, TLS handshake failed), by upstream and server.", "upstream", "server"));
        _healthName = prefix + "_upstream_health_status";
        _breakerName = prefix + "_circuit_breaker_state";
        // Written by WriteTo from the snapshot; reserved so that no feature registers a family of the same name.
        r.Reserve(_healthName, _breakerName);
        if (processMetrics)
        {
            _process = new ProcessMetrics();
            r.Reserve(ProcessMetrics.FamilyNames);
        }
        _noRoute = new RouteMetrics(this, NoRoute);
        _routes[NoRoute] = _noRoute;
    }

    /// <summary>The prefix of every gateway family (not of the process_* and dotnet_* families).</summary>
    public string Prefix { get; }

    /// <summary>The gateway's families but the two read from the snapshot; a feature adds its own families here.</summary>
    public MetricRegistry Registry { get; }

    /// <summary><c>{prefix}_requests_total{method,route,status_code}</c>.</summary>
    public Counter Requests { get; }

    /// <summary><c>{prefix}_request_duration_seconds{route}</c>.</summary>
    public Histogram RequestDuration { get; }

    /// <summary><c>{prefix}_request_body_bytes_total{route}</c>.</summary>
    public Counter RequestBodyBytes { get; }

    /// <summary><c>{prefix}_response_body_bytes_total{route}</c>.</summary>
    public Counter ResponseBodyBytes { get; }

    /// <summary><c>{prefix}_connections_active</c>.</summary>
    public Gauge ConnectionsActive { get; }

    /// <summary><c>{prefix}_connections_total</c>.</summary>
    public Counter ConnectionsAccepted { get; }

    /// <summary><c>{prefix}_rate_limit_hits_total</c>.</summary>
    public Counter RateLimitHits { get; }

    /// <summary><c>{prefix}_upstream_latency_seconds{upstream}</c>.</summary>
    public Histogram UpstreamLatency { get; }

    /// <summary><c>{prefix}_upstream_requests_total{upstream}</c>.</summary>
    public Counter UpstreamRequests { get; }

    /// <summary><c>{prefix}_upstream_connections_created_total{upstream}</c>.</summary>
    public Counter UpstreamConnectionsCreated { get; }

    /// <summary><c>{prefix}_upstream_retries_total{upstream}</c>.</summary>
    public Counter UpstreamRetries { get; }

    /// <summary><c>{prefix}_upstream_connect_errors_total{upstream,server}</c>.</summary>
    public Counter UpstreamConnectErrors { get; }

    /// <summary>
    /// The prefix a config asks for: <c>metrics.prefix</c> when written (seed 001's block), else
    /// <c>monitoring.prometheus.prefix</c>, whose default is <c>pingora</c>.
    /// </summary>
    public static string PrefixOf(GatewayConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.Metrics?.Prefix ?? config.Monitoring.Prometheus.Prefix;
    }

    /// <summary>
    /// Records one finished request: its count by method, route and status, duration, body bytes, and for a proxied
    /// request the upstream attempts, retries and the last attempt's time to response headers. Called once per request
    /// from the logging phase. Allocates nothing once the (method, route, status) has been seen.
    /// </summary>
    /// <param name="session">The finished request.</param>
    /// <param name="route">Its route; null when no configured route matched.</param>
    /// <param name="upstream">The upstream group it was sent to; null when none was chosen.</param>
    /// <param name="duration">Time from arrival to the end of the response.</param>
    public void RecordRequest(ProxySession session, RouteModel? route, UpstreamModel? upstream, TimeSpan duration)
    {
        ArgumentNullException.ThrowIfNull(session);
        var metrics = route is null ? _noRoute : route.Metrics ?? RouteFor(route.Name);
        metrics.Request(MethodIndex(session.Request.Method), session.Response.StatusCode).Inc();
        metrics.Duration.Observe(duration.TotalSeconds);
        if (session.RequestBodyBytes > 0)
        {
            metrics.RequestBodyBytes.Add(session.RequestBodyBytes);
        }
        if (session.ResponseBodyBytes > 0)
        {
            metrics.ResponseBodyBytes.Add(session.ResponseBodyBytes);
        }

        var attempts = session.Attempts;
        if (upstream is null || attempts == 0)
        {
            return;
        }
        var upstreamMetrics = upstream.Metrics ?? UpstreamFor(upstream.Name);
        upstreamMetrics.Requests.Add(attempts);
        if (attempts > 1)
        {
            // Every attempt after the first is a retry; counting them here, once per request, needs no hook in the
            // runner's retry loop.
            upstreamMetrics.Retries.Add(attempts - 1);
        }
        if (session.UpstreamStatus > 0)
        {
            upstreamMetrics.Latency.Observe(session.UpstreamHeaderTime.TotalSeconds);
        }
    }

    /// <summary>Counts a failed connect (refused, timed out, TLS handshake failed) to <paramref name="peer"/>'s server.</summary>
    public void RecordConnectError(UpstreamPeer peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        var metrics = peer.Server.Metrics ?? ServerFor(peer.UpstreamName ?? NoUpstream, peer.Server.Authority);
        metrics.ConnectErrors.Inc();
    }

    /// <summary>Counts a request refused by rate limiting (<c>{prefix}_rate_limit_hits_total</c>).</summary>
    public void RecordRateLimitHit() => RateLimitHits.Inc();

    /// <summary>A client connection was accepted; pair with <see cref="ConnectionClosed"/>.</summary>
    public void ConnectionOpened()
    {
        ConnectionsActive.Unlabeled.Inc();
        ConnectionsAccepted.Inc();
    }

    /// <summary>A client connection counted by <see cref="ConnectionOpened"/> has closed.</summary>
    public void ConnectionClosed() => ConnectionsActive.Unlabeled.Dec();

    /// <summary>
    /// Renders a scrape: every family in <see cref="Registry"/>, then the upstream health and circuit breaker gauges of
    /// <paramref name="snapshot"/>'s servers, read now, then the process and runtime metrics.
    /// </summary>
    public void WriteTo(IBufferWriter<byte> output, GatewaySnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(snapshot);
        var writer = new PrometheusTextWriter(output);
        Registry.Collect(writer);
        WriteServerGauges(writer, snapshot);
        _process?.Collect(writer);
    }

    /// <summary>
    /// Points <paramref name="snapshot"/>'s routes, upstreams, servers and connection pools at their cells (existing
    /// ones for names seen before), and removes the series of names the snapshot no longer has. Called by the app for
    /// its first snapshot and before each swap, so requests on the new snapshot record without a lookup.
    /// </summary>
    internal void Bind(GatewaySnapshot snapshot)
    {
        lock (_bindGate)
        {
            var routeNames = new HashSet<string>(StringComparer.Ordinal) { NoRoute };
            foreach (var route in snapshot.Routes.Routes)
            {
                route.Metrics = RouteFor(route.Name);
                routeNames.Add(route.Name);
            }
            var upstreamNames = new HashSet<string>(StringComparer.Ordinal) { NoUpstream };
            var serverKeys = new HashSet<LabelValues>();
            foreach (var upstream in snapshot.Upstreams.Values)
            {
                var upstreamMetrics = UpstreamFor(upstream.Name);
                upstream.Metrics = upstreamMetrics;
                upstream.Client.ConnectionCounter = upstreamMetrics.ConnectionsCreated;
                upstreamNames.Add(upstream.Name);
                foreach (var server in upstream.Servers)
                {
                    server.Metrics = ServerFor(upstream.Name, server.Authority);
                    serverKeys.Add(LabelValues.Of(upstream.Name, server.Authority));
                }
            }

            foreach (var (name, metrics) in _routes)
            {
                if (!routeNames.Contains(name) && _routes.TryRemove(name, out _))
                {
                    metrics.Retire();
                }
            }
            Requests.RemoveWhere(v => !routeNames.Contains(v[1]));
            RequestDuration.RemoveWhere(v => !routeNames.Contains(v[0]));
            RequestBodyBytes.RemoveWhere(v => !routeNames.Contains(v[0]));
            ResponseBodyBytes.RemoveWhere(v => !routeNames.Contains(v[0]));

            foreach (var name in _upstreams.Keys)
            {
                if (!upstreamNames.Contains(name))
                {
                    _upstreams.TryRemove(name, out _);
                }
            }
            UpstreamLatency.RemoveWhere(v => !upstreamNames.Contains(v[0]));
            UpstreamRequests.RemoveWhere(v => !upstreamNames.Contains(v[0]));
            UpstreamConnectionsCreated.RemoveWhere(v => !upstreamNames.Contains(v[0]));
            UpstreamRetries.RemoveWhere(v => !upstreamNames.Contains(v[0]));

            foreach (var key in _servers.Keys)
            {
                if (!serverKeys.Contains(key) && key[0] != NoUpstream)
                {
                    _servers.TryRemove(key, out _);
                }
            }
            UpstreamConnectErrors.RemoveWhere(v => !serverKeys.Contains(v) && v[0] != NoUpstream);
        }
    }

    /// <summary>Index into <see cref="MethodLabels"/>: the nine methods of RFC 9110 and PATCH, anything else <c>_OTHER</c>.</summary>
    /// <remarks>
    /// Any other token is one label value, so a client inventing methods cannot grow the number of series (the same
    /// rule as OpenTelemetry's <c>http.request.method</c>). A switch on the string compiles to length and character
    /// tests: no hashing, no allocation.
    /// </remarks>
    internal static int MethodIndex(string method) => method switch
    {
        "GET" => 0,
        "POST" => 1,
        "PUT" => 2,
        "DELETE" => 3,
        "HEAD" => 4,
        "OPTIONS" => 5,
        "PATCH" => 6,
        "TRACE" => 7,
        "CONNECT" => 8,
        _ => 9,
    };

    private RouteMetrics RouteFor(string name) =>
        _routes.TryGetValue(name, out var metrics) ? metrics : _routes.GetOrAdd(name, static (n, self) => new RouteMetrics(self, n), this);

    private UpstreamMetrics UpstreamFor(string name) =>
        _upstreams.TryGetValue(name, out var metrics) ? metrics : _upstreams.GetOrAdd(name, static (n, self) => new UpstreamMetrics(self, n), this);

    private ServerMetrics ServerFor(string upstream, string server)
    {
        var key = LabelValues.Of(upstream, server);
        return _servers.TryGetValue(key, out var metrics)
            ? metrics
            : _servers.GetOrAdd(key, static (k, self) => new ServerMetrics(self.UpstreamConnectErrors.WithLabels(k)), this);
    }

    private void WriteServerGauges(PrometheusTextWriter writer, GatewaySnapshot snapshot)
    {
        // Config order, so the scrape reads like the file; a server listed twice in one upstream is written once (the
        // format forbids duplicate series).
        var seen = new HashSet<LabelValues>();
        writer.WriteFamilyHeader(_healthName,
            "1 when the server is healthy (active health checks pass and passive checks have not ejected it), else 0.", MetricType.Gauge);
        foreach (var upstream in Upstreams(snapshot))
        {
            foreach (var server in upstream.Servers)
            {
                if (seen.Add(LabelValues.Of(upstream.Name, server.Authority)))
                {
                    var healthy = server.State.IsHealthy && !server.State.IsEjected;
                    writer.WriteSample(_healthName, ServerLabelNames, [upstream.Name, server.Authority], healthy ? 1 : 0);
                }
            }
        }

        seen.Clear();
        writer.WriteFamilyHeader(_breakerName,
            "Circuit breaker state of the server: 0 closed, 1 open, 2 half-open (0 also when its upstream has no breaker).", MetricType.Gauge);
        foreach (var upstream in Upstreams(snapshot))
        {
            foreach (var server in upstream.Servers)
            {
                if (seen.Add(LabelValues.Of(upstream.Name, server.Authority)))
                {
                    var state = server.State.Breaker?.State ?? CircuitState.Closed;
                    writer.WriteSample(_breakerName, ServerLabelNames, [upstream.Name, server.Authority], (int)state);
                }
            }
        }
    }

    private static IEnumerable<UpstreamModel> Upstreams(GatewaySnapshot snapshot)
    {
        foreach (var config in snapshot.Config.Upstreams)
        {
            if (snapshot.Upstreams.TryGetValue(config.Name, out var upstream))
            {
                yield return upstream;
            }
        }
    }

    internal static string StatusText(int status) => status.ToString(CultureInfo.InvariantCulture);

    /// <summary>Non-inlined so the lookup fast path stays small.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal CounterCell CreateRequestCell(RouteMetrics route, int method, int status) =>
        Requests.WithLabels(MethodLabels[method], route.Name, StatusText(status));
}

/// <summary>The cells of one route, cached on its <see cref="RouteModel"/>.</summary>
internal sealed class RouteMetrics
{
    /// <summary>Status codes 100..999 (all Kestrel accepts) have a slot; a table per method is created on first use (7 KiB).</summary>
    private const int MinStatus = 100;
    private const int StatusSlots = 900;

    private readonly GatewayMetrics _owner;
    private readonly CounterCell?[]?[] _byMethod = new CounterCell?[]?[GatewayMetrics.MethodLabels.Length];
    private volatile bool _retired;

    public RouteMetrics(GatewayMetrics owner, string name)
    {
        _owner = owner;
        Name = name;
        Duration = owner.RequestDuration.WithLabels(name);
        RequestBodyBytes = owner.RequestBodyBytes.WithLabels(name);
        ResponseBodyBytes = owner.ResponseBodyBytes.WithLabels(name);
    }

    public string Name { get; }

    public HistogramCell Duration { get; }

    public CounterCell RequestBodyBytes { get; }

    public CounterCell ResponseBodyBytes { get; }

    /// <summary>The requests_total cell of (method, status) on this route.</summary>
    public CounterCell Request(int method, int status)
    {
        var slot = status - MinStatus;
        if (Volatile.Read(ref _byMethod[method]) is { } table && (uint)slot < StatusSlots && Volatile.Read(ref table[slot]) is { } cell)
        {
            return cell;
        }
        return CreateRequestCell(method, status);
    }

    /// <summary>The route is gone from the config: requests still running on an old snapshot must not add its series back.</summary>
    public void Retire() => _retired = true;

    private CounterCell CreateRequestCell(int method, int status)
    {
        var cell = _retired ? new CounterCell() : _owner.CreateRequestCell(this, method, status);
        var slot = status - MinStatus;
        if ((uint)slot < StatusSlots)
        {
            var table = Volatile.Read(ref _byMethod[method]);
            if (table is null)
            {
                Interlocked.CompareExchange(ref _byMethod[method], new CounterCell?[StatusSlots], null);
                table = Volatile.Read(ref _byMethod[method])!;
            }
            // Two threads may race here; both found or created the same cell in the family, so either write is right.
            Volatile.Write(ref table[slot], cell);
        }
        return cell;
    }
}

/// <summary>The cells of one upstream group, cached on its <see cref="UpstreamModel"/> and its pool.</summary>
internal sealed class UpstreamMetrics
{
    public UpstreamMetrics(GatewayMetrics owner, string name)
    {
        Latency = owner.UpstreamLatency.WithLabels(name);
        Requests = owner.UpstreamRequests.WithLabels(name);
        ConnectionsCreated = owner.UpstreamConnectionsCreated.WithLabels(name);
        Retries = owner.UpstreamRetries.WithLabels(name);
    }

    public HistogramCell Latency { get; }

    public CounterCell Requests { get; }

    public CounterCell ConnectionsCreated { get; }

    public CounterCell Retries { get; }
}

/// <summary>The cells of one server of an upstream, cached on its <see cref="ServerModel"/>.</summary>
internal sealed class ServerMetrics(CounterCell connectErrors)
{
    public CounterCell ConnectErrors { get; } = connectErrors;
}
