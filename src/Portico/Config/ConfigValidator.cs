using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Portico.Config;

/// <summary>
/// Semantic checks on a bound <see cref="GatewayConfig"/>: ranges, names, references between sections, formats.
/// Collects every error (never stops at the first), each with its YAML path and, through the
/// <see cref="ConfigSourceMap"/>, the line and column; a key that was not written is reported at its parent.
/// </summary>
/// <remarks>
/// Enumerated values (strategies, protocols, modes, levels) are compared ordinally, as the runtime compares them;
/// a wrongly cased value gets a "did you mean" instead of being silently accepted here and rejected later.
/// </remarks>
internal sealed class ConfigValidator
{
    private static readonly string[] Strategies = ["round_robin", "weighted_round_robin", "least_connections", "ip_hash", "random"];
    private static readonly string[] Protocols = ["http", "h2c", "grpc"];
    private static readonly string[] HealthCheckTypes = ["http", "tcp"];
    private static readonly string[] KeyExtractions = ["client_ip", "header", "route", "custom"];
    private static readonly string[] LogLevels = ["trace", "debug", "info", "information", "warn", "warning", "error", "critical", "none", "off"];
    private static readonly string[] LogFormats = ["json", "text"];
    private static readonly string[] OtlpProtocols = ["http/protobuf", "grpc"];
    private static readonly string[] AuthModes = ["none", "jwt", "session", "mixed"];
    private static readonly string[] JwtAlgorithms = ["HS256", "HS384", "HS512", "RS256", "ES256"];

    private readonly ConfigSourceMap _map;
    private readonly string? _baseDirectory;
    private readonly List<ConfigError> _errors = [];
    private readonly List<ConfigError> _warnings = [];

    private ConfigValidator(ConfigSourceMap map, string? baseDirectory)
    {
        _map = map;
        _baseDirectory = baseDirectory;
    }

    /// <summary>Runs every check on <paramref name="config"/>.</summary>
    /// <param name="config">The bound config.</param>
    /// <param name="map">Locations of the YAML paths; empty for a config built in code (errors then have line 0).</param>
    /// <param name="baseDirectory">The config file's directory, also searched for relative certificate paths.</param>
    public static (IReadOnlyList<ConfigError> Errors, IReadOnlyList<ConfigError> Warnings) Validate(
        GatewayConfig config, ConfigSourceMap map, string? baseDirectory)
    {
        var validator = new ConfigValidator(map, baseDirectory);
        validator.ValidateServer(config.Server);
        validator.ValidateAdmin(config.Admin);
        validator.ValidatePerformance(config.Performance);
        validator.ValidateMonitoring(config.Monitoring, config.Metrics);
        validator.ValidateSecurity(config.Security);
        validator.ValidateTls(config.Tls);
        var upstreamNames = validator.ValidateUpstreams(config.Upstreams);
        if (config.HealthCheck is not null)
        {
            validator.ValidateHealthCheck(config.HealthCheck, "health_check");
        }

        validator.ValidateRoutes(config.Routes, upstreamNames, config.Auth);
        validator.ValidateAuth(config.Auth);
        validator.ValidateCache(config.Cache);
        validator.ValidateLogging(config.Logging);
        return (validator._errors, validator._warnings);
    }

    // ---- sections ----

    private void ValidateServer(ServerConfig server)
    {
        ListenHost("server.listen_address", server.ListenAddress);
        Port("server.listen_port", server.ListenPort);
        if (server.BindAddress is not null)
        {
            ListenHostPort("server.bind_address", server.BindAddress);
        }

        for (var i = 0; i < server.Listeners.Count; i++)
        {
            ListenHostPort($"server.listeners[{i}].address", server.Listeners[i].Address);
        }

        if (server.WorkerThreads < 0)
        {
            Error("server.worker_threads", $"worker_threads must be 0 or more, got {server.WorkerThreads}");
        }
        else if (_map.Contains("server.worker_threads") || server.WorkerThreads > 0)
        {
            Warning("server.worker_threads", "worker_threads is ignored: .NET sizes its thread pool itself");
        }

        AtLeast("server.graceful_timeout_seconds", server.GracefulTimeoutSeconds, 0);
        AtLeast("server.max_request_headers_bytes", server.MaxRequestHeadersBytes, 1);
        AtLeast("server.max_request_body_bytes", server.MaxRequestBodyBytes, 0);
        AtLeast("server.request_headers_timeout_seconds", server.RequestHeadersTimeoutSeconds, 1);
        AtLeast("server.idle_timeout_seconds", server.IdleTimeoutSeconds, 1);
        AtLeast("server.max_connections", server.MaxConnections, 0);
    }

    private void ValidateAdmin(AdminConfig admin)
    {
        ListenHost("admin.listen_address", admin.ListenAddress);
        Port("admin.listen_port", admin.ListenPort);
    }

    private void ValidatePerformance(PerformanceConfig performance)
    {
        AtLeast("performance.connection_pool_size", performance.ConnectionPoolSize, 1);
        InRange("performance.compression_level", performance.CompressionLevel, 1, 11, "1 (fastest) to 11 (brotli's best)");
        foreach (var key in (string[])["zero_copy_enabled", "memory_pool_enabled"])
        {
            var path = "performance." + key;
            if (_map.Contains(path))
            {
                Warning(path, $"{key} is accepted for compatibility and has no effect: buffers are always pooled");
            }
        }
    }

    private void ValidateMonitoring(MonitoringConfig monitoring, MetricsConfig? metrics)
    {
        var prometheus = monitoring.Prometheus;
        ListenHost("monitoring.prometheus.listen_address", prometheus.ListenAddress);
        Port("monitoring.prometheus.listen_port", prometheus.ListenPort);
        AbsolutePath("monitoring.prometheus.metrics_path", prometheus.MetricsPath);
        MetricPrefix("monitoring.prometheus.prefix", prometheus.Prefix);
        Fraction("monitoring.tracing.sampling_rate", monitoring.Tracing.SamplingRate);
        if (monitoring.Tracing.OtlpEndpoint is { } otlp)
        {
            AbsoluteUri("monitoring.tracing.otlp_endpoint", otlp);
        }
        if (monitoring.Tracing.Protocol is { } protocol)
        {
            OneOf("monitoring.tracing.protocol", protocol, OtlpProtocols);
        }

        if (metrics is null)
        {
            return;
        }

        var metricsPort = ListenHostPort("metrics.bind_address", metrics.BindAddress);
        AbsolutePath("metrics.path", metrics.Path);
        if (metrics.Prefix is not null)
        {
            MetricPrefix("metrics.prefix", metrics.Prefix);
        }

        if (prometheus.Enabled && metrics.Enabled && metricsPort is { } port && port != prometheus.ListenPort)
        {
            Warning("metrics.bind_address",
                $"both monitoring.prometheus (port {prometheus.ListenPort}) and metrics (port {port}) are enabled; keep one of them");
        }
    }

    private void ValidateSecurity(SecurityConfig security)
    {
        var rateLimit = security.RateLimit;
        if (!(rateLimit.RequestsPerSecond > 0))
        {
            Error("security.rate_limit.requests_per_second", $"requests_per_second must be greater than 0, got {Format(rateLimit.RequestsPerSecond)}");
        }

        AtLeast("security.rate_limit.burst_size", rateLimit.BurstSize, 1);
        OneOf("security.rate_limit.key_extraction", rateLimit.KeyExtraction, KeyExtractions);
        if (rateLimit.KeyExtraction == "header" && string.IsNullOrWhiteSpace(rateLimit.Header))
        {
            Error("security.rate_limit.header", "key_extraction is 'header' but no header is named; add header: \"X-Api-Key\" (for example)");
        }
        else if (rateLimit.Header is { Length: > 0 } header && !IsToken(header))
        {
            Error("security.rate_limit.header", $"'{header}' is not a valid header name");
        }

        if (rateLimit.RedisUrl is { } redis && string.IsNullOrWhiteSpace(redis))
        {
            Error("security.rate_limit.redis_url", "redis_url is empty; remove it or give host:port");
        }

        AtLeast("security.ddos_protection.max_connections_per_ip", security.DdosProtection.MaxConnectionsPerIp, 1);

        var access = security.AccessControl;
        IpOrCidrList("security.access_control.ip_whitelist", access.IpWhitelist);
        IpOrCidrList("security.access_control.ip_blacklist", access.IpBlacklist);
        IpOrCidrList("security.trusted_proxies", security.TrustedProxies);
        var countries = access.GeoBlocking.AllowedCountries;
        for (var i = 0; i < countries.Count; i++)
        {
            if (countries[i] is not { Length: 2 } code || !char.IsAsciiLetter(code[0]) || !char.IsAsciiLetter(code[1]))
            {
                Error($"security.access_control.geo_blocking.allowed_countries[{i}]",
                    $"'{countries[i]}' is not a two-letter ISO 3166 country code (US, CN, JP, ...)");
            }
        }

        foreach (var name in security.Headers.CustomHeaders.Keys)
        {
            if (!IsToken(name))
            {
                Error($"security.headers.custom_headers.{name}", $"'{name}' is not a valid header name");
            }
        }
    }

    private void ValidateTls(TlsConfig tls)
    {
        Port("tls.listen_port", tls.ListenPort);
        if (tls.ListenAddress is not null)
        {
            ListenHost("tls.listen_address", tls.ListenAddress);
        }

        AtLeast("tls.hsts_max_age", tls.HstsMaxAge, 0);
        if (tls.Enabled && !tls.Acme.Enabled)
        {
            if (string.IsNullOrWhiteSpace(tls.CertPath))
            {
                Error("tls.cert_path", "TLS is enabled without ACME, so cert_path (a PEM certificate chain) is required");
            }

            if (string.IsNullOrWhiteSpace(tls.KeyPath))
            {
                Error("tls.key_path", "TLS is enabled without ACME, so key_path (a PEM private key) is required");
            }
        }

        if (tls.Enabled)
        {
            // Not found is a warning only: validation may run on another machine than the gateway (CI, the
            // seed's production.yaml), and the runtime reports a missing file when it binds the listener.
            FileWarning("tls.cert_path", tls.CertPath, "certificate");
            FileWarning("tls.key_path", tls.KeyPath, "private key");
        }

        if (tls.Acme.Enabled)
        {
            AbsoluteUri("tls.acme.directory_url", tls.Acme.DirectoryUrl);
            if (tls.Acme.Domains.Count == 0)
            {
                Error("tls.acme.domains", "ACME is enabled but no domains are listed; add domains: [\"example.com\"]");
            }

            for (var i = 0; i < tls.Acme.Domains.Count; i++)
            {
                if (string.IsNullOrWhiteSpace(tls.Acme.Domains[i]) || tls.Acme.Domains[i].Contains(' ', StringComparison.Ordinal))
                {
                    Error($"tls.acme.domains[{i}]", $"'{tls.Acme.Domains[i]}' is not a domain name");
                }
            }
        }
    }

    /// <summary>Checks every upstream; returns the names defined, for the routes' references.</summary>
    private List<string> ValidateUpstreams(IReadOnlyList<UpstreamConfig> upstreams)
    {
        var names = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < upstreams.Count; i++)
        {
            var upstream = upstreams[i];
            var path = _map.PathOf(upstream, $"upstreams[{i}]");
            if (string.IsNullOrWhiteSpace(upstream.Name))
            {
                Error(path + ".name", "every upstream needs a name; routes refer to it with upstream:");
            }
            else if (!seen.Add(upstream.Name))
            {
                Error(path + ".name", $"upstream name '{upstream.Name}' is used twice; names must be unique");
            }
            else
            {
                names.Add(upstream.Name);
            }

            if (upstream.Servers.Count == 0)
            {
                Error(path + ".servers", $"upstream '{upstream.Name}' has no servers; add at least one (\"host:port\" or host:/port:)");
            }

            for (var j = 0; j < upstream.Servers.Count; j++)
            {
                ValidateUpstreamServer(upstream.Servers[j], $"{path}.servers[{j}]");
            }

            OneOf(path + ".load_balance_strategy", upstream.LoadBalanceStrategy, Strategies);
            OneOf(path + ".protocol", upstream.Protocol, Protocols);
            AtLeast(path + ".connect_timeout_ms", upstream.ConnectTimeoutMs, 1);
            AtLeast(path + ".read_timeout_ms", upstream.ReadTimeoutMs, 1);
            AtLeast(path + ".max_retries", upstream.MaxRetries, 0);
            for (var k = 0; k < upstream.RetryOnStatus.Count; k++)
            {
                InRange($"{path}.retry_on_status[{k}]", upstream.RetryOnStatus[k], 400, 599, "an HTTP error status 400..599");
            }
            if (upstream.HealthCheckIntervalSecs is { } interval)
            {
                AtLeast(path + ".health_check_interval_secs", interval, 1);
            }

            if (upstream.HealthCheck is not null)
            {
                ValidateHealthCheck(upstream.HealthCheck, path + ".health_check");
            }

            if (upstream.CircuitBreaker is { } breaker)
            {
                var breakerPath = path + ".circuit_breaker";
                if (!(breaker.ErrorThreshold > 0 && breaker.ErrorThreshold <= 1))
                {
                    Error(breakerPath + ".error_threshold", $"error_threshold is an error rate in (0, 1], e.g. 0.1 for 10%; got {Format(breaker.ErrorThreshold)}");
                }

                AtLeast(breakerPath + ".timeout_seconds", breaker.TimeoutSeconds, 1);
                AtLeast(breakerPath + ".min_requests", breaker.MinRequests, 1);
                AtLeast(breakerPath + ".window_seconds", breaker.WindowSeconds, 1);
            }
        }

        return names;
    }

    private void ValidateUpstreamServer(UpstreamServerConfig server, string path)
    {
        if (string.IsNullOrWhiteSpace(server.Host))
        {
            Error(path + ".host", "server host is empty; give a host name or an IP address");
        }
        else if (server.Host.Contains("://", StringComparison.Ordinal))
        {
            Error(path + ".host", $"host '{server.Host}' must not include a scheme; write the host alone and set tls: true for https");
        }
        else if (server.Host.Any(char.IsWhiteSpace))
        {
            Error(path + ".host", $"host '{server.Host}' contains whitespace");
        }

        Port(path + ".port", server.Port);
        AtLeast(path + ".weight", server.Weight, 1);
    }

    private void ValidateHealthCheck(HealthCheckConfig check, string path)
    {
        OneOf(path + ".type", check.Type, HealthCheckTypes);
        AtLeast(path + ".interval_seconds", check.IntervalSeconds, 1);
        AtLeast(path + ".timeout_seconds", check.TimeoutSeconds, 1);
        AtLeast(path + ".healthy_threshold", check.HealthyThreshold, 1);
        AtLeast(path + ".unhealthy_threshold", check.UnhealthyThreshold, 1);
        AbsolutePath(path + ".path", check.Path);
        if (!IsToken(check.Method))
        {
            Error(path + ".method", $"'{check.Method}' is not an HTTP method");
        }

        for (var i = 0; i < check.ExpectedStatusCodes.Count; i++)
        {
            InRange($"{path}.expected_status_codes[{i}]", check.ExpectedStatusCodes[i], 100, 599, "an HTTP status 100..599");
        }
    }

    private void ValidateRoutes(IReadOnlyList<RouteConfig> routes, List<string> upstreamNames, AuthConfig auth)
    {
        var jwtMode = auth.Mode is null or "jwt";
        var hasJwtKey = !string.IsNullOrEmpty(auth.JwtSecret);
        for (var i = 0; i < routes.Count; i++)
        {
            var route = routes[i];
            var path = _map.PathOf(route, $"routes[{i}]");
            RoutePath(path + ".path", route.Path);
            if (route.StripPrefix is { } strip)
            {
                AbsolutePath(path + ".strip_prefix", strip);
            }

            for (var m = 0; m < route.Methods.Count; m++)
            {
                if (!IsToken(route.Methods[m]))
                {
                    Error($"{path}.methods[{m}]", $"'{route.Methods[m]}' is not an HTTP method");
                }
            }

            foreach (var header in route.Headers.Keys)
            {
                if (!IsToken(header))
                {
                    Error($"{path}.headers.{header}", $"'{header}' is not a valid header name");
                }
            }

            if (route.TimeoutMs is { } timeout)
            {
                AtLeast(path + ".timeout_ms", timeout, 1);
            }

            var hasUpstream = !string.IsNullOrEmpty(route.Upstream);
            if (hasUpstream && route.Respond is not null)
            {
                Error(path + ".respond", "a route has either upstream: (proxy) or respond: (answer directly), not both");
            }
            else if (!hasUpstream && route.Respond is null)
            {
                Error(path + ".upstream", $"route '{route.Path}' needs upstream: (one of: {Known(upstreamNames)}) or respond:");
            }
            else if (hasUpstream && !upstreamNames.Contains(route.Upstream!, StringComparer.Ordinal))
            {
                Error(path + ".upstream", $"unknown upstream '{route.Upstream}' (known: {Known(upstreamNames)})");
            }

            if (route.Respond is { } respond)
            {
                InRange(path + ".respond.status", respond.Status, 100, 599, "an HTTP status 100..599");
            }

            if (route.AuthRequired && jwtMode && !hasJwtKey)
            {
                Error(path + ".auth_required",
                    "auth_required routes need a way to check tokens: set auth.jwt_secret (HS256/384/512)");
            }
            else if (route.AuthRequired && auth.Mode == "none")
            {
                Warning(path + ".auth_required", "auth.mode is 'none', so auth_required has no effect on this route");
            }
        }
    }

    private void ValidateAuth(AuthConfig auth)
    {
        if (auth.Mode is not null)
        {
            OneOf("auth.mode", auth.Mode, AuthModes);
        }

        OneOf("auth.jwt_algorithm", auth.JwtAlgorithm, JwtAlgorithms);
        // Only shared-secret JWTs are checked at run time so far. Accepting a mode or key source that is never
        // used would leave auth_required routes answering 401 to every valid token, or worse, so say it now.
        if (auth.Mode is "session" or "mixed")
        {
            Error("auth.mode", $"auth.mode '{auth.Mode}' (session cookies) is not supported yet; use 'jwt' with auth.jwt_secret, or 'none'");
        }
        if (auth.JwtAlgorithm is "RS256" or "ES256")
        {
            Error("auth.jwt_algorithm", $"{auth.JwtAlgorithm} (keys from a JWKS URL) is not supported yet; use HS256, HS384 or HS512 with auth.jwt_secret");
        }
        if (auth.JwksUrl is not null)
        {
            AbsoluteUri("auth.jwks_url", auth.JwksUrl);
            Error("auth.jwks_url", "JWKS key sets are not supported yet; use auth.jwt_secret (HS256/384/512)");
        }
        if (auth.JwtSecret is { } secret && auth.JwtAlgorithm.StartsWith("HS", StringComparison.Ordinal))
        {
            var bits = System.Text.Encoding.UTF8.GetByteCount(secret) * 8;
            var needed = auth.JwtAlgorithm switch { "HS384" => 384, "HS512" => 512, _ => 256 };
            if (bits < needed)
            {
                Warning("auth.jwt_secret", $"the secret is {bits / 8} bytes; {auth.JwtAlgorithm} needs at least {needed / 8} (RFC 7518 section 3.2), so every token will be rejected");
            }
        }

        if (auth.OauthServiceUrl is not null)
        {
            AbsoluteUri("auth.oauth_service_url", auth.OauthServiceUrl);
        }

        if (auth.TokenValidationEndpoint is { } endpoint && !endpoint.StartsWith('/') && !Uri.IsWellFormedUriString(endpoint, UriKind.Absolute))
        {
            Error("auth.token_validation_endpoint", $"'{endpoint}' must be a path starting with '/' (relative to oauth_service_url) or an absolute URL");
        }

        if (!IsToken(auth.CookieName))
        {
            Error("auth.cookie_name", $"'{auth.CookieName}' is not a valid cookie name");
        }

        AtLeast("auth.token_expiry_seconds", auth.TokenExpirySeconds, 1);
    }

    private void ValidateCache(CacheConfig cache)
    {
        Size("cache.memory.max_size", cache.Memory.MaxSize);
        AtLeast("cache.memory.ttl_seconds", cache.Memory.TtlSeconds, 0);
        Size("cache.disk.max_size", cache.Disk.MaxSize);
        if (cache.Disk.Enabled && string.IsNullOrWhiteSpace(cache.Disk.Path))
        {
            Error("cache.disk.path", "the disk cache is enabled but has no path; add path: \"/var/cache/portico\"");
        }

        for (var i = 0; i < cache.Rules.Count; i++)
        {
            var rule = cache.Rules[i];
            var path = $"cache.rules[{i}]";
            if (string.IsNullOrEmpty(rule.PathRegex))
            {
                Error(path + ".path_regex", "every cache rule needs a path_regex");
            }
            else
            {
                try
                {
                    _ = new Regex(rule.PathRegex, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
                }
                catch (ArgumentException e)
                {
                    Error(path + ".path_regex", $"invalid regular expression: {e.Message}");
                }
            }

            AtLeast(path + ".ttl_seconds", rule.TtlSeconds, 0);
        }
    }

    private void ValidateLogging(LoggingConfig logging)
    {
        OneOf("logging.level", logging.Level, LogLevels);
        OneOf("logging.format", logging.Format, LogFormats);
        Fraction("logging.sample_rate", logging.SampleRate);
        if (logging.SamplingRate is { } rate)
        {
            Fraction("logging.sampling_rate", rate);
        }

        if (logging.OtlpEndpoint is { } otlp)
        {
            AbsoluteUri("logging.otlp_endpoint", otlp);
        }
    }

    // ---- value checks ----

    private void Port(string path, int port)
    {
        if (port is < 1 or > 65535)
        {
            Error(path, $"port {port} is out of range; use 1..65535");
        }
    }

    private void AtLeast(string path, long value, long minimum)
    {
        if (value < minimum)
        {
            var key = path[(path.LastIndexOf('.') + 1)..];
            Error(path, minimum == 1 ? $"{key} must be at least 1, got {value}" : $"{key} must be {minimum} or more, got {value}");
        }
    }

    private void InRange(string path, int value, int minimum, int maximum, string what)
    {
        if (value < minimum || value > maximum)
        {
            Error(path, $"{value} is out of range; expected {what}");
        }
    }

    private void Fraction(string path, double value)
    {
        if (!(value >= 0 && value <= 1))
        {
            Error(path, $"{Format(value)} is not a fraction in [0, 1] (0.01 means 1%)");
        }
    }

    private void OneOf(string path, string value, string[] allowed)
    {
        if (allowed.Contains(value, StringComparer.Ordinal))
        {
            return;
        }

        var key = path[(path.LastIndexOf('.') + 1)..];
        var nearest = ConfigLoader.Nearest(value, allowed);
        var hint = nearest is null ? "" : $"; did you mean '{nearest}'?";
        Error(path, $"unknown {key} '{value}'{hint} (one of: {string.Join(", ", allowed)})");
    }

    private void AbsolutePath(string path, string value)
    {
        if (!value.StartsWith('/'))
        {
            Error(path, $"'{value}' must start with '/'");
        }
    }

    private void AbsoluteUri(string path, string value)
    {
        if (!Uri.TryCreate(value, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            Error(path, $"'{value}' is not an absolute http:// or https:// URL");
        }
    }

    private void RoutePath(string path, string value)
    {
        if (!value.StartsWith('/'))
        {
            Error(path, $"route path '{value}' must start with '/'");
            return;
        }

        if (value.IndexOfAny(['?', '#']) >= 0)
        {
            Error(path, $"route path '{value}' must not contain a query or fragment");
            return;
        }

        foreach (var segment in value.Split('/'))
        {
            if (segment.Contains('*', StringComparison.Ordinal) && segment != "*")
            {
                Error(path, $"in route path '{value}', '*' must be a whole segment, as in /api/* or /a/*/b; '{segment}' is not");
                return;
            }
        }
    }

    private void MetricPrefix(string path, string value)
    {
        var valid = value.Length > 0 && (char.IsAsciiLetter(value[0]) || value[0] is '_' or ':')
            && value.All(static c => char.IsAsciiLetterOrDigit(c) || c is '_' or ':');
        if (!valid)
        {
            Error(path, $"'{value}' is not a valid Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)");
        }
    }

    private void Size(string path, string value)
    {
        if (!ByteSize.TryParse(value, out _))
        {
            Error(path, $"'{value}' is not a size; write bytes or a number with a unit, e.g. \"512MB\", \"1GB\", \"64KiB\"");
        }
    }

    private void ListenHost(string path, string value)
    {
        if (!IsListenHost(value))
        {
            Error(path, $"'{value}' is not an address to listen on; use an IP address, \"0.0.0.0\", \"[::]\", \"*\" or \"localhost\"");
        }
    }

    /// <summary>Checks a listen "host:port"; returns the port when it parsed.</summary>
    private int? ListenHostPort(string path, string value)
    {
        if (!TrySplitHostPort(value, out var host, out var port, out var problem))
        {
            Error(path, $"'{value}' is not host:port ({problem}); e.g. \"0.0.0.0:8080\" or \"[::]:8080\"");
            return null;
        }

        if (!IsListenHost(host))
        {
            Error(path, $"'{host}' in '{value}' is not an address to listen on; use an IP address, \"0.0.0.0\", \"[::]\", \"*\" or \"localhost\"");
        }

        Port(path, port);
        return port;
    }

    private void IpOrCidrList(string path, IReadOnlyList<string> entries)
    {
        for (var i = 0; i < entries.Count; i++)
        {
            var entry = entries[i].Trim();
            var itemPath = $"{path}[{i}]";
            var slash = entry.IndexOf('/');
            if (slash < 0)
            {
                if (!TryParseIp(entry, out _))
                {
                    Error(itemPath, $"'{entries[i]}' is not an IP address or CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32)");
                }

                continue;
            }

            if (!TryParseIp(entry[..slash], out var address) || !IPNetwork.TryParse(entry, out var network))
            {
                Error(itemPath, $"'{entries[i]}' is not an IP address or CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32)");
                continue;
            }

            if (!network.BaseAddress.Equals(address))
            {
                Warning(itemPath, $"'{entries[i]}' has host bits set; it is read as {network}");
            }
        }
    }

    private void FileWarning(string path, string? file, string what)
    {
        if (string.IsNullOrWhiteSpace(file))
        {
            return;
        }

        if (File.Exists(file) || (_baseDirectory is not null && !Path.IsPathRooted(file) && File.Exists(Path.Combine(_baseDirectory, file))))
        {
            return;
        }

        Warning(path, $"{what} file '{file}' was not found; TLS will fail to start unless it exists when the gateway runs");
    }

    // ---- shared parsers ----

    /// <summary>
    /// Splits <c>"host:port"</c>; IPv6 hosts are bracketed (<c>"[::1]:8080"</c>) and returned without brackets.
    /// The port is parsed but not range-checked (callers report the range at their own path).
    /// </summary>
    internal static bool TrySplitHostPort(string value, out string host, out int port, out string? problem)
    {
        host = "";
        port = 0;
        problem = null;
        var text = value.Trim();
        string portText;
        if (text.StartsWith('['))
        {
            var close = text.IndexOf(']');
            if (close < 0)
            {
                problem = "unclosed '[' around the IPv6 address";
                return false;
            }

            host = text[1..close];
            var rest = text[(close + 1)..];
            if (rest.Length == 0)
            {
                problem = "no port";
                return false;
            }

            if (rest[0] != ':')
            {
                problem = "expected ':' and a port after ']'";
                return false;
            }

            portText = rest[1..];
        }
        else
        {
            var colon = text.IndexOf(':');
            if (colon < 0)
            {
                problem = "no port";
                return false;
            }

            if (text.IndexOf(':', colon + 1) >= 0)
            {
                problem = "an IPv6 address must be in brackets, as in [::1]:8080";
                return false;
            }

            host = text[..colon];
            portText = text[(colon + 1)..];
        }

        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out port))
        {
            problem = portText.Length == 0 ? "no port" : $"'{portText}' is not a port number";
            return false;
        }

        return true;
    }

    /// <summary>
    /// Parses an IP address strictly: IPv4 only as four dotted decimals (<see cref="IPAddress.TryParse(string, out IPAddress)"/>
    /// alone would read "10.1" as 10.0.0.1, hiding a typo in an allow list); IPv6 in any standard form.
    /// </summary>
    internal static bool TryParseIp(string value, out IPAddress address)
    {
        address = IPAddress.None;
        if (value.Contains(':', StringComparison.Ordinal))
        {
            return IPAddress.TryParse(value, out address!) && address.AddressFamily == AddressFamily.InterNetworkV6;
        }

        var parts = value.Split('.');
        if (parts.Length != 4)
        {
            return false;
        }

        foreach (var part in parts)
        {
            if (part.Length is 0 or > 3 || !part.All(char.IsAsciiDigit) || int.Parse(part, CultureInfo.InvariantCulture) > 255)
            {
                return false;
            }
        }

        return IPAddress.TryParse(value, out address!);
    }

    private static bool IsListenHost(string value) =>
        value is "localhost" or "*" or "0.0.0.0" or "[::]"
        || TryParseIp(value, out _)
        || (value.Length > 2 && value[0] == '[' && value[^1] == ']' && TryParseIp(value[1..^1], out var v6) && v6.AddressFamily == AddressFamily.InterNetworkV6);

    /// <summary>An RFC 9110 token (method, header name, cookie name): one or more tchar.</summary>
    internal static bool IsToken(string value)
    {
        if (value.Length == 0)
        {
            return false;
        }

        foreach (var c in value)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal)))
            {
                return false;
            }
        }

        return true;
    }

    private static string Known(List<string> names) => names.Count == 0 ? "none defined" : string.Join(", ", names);

    private static string Format(double value) => value.ToString(CultureInfo.InvariantCulture);

    private void Error(string path, string message)
    {
        var (line, column) = _map.Locate(path);
        _errors.Add(new ConfigError(path, line, column, message));
    }

    private void Warning(string path, string message)
    {
        var (line, column) = _map.Locate(path);
        _warnings.Add(new ConfigError(path, line, column, message));
    }
}
