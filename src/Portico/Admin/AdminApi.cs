using System.Buffers;
using System.Diagnostics;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Portico.Config;
using Portico.Gateway;
using Portico.Observability.Metrics;
using Portico.Routing;
using Portico.Upstreams;

namespace Portico.Admin;

/// <summary>
/// The admin API under <c>/api/</c>: JSON views of the running gateway (config, routes, upstreams, traffic totals)
/// and the operator's actions (reload, drain and enable a server). Every request needs the admin bearer token
/// (<see cref="AdminToken"/>). docs/admin.md lists the endpoints.
/// </summary>
/// <remarks>
/// Reads take the current snapshot once, like a request does, so one answer never mixes two configs. Actions are POST
/// only: a GET must never change anything, and a browser will not send a cross-site POST with an Authorization header
/// (the token is not a cookie), so the API needs no CSRF token.
/// </remarks>
internal sealed partial class AdminApi
{
    private static readonly long Started = Stopwatch.GetTimestamp();
    /// <summary>
    /// Indented for people reading it with curl; quotes and angle brackets are left readable (the default encoder writes
    /// them as \u0027 and \u003C in case the JSON is pasted into HTML, which application/json with nosniff never is).
    /// </summary>
    private static readonly JsonWriterOptions JsonOptions = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly GatewayApp _app;
    private readonly AdminToken _token;
    private readonly ServerRates _rates;
    private readonly Func<Task<bool>>? _reload;
    private readonly string? _configPath;
    private readonly ILogger _logger;

    /// <param name="app">The gateway whose snapshot and metrics are shown.</param>
    /// <param name="token">Where the admin token comes from.</param>
    /// <param name="rates">Recent per-server rates, sampled by the admin listener.</param>
    /// <param name="reload">Reloads the config file as SIGHUP does; true when applied. Null: <c>/api/reload</c> answers 501.</param>
    /// <param name="configPath">The config file, re-read to report why a reload was rejected.</param>
    /// <param name="logger">Where actions and refused tokens are logged.</param>
    public AdminApi(GatewayApp app, AdminToken token, ServerRates rates, Func<Task<bool>>? reload, string? configPath, ILogger logger)
    {
        _app = app;
        _token = token;
        _rates = rates;
        _reload = reload;
        _configPath = configPath;
        _logger = logger;
    }

    /// <summary>Answers a request whose path starts with <c>/api</c>.</summary>
    public Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var snapshot = _app.Snapshot;
        switch (_token.Check(snapshot.Config.Admin, request.Headers.Authorization.ToString() is { Length: > 0 } header ? header : null))
        {
            case AdminAuthResult.NotConfigured:
                return ErrorAsync(context, StatusCodes.Status403Forbidden, "admin_api_disabled",
                    "no admin token is configured: set admin.token in the config file or PORTICO_ADMIN_TOKEN in the environment to enable the admin API");
            case AdminAuthResult.Missing:
                context.Response.Headers.WWWAuthenticate = "Bearer realm=\"portico-admin\"";
                return ErrorAsync(context, StatusCodes.Status401Unauthorized, "unauthorized", "send the admin token as 'Authorization: Bearer <token>'");
            case AdminAuthResult.Wrong:
                Log.TokenRefused(_logger, context.Connection.RemoteIpAddress?.ToString() ?? "-", request.Method, request.Path.Value ?? "");
                return ErrorAsync(context, StatusCodes.Status403Forbidden, "forbidden", "the admin token does not match");
        }

        var path = request.Path.Value ?? "";
        switch (path)
        {
            case "/api/config":
                return Get(context) ?? JsonAsync(context, StatusCodes.Status200OK, w => WriteConfig(w, snapshot));
            case "/api/routes":
                return Get(context) ?? JsonAsync(context, StatusCodes.Status200OK, w => WriteRoutes(w, snapshot));
            case "/api/upstreams":
                return Get(context) ?? JsonAsync(context, StatusCodes.Status200OK, w => WriteUpstreams(w, snapshot));
            case "/api/stats":
                return Get(context) ?? JsonAsync(context, StatusCodes.Status200OK, w => WriteStats(w, snapshot));
            case "/api/reload":
                return Post(context) ?? ReloadAsync(context);
        }
        if (TryParseServerAction(path, out var upstream, out var server, out var drain))
        {
            return Post(context) ?? ServerActionAsync(context, snapshot, upstream, server, drain);
        }
        return ErrorAsync(context, StatusCodes.Status404NotFound, "not_found", $"no admin endpoint {path}; see docs/admin.md");
    }

    /// <summary>Null when the method is GET or HEAD; else the 405 answer.</summary>
    private static Task? Get(HttpContext context) =>
        HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method) ? null : NotAllowedAsync(context, "GET, HEAD");

    /// <summary>Null when the method is POST; else the 405 answer.</summary>
    private static Task? Post(HttpContext context) => HttpMethods.IsPost(context.Request.Method) ? null : NotAllowedAsync(context, "POST");

    private static Task NotAllowedAsync(HttpContext context, string allow)
    {
        context.Response.Headers.Allow = allow;
        return ErrorAsync(context, StatusCodes.Status405MethodNotAllowed, "method_not_allowed", $"{context.Request.Method} is not allowed here; use {allow}");
    }

    /// <summary><c>/api/upstreams/{upstream}/servers/{host:port}/drain</c> or <c>.../enable</c>.</summary>
    internal static bool TryParseServerAction(string path, out string upstream, out string server, out bool drain)
    {
        upstream = server = "";
        drain = false;
        const string Prefix = "/api/upstreams/";
        const string Servers = "/servers/";
        if (!path.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return false;
        }
        string rest;
        if (path.EndsWith("/drain", StringComparison.Ordinal))
        {
            drain = true;
            rest = path[Prefix.Length..^"/drain".Length];
        }
        else if (path.EndsWith("/enable", StringComparison.Ordinal))
        {
            rest = path[Prefix.Length..^"/enable".Length];
        }
        else
        {
            return false;
        }
        var split = rest.LastIndexOf(Servers, StringComparison.Ordinal);
        if (split <= 0 || split + Servers.Length >= rest.Length)
        {
            return false;
        }
        upstream = rest[..split];
        server = rest[(split + Servers.Length)..];
        return !server.Contains('/', StringComparison.Ordinal);
    }

    private Task ServerActionAsync(HttpContext context, GatewaySnapshot snapshot, string upstreamName, string authority, bool drain)
    {
        if (!snapshot.Upstreams.TryGetValue(upstreamName, out var upstream))
        {
            return ErrorAsync(context, StatusCodes.Status404NotFound, "unknown_upstream",
                $"no upstream '{upstreamName}' (known: {string.Join(", ", snapshot.Upstreams.Keys.Order(StringComparer.Ordinal))})");
        }
        var found = new List<ServerModel>();
        foreach (var server in upstream.Servers)
        {
            // Compared ignoring case: a host name is case-insensitive (RFC 3986 §3.2.2).
            if (string.Equals(server.Authority, authority, StringComparison.OrdinalIgnoreCase))
            {
                found.Add(server);
            }
        }
        if (found.Count == 0)
        {
            var known = new List<string>();
            foreach (var server in upstream.Servers)
            {
                known.Add(server.Authority);
            }
            return ErrorAsync(context, StatusCodes.Status404NotFound, "unknown_server",
                $"upstream '{upstreamName}' has no server '{authority}' (servers: {string.Join(", ", known)})");
        }
        var inFlight = 0;
        foreach (var server in found)
        {
            server.State.SetDraining(drain);
            inFlight += server.State.InFlight;
        }
        Log.ServerAction(_logger, drain ? "drained" : "enabled", upstreamName, found[0].Authority, context.Connection.RemoteIpAddress?.ToString() ?? "-");
        return JsonAsync(context, StatusCodes.Status200OK, w =>
        {
            w.WriteStartObject();
            w.WriteString("upstream", upstreamName);
            w.WriteString("server", found[0].Authority);
            w.WriteBoolean("draining", drain);
            // Draining stops new requests; those already running finish. An operator waits for this to reach 0.
            w.WriteNumber("in_flight", inFlight);
            w.WriteEndObject();
        });
    }

    private async Task ReloadAsync(HttpContext context)
    {
        if (_reload is null)
        {
            await ErrorAsync(context, StatusCodes.Status501NotImplemented, "reload_unavailable", "this host does not reload its config");
            return;
        }
        Log.ReloadRequested(_logger, context.Connection.RemoteIpAddress?.ToString() ?? "-");
        var applied = await _reload();
        var generation = _app.Snapshot.Generation;
        if (applied)
        {
            await JsonAsync(context, StatusCodes.Status200OK, w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("applied", true);
                w.WriteNumber("generation", generation);
                w.WriteEndObject();
            });
            return;
        }
        // The reload logged its reasons; the file is read again to return them. The file could change in between,
        // which at worst reports the newer file's errors: the answer still says, correctly, that nothing was applied.
        IReadOnlyList<ConfigError> errors = [];
        if (_configPath is not null)
        {
            var result = ConfigLoader.LoadFile(_configPath);
            errors = result.Errors;
        }
        await JsonAsync(context, StatusCodes.Status422UnprocessableEntity, w =>
        {
            w.WriteStartObject();
            w.WriteBoolean("applied", false);
            w.WriteNumber("generation", generation);
            w.WriteString("message", errors.Count > 0
                ? $"the config file has {errors.Count} error(s); the running config keeps serving"
                : "the config file is valid but could not be applied (a listener could not start; see the log); the running config keeps serving");
            w.WriteStartArray("errors");
            foreach (var error in errors)
            {
                w.WriteStartObject();
                w.WriteString("path", error.Path);
                w.WriteNumber("line", error.Line);
                w.WriteNumber("column", error.Column);
                w.WriteString("message", error.Message);
                w.WriteString("text", error.ToString());
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    private static void WriteConfig(Utf8JsonWriter w, GatewaySnapshot snapshot)
    {
        w.WriteStartObject();
        w.WriteNumber("generation", snapshot.Generation);
        w.WritePropertyName("config");
        ConfigJson.Write(w, snapshot.Config);
        w.WriteEndObject();
    }

    private void WriteRoutes(Utf8JsonWriter w, GatewaySnapshot snapshot)
    {
        var totals = RouteTotals();
        w.WriteStartObject();
        w.WriteNumber("generation", snapshot.Generation);
        w.WriteString("default_upstream", snapshot.DefaultUpstream?.Name);
        w.WriteStartArray("routes");
        foreach (var route in RoutesInOrder(snapshot))
        {
            w.WriteStartObject();
            w.WriteString("name", route.Name);
            w.WriteString("path", route.Path);
            w.WriteString("host", route.Host);
            w.WriteStartArray("methods");
            foreach (var method in route.Methods)
            {
                w.WriteStringValue(method);
            }
            w.WriteEndArray();
            w.WriteStartObject("headers");
            foreach (var (name, value) in route.Headers)
            {
                // A header a route must carry can be a shared secret (X-Internal-Key); same rule as /api/config.
                w.WriteString(name, ConfigJson.IsSecretKey(name) ? ConfigJson.Redacted : value);
            }
            w.WriteEndObject();
            w.WriteString("upstream", route.UpstreamName);
            w.WriteBoolean("auth_required", route.AuthRequired);
            w.WriteString("strip_prefix", route.StripPrefix);
            if (route.Timeout is { } timeout)
            {
                w.WriteNumber("timeout_ms", (long)timeout.TotalMilliseconds);
            }
            else
            {
                w.WriteNull("timeout_ms");
            }
            w.WriteBoolean("idempotent", route.Idempotent);
            if (route.Respond is { } respond)
            {
                w.WriteNumber("respond_status", respond.Status);
            }
            var (requests, errors) = totals.GetValueOrDefault(route.Name);
            w.WriteNumber("requests_total", requests);
            w.WriteNumber("errors_total", errors);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private void WriteUpstreams(Utf8JsonWriter w, GatewaySnapshot snapshot)
    {
        w.WriteStartObject();
        w.WriteNumber("generation", snapshot.Generation);
        w.WriteStartArray("upstreams");
        foreach (var upstream in UpstreamsInOrder(snapshot))
        {
            var config = upstream.Config;
            var health = config.HealthCheck ?? snapshot.Config.HealthCheck;
            var available = 0;
            double requestRate = 0, failureRate = 0;
            foreach (var server in upstream.Servers)
            {
                available += server.State.IsAvailable ? 1 : 0;
                var (r, f) = _rates.RatesOf(server.State);
                requestRate += r;
                failureRate += f;
            }
            w.WriteStartObject();
            w.WriteString("name", upstream.Name);
            w.WriteString("strategy", upstream.Policy.Name);
            w.WriteString("protocol", config.Protocol);
            w.WriteNumber("max_retries", upstream.MaxRetries);
            if (health is { Enabled: true })
            {
                w.WriteStartObject("health_check");
                w.WriteString("type", health.Type);
                w.WriteNumber("interval_seconds", health.IntervalSeconds);
                w.WriteEndObject();
            }
            else
            {
                w.WriteNull("health_check");
            }
            w.WriteBoolean("circuit_breaker", config.CircuitBreaker is { Enabled: true });
            w.WriteNumber("servers_available", available);
            w.WriteNumber("servers_total", upstream.Servers.Length);
            WriteRate(w, "requests_per_second", requestRate);
            WriteRate(w, "failures_per_second", failureRate);
            w.WriteStartArray("servers");
            foreach (var server in upstream.Servers)
            {
                WriteServer(w, server);
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private void WriteServer(Utf8JsonWriter w, ServerModel server)
    {
        var state = server.State;
        var breaker = state.Breaker?.State;
        var (requestRate, failureRate) = _rates.RatesOf(state);
        w.WriteStartObject();
        w.WriteString("address", server.Authority);
        w.WriteString("host", server.Host);
        w.WriteNumber("port", server.Port);
        w.WriteString("zone", server.Zone);
        w.WriteBoolean("backup", server.Backup);
        w.WriteNumber("weight", server.Weight);
        // One word for the dashboard, most severe first; the flags below say the same in detail.
        w.WriteString("state", !state.IsHealthy ? "down"
            : state.IsEjected ? "ejected"
            : breaker == CircuitState.Open ? "circuit_open"
            : state.IsDraining ? "draining"
            : "up");
        w.WriteBoolean("healthy", state.IsHealthy);
        w.WriteBoolean("ejected", state.IsEjected);
        w.WriteBoolean("draining", state.IsDraining);
        w.WriteBoolean("available", state.IsAvailable);
        w.WriteString("circuit_breaker", breaker switch
        {
            null => "off",
            CircuitState.Closed => "closed",
            CircuitState.Open => "open",
            _ => "half_open",
        });
        w.WriteNumber("in_flight", state.InFlight);
        w.WriteNumber("consecutive_failures", state.ConsecutiveFailures);
        w.WriteNumber("requests_total", state.Requests);
        w.WriteNumber("failures_total", state.Failures);
        WriteRate(w, "requests_per_second", requestRate);
        WriteRate(w, "failures_per_second", failureRate);
        w.WriteEndObject();
    }

    private void WriteStats(Utf8JsonWriter w, GatewaySnapshot snapshot)
    {
        var metrics = _app.Metrics;
        long requests = 0, serverErrors = 0, clientErrors = 0;
        foreach (var (labels, cell) in metrics.Requests.GetCells())
        {
            var value = cell.Value;
            requests += value;
            var status = labels[2];
            if (status.Length == 3 && status[0] == '5')
            {
                serverErrors += value;
            }
            else if (status.Length == 3 && status[0] == '4')
            {
                clientErrors += value;
            }
        }
        // pingora_request_duration_seconds summed over routes: what the dashboard turns into percentiles.
        var bounds = metrics.RequestDuration.Buckets;
        var buckets = new long[bounds.Count + 1];
        double sum = 0;
        foreach (var (_, cell) in metrics.RequestDuration.GetCells())
        {
            for (var i = 0; i < buckets.Length; i++)
            {
                buckets[i] += cell.BucketCount(i);
            }
            sum += cell.Sum;
        }
        var routeTotals = RouteTotals();

        w.WriteStartObject();
        w.WriteNumber("generation", snapshot.Generation);
        w.WriteNumber("uptime_seconds", Math.Round(Stopwatch.GetElapsedTime(Started).TotalSeconds, 3));
        w.WriteNumber("requests_total", requests);
        w.WriteNumber("errors_total", serverErrors);
        w.WriteNumber("client_errors_total", clientErrors);
        w.WriteNumber("connections_active", metrics.ConnectionsActive.Unlabeled.Value);
        w.WriteNumber("connections_total", metrics.ConnectionsAccepted.Unlabeled.Value);
        w.WriteStartObject("latency");
        w.WriteStartArray("bounds");
        foreach (var bound in bounds)
        {
            w.WriteNumberValue(bound);
        }
        w.WriteEndArray();
        // Cumulative, as Prometheus' le buckets: the last is +Inf, i.e. the count.
        w.WriteStartArray("cumulative");
        var cumulative = 0L;
        foreach (var count in buckets)
        {
            cumulative += count;
            w.WriteNumberValue(cumulative);
        }
        w.WriteEndArray();
        w.WriteNumber("count", cumulative);
        w.WriteNumber("sum_seconds", sum);
        w.WriteEndObject();

        w.WriteStartArray("routes");
        foreach (var route in RoutesInOrder(snapshot))
        {
            var (routeRequests, routeErrors) = routeTotals.GetValueOrDefault(route.Name);
            w.WriteStartObject();
            w.WriteString("name", route.Name);
            w.WriteNumber("requests_total", routeRequests);
            w.WriteNumber("errors_total", routeErrors);
            w.WriteEndObject();
        }
        w.WriteEndArray();

        var upstreamCounters = UpstreamTotals();
        w.WriteStartArray("upstreams");
        foreach (var upstream in UpstreamsInOrder(snapshot))
        {
            var available = 0;
            foreach (var server in upstream.Servers)
            {
                available += server.State.IsAvailable ? 1 : 0;
            }
            var counters = upstreamCounters.GetValueOrDefault(upstream.Name);
            w.WriteStartObject();
            w.WriteString("name", upstream.Name);
            w.WriteNumber("requests_total", counters.Requests);
            w.WriteNumber("retries_total", counters.Retries);
            w.WriteNumber("connect_errors_total", counters.ConnectErrors);
            w.WriteNumber("connections_created_total", counters.ConnectionsCreated);
            w.WriteNumber("servers_available", available);
            w.WriteNumber("servers_total", upstream.Servers.Length);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>Requests and 5xx answers per route, summed over methods and statuses.</summary>
    private Dictionary<string, (long Requests, long Errors)> RouteTotals()
    {
        var totals = new Dictionary<string, (long Requests, long Errors)>(StringComparer.Ordinal);
        foreach (var (labels, cell) in _app.Metrics.Requests.GetCells())
        {
            var value = cell.Value;
            var (requests, errors) = totals.GetValueOrDefault(labels[1]);
            var status = labels[2];
            totals[labels[1]] = (requests + value, errors + (status.Length == 3 && status[0] == '5' ? value : 0));
        }
        return totals;
    }

    private Dictionary<string, UpstreamCounters> UpstreamTotals()
    {
        var metrics = _app.Metrics;
        var totals = new Dictionary<string, UpstreamCounters>(StringComparer.Ordinal);
        void Add(Counter family, Func<UpstreamCounters, long, UpstreamCounters> add)
        {
            foreach (var (labels, cell) in family.GetCells())
            {
                totals[labels[0]] = add(totals.GetValueOrDefault(labels[0]), cell.Value);
            }
        }
        Add(metrics.UpstreamRequests, static (c, v) => c with { Requests = c.Requests + v });
        Add(metrics.UpstreamRetries, static (c, v) => c with { Retries = c.Retries + v });
        Add(metrics.UpstreamConnectErrors, static (c, v) => c with { ConnectErrors = c.ConnectErrors + v });
        Add(metrics.UpstreamConnectionsCreated, static (c, v) => c with { ConnectionsCreated = c.ConnectionsCreated + v });
        return totals;
    }

    /// <summary>Config order, as the operator wrote them (the route table keeps them in matching order, most specific first).</summary>
    private static IEnumerable<RouteModel> RoutesInOrder(GatewaySnapshot snapshot) => snapshot.Routes.Routes.OrderBy(static r => r.Order);

    /// <summary>Config order, as the scrape and the file have them (the snapshot's dictionary has no order).</summary>
    private static IEnumerable<UpstreamModel> UpstreamsInOrder(GatewaySnapshot snapshot)
    {
        foreach (var config in snapshot.Config.Upstreams)
        {
            if (snapshot.Upstreams.TryGetValue(config.Name, out var upstream))
            {
                yield return upstream;
            }
        }
    }

    private static void WriteRate(Utf8JsonWriter w, string name, double value) => w.WriteNumber(name, Math.Round(value, 3));

    private static Task ErrorAsync(HttpContext context, int status, string error, string message) =>
        JsonAsync(context, status, w =>
        {
            w.WriteStartObject();
            w.WriteString("error", error);
            w.WriteString("message", message);
            w.WriteEndObject();
        });

    /// <summary>Writes a JSON answer with a Content-Length (rendered first, so a failure never sends half a document).</summary>
    internal static Task JsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var writer = new Utf8JsonWriter(buffer, JsonOptions))
        {
            write(writer);
        }
        buffer.Write("\n"u8);
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = "application/json; charset=utf-8";
        response.ContentLength = buffer.WrittenCount;
        return HttpMethods.IsHead(context.Request.Method) ? Task.CompletedTask : response.Body.WriteAsync(buffer.WrittenMemory).AsTask();
    }

    private readonly record struct UpstreamCounters(long Requests, long Retries, long ConnectErrors, long ConnectionsCreated);

    private static partial class Log
    {
        [LoggerMessage(EventId = 4001, Level = LogLevel.Warning, Message = "Admin API: wrong token from {Client} ({Method} {Path})")]
        public static partial void TokenRefused(ILogger logger, string client, string method, string path);

        [LoggerMessage(EventId = 4002, Level = LogLevel.Information, Message = "Admin API: server {Upstream}/{Server} {Action} by {Client}")]
        public static partial void ServerAction(ILogger logger, string action, string upstream, string server, string client);

        [LoggerMessage(EventId = 4003, Level = LogLevel.Information, Message = "Admin API: reload requested by {Client}")]
        public static partial void ReloadRequested(ILogger logger, string client);
    }
}
