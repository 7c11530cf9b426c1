namespace Portico.Config;

// The YAML model. Every record is bound by ConfigLoader: a property `FooBar` is the YAML key `foo_bar`
// (or the names in [YamlKey]). Defaults live here and only here. Keys that the seeds use for features of later
// issues are parsed and validated now, so a seed file loads as written and a typo is still an error.

/// <summary>The whole gateway configuration: one immutable snapshot, loaded from YAML.</summary>
public sealed record GatewayConfig
{
    public ServerConfig Server { get; init; } = new();
    public AdminConfig Admin { get; init; } = new();
    public PerformanceConfig Performance { get; init; } = new();
    public MonitoringConfig Monitoring { get; init; } = new();
    /// <summary>Seed 001's `metrics:` block (bind_address + path); merged with `monitoring.prometheus`.</summary>
    public MetricsConfig? Metrics { get; init; }
    public SecurityConfig Security { get; init; } = new();
    public TlsConfig Tls { get; init; } = new();
    /// <summary>Upstream groups. YAML accepts the seed 000 list form and the seed 001 map form.</summary>
    public IReadOnlyList<UpstreamConfig> Upstreams { get; init; } = [];
    public IReadOnlyList<RouteConfig> Routes { get; init; } = [];
    /// <summary>Seed 001's top-level health check: the default for every upstream without its own.</summary>
    public HealthCheckConfig? HealthCheck { get; init; }
    public AuthConfig Auth { get; init; } = new();
    public CacheConfig Cache { get; init; } = new();
    public LoggingConfig Logging { get; init; } = new();
}

public sealed record ServerConfig
{
    /// <summary>Seed 000: the address of the main HTTP listener. Defaults to 0.0.0.0.</summary>
    public string ListenAddress { get; init; } = "0.0.0.0";
    /// <summary>Seed 000: the port of the main HTTP listener. Defaults to 8080.</summary>
    public int ListenPort { get; init; } = 8080;
    /// <summary>Seed 001: "host:port" of the main HTTP listener; wins over listen_address/listen_port.</summary>
    public string? BindAddress { get; init; }
    /// <summary>Extra listeners beyond the main one.</summary>
    public IReadOnlyList<ListenerConfig> Listeners { get; init; } = [];
    /// <summary>Accepted for seed compatibility; .NET sizes its thread pool itself. 0 = automatic.</summary>
    public int WorkerThreads { get; init; }
    public bool GracefulShutdown { get; init; } = true;
    /// <summary>How long SIGTERM waits for in-flight requests. Defaults to 30 s.</summary>
    public int GracefulTimeoutSeconds { get; init; } = 30;
    /// <summary>The zone this node runs in; servers in the same zone are preferred.</summary>
    public string? Zone { get; init; }
    /// <summary>Reload when the config file changes (SIGHUP always reloads).</summary>
    public bool WatchConfig { get; init; }
    /// <summary>Maximum size of the request line plus headers. Defaults to 32 KiB (Kestrel's default).</summary>
    public int MaxRequestHeadersBytes { get; init; } = 32 * 1024;
    /// <summary>Maximum request body size in bytes; 0 = unlimited (the body is streamed, never buffered).</summary>
    public long MaxRequestBodyBytes { get; init; }
    /// <summary>Time allowed for a client to send the request headers. Defaults to 30 s.</summary>
    public int RequestHeadersTimeoutSeconds { get; init; } = 30;
    /// <summary>Keep-alive idle timeout of a downstream connection. Defaults to 75 s, as nginx keepalive_timeout.</summary>
    public int IdleTimeoutSeconds { get; init; } = 75;
    /// <summary>Global cap on open downstream connections; 0 = unlimited.</summary>
    public int MaxConnections { get; init; }
    /// <summary>
    /// Unix socket through which a new process (`portico --upgrade`, or SIGUSR2) takes over the listening sockets.
    /// Default: $RUNTIME_DIRECTORY or /tmp, "portico-PORT.sock" (PORT = the main listener's). "off" disables it.
    /// </summary>
    public string? UpgradeSocket { get; init; }
}

/// <summary>One extra listener: `address: "127.0.0.1:8081"`, optionally `tls: true` (uses the tls: certificate).</summary>
public sealed record ListenerConfig
{
    public string? Name { get; init; }
    public string Address { get; init; } = "";
    public bool Tls { get; init; }
}

public sealed record AdminConfig
{
    public bool Enabled { get; init; } = true;
    /// <summary>Defaults to loopback: the admin plane is not for the internet.</summary>
    public string ListenAddress { get; init; } = "127.0.0.1";
    public int ListenPort { get; init; } = 9080;
    /// <summary>Bearer token for the admin API; also read from PORTICO_ADMIN_TOKEN.</summary>
    public string? Token { get; init; }
}

public sealed record PerformanceConfig
{
    public bool ZeroCopyEnabled { get; init; } = true;
    public bool MemoryPoolEnabled { get; init; } = true;
    /// <summary>Maximum pooled connections per upstream server. Defaults to 1000.</summary>
    public int ConnectionPoolSize { get; init; } = 1000;
    public bool CompressionEnabled { get; init; }
    public int CompressionLevel { get; init; } = 6;
}

public sealed record MonitoringConfig
{
    public PrometheusConfig Prometheus { get; init; } = new();
    public TracingConfig Tracing { get; init; } = new();
}

public sealed record PrometheusConfig
{
    public bool Enabled { get; init; }
    public string ListenAddress { get; init; } = "0.0.0.0";
    public int ListenPort { get; init; } = 9090;
    public string MetricsPath { get; init; } = "/metrics";
    /// <summary>Metric name prefix; `pingora` keeps the seed's dashboards and alerts working.</summary>
    public string Prefix { get; init; } = "pingora";
}

public sealed record TracingConfig
{
    /// <summary>Trace requests and export the spans over OTLP. Read at start-up: changing it needs a restart.</summary>
    public bool Enabled { get; init; }
    /// <summary>
    /// Fraction of requests without a sampled parent that are traced, 0..1 (a client's sampled traceparent is always
    /// honoured). Seed: 0.01. Applies on reload.
    /// </summary>
    public double SamplingRate { get; init; } = 0.01;
    /// <summary>
    /// The OTLP collector: a base URL such as http://127.0.0.1:4318 (/v1/traces is appended for http/protobuf, as
    /// the OpenTelemetry SDK does for OTEL_EXPORTER_OTLP_ENDPOINT). Null: logging.otlp_endpoint, else the SDK's
    /// default (OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4318). Read at start-up.
    /// </summary>
    public string? OtlpEndpoint { get; init; }
    /// <summary>http/protobuf | grpc. Null: grpc when the endpoint's port is 4317, else http/protobuf.</summary>
    public string? Protocol { get; init; }
}

/// <summary>Seed 001's metrics block.</summary>
public sealed record MetricsConfig
{
    public bool Enabled { get; init; } = true;
    public string BindAddress { get; init; } = "0.0.0.0:9090";
    public string Path { get; init; } = "/metrics";
    public string? Prefix { get; init; }
}

public sealed record SecurityConfig
{
    public RateLimitConfig RateLimit { get; init; } = new();
    public DdosProtectionConfig DdosProtection { get; init; } = new();
    public AccessControlConfig AccessControl { get; init; } = new();
    public SecurityHeadersConfig Headers { get; init; } = new();
    /// <summary>CIDRs of proxies whose X-Forwarded-For is believed.</summary>
    public IReadOnlyList<string> TrustedProxies { get; init; } = [];
}

public sealed record RateLimitConfig
{
    public bool Enabled { get; init; }
    public double RequestsPerSecond { get; init; } = 1000;
    public int BurstSize { get; init; } = 2000;
    /// <summary>client_ip | header | route (seed also names custom).</summary>
    public string KeyExtraction { get; init; } = "client_ip";
    /// <summary>The header used when key_extraction is header.</summary>
    public string? Header { get; init; }
    public string? RedisUrl { get; init; }
}

public sealed record DdosProtectionConfig
{
    public bool Enabled { get; init; }
    public int MaxConnectionsPerIp { get; init; } = 100;
}

public sealed record AccessControlConfig
{
    public IReadOnlyList<string> IpWhitelist { get; init; } = [];
    public IReadOnlyList<string> IpBlacklist { get; init; } = [];
    public GeoBlockingConfig GeoBlocking { get; init; } = new();
}

public sealed record GeoBlockingConfig
{
    public bool Enabled { get; init; }
    public IReadOnlyList<string> AllowedCountries { get; init; } = [];
    public string? DatabasePath { get; init; }
}

public sealed record SecurityHeadersConfig
{
    public bool EnableDefaultHeaders { get; init; }
    public IReadOnlyDictionary<string, string> CustomHeaders { get; init; } = new Dictionary<string, string>();
}

public sealed record TlsConfig
{
    public bool Enabled { get; init; }
    public string? CertPath { get; init; }
    public string? KeyPath { get; init; }
    /// <summary>Port of the HTTPS listener. Defaults to 8443.</summary>
    public int ListenPort { get; init; } = 8443;
    public string? ListenAddress { get; init; }
    public bool Http2Enabled { get; init; } = true;
    public bool Http3Enabled { get; init; }
    public bool OcspStapling { get; init; }
    public bool HstsEnabled { get; init; }
    public int HstsMaxAge { get; init; } = 31536000;
    public AcmeConfig Acme { get; init; } = new();
}

public sealed record AcmeConfig
{
    public bool Enabled { get; init; }
    public string DirectoryUrl { get; init; } = "https://acme-v02.api.letsencrypt.org/directory";
    public string? Email { get; init; }
    public IReadOnlyList<string> Domains { get; init; } = [];
}

public sealed record UpstreamConfig
{
    public string Name { get; init; } = "";
    public IReadOnlyList<UpstreamServerConfig> Servers { get; init; } = [];
    /// <summary>round_robin | weighted_round_robin | least_connections | ip_hash | random.</summary>
    public string LoadBalanceStrategy { get; init; } = "round_robin";
    /// <summary>http | h2c | grpc. grpc speaks HTTP/2 (over TLS when a server has tls: true).</summary>
    public string Protocol { get; init; } = "http";
    /// <summary>Defaults to 5000 ms.</summary>
    public int ConnectTimeoutMs { get; init; } = 5000;
    /// <summary>Time to wait for the upstream's response headers and between body reads. Defaults to 60 s, as nginx proxy_read_timeout.</summary>
    public int ReadTimeoutMs { get; init; } = 60000;
    public int MaxRetries { get; init; } = 1;
    /// <summary>
    /// Upstream statuses that count as a failed attempt to retry on another server (e.g. [502, 503, 504]), for
    /// idempotent requests (or a route marked idempotent) whose body was not streamed. Empty = never (the default).
    /// </summary>
    public IReadOnlyList<int> RetryOnStatus { get; init; } = [];
    public HealthCheckConfig? HealthCheck { get; init; }
    public CircuitBreakerConfig? CircuitBreaker { get; init; }
    /// <summary>Seed 002: health check interval shorthand.</summary>
    public int? HealthCheckIntervalSecs { get; init; }
}

/// <summary>One server; YAML accepts the object form or the string "host:port".</summary>
public sealed record UpstreamServerConfig
{
    public string Host { get; init; } = "";
    public int Port { get; init; }
    public int Weight { get; init; } = 1;
    public bool Tls { get; init; }
    /// <summary>Verify the upstream's certificate (only with tls: true). Defaults to true.</summary>
    public bool TlsVerify { get; init; } = true;
    /// <summary>TLS server name; defaults to host.</summary>
    public string? Sni { get; init; }
    public string? Zone { get; init; }
    public bool Backup { get; init; }
}

public sealed record HealthCheckConfig
{
    public bool Enabled { get; init; } = true;
    /// <summary>http | tcp.</summary>
    public string Type { get; init; } = "http";
    public int IntervalSeconds { get; init; } = 10;
    public int TimeoutSeconds { get; init; } = 5;
    public int HealthyThreshold { get; init; } = 2;
    public int UnhealthyThreshold { get; init; } = 3;
    public string Path { get; init; } = "/health";
    public IReadOnlyList<int> ExpectedStatusCodes { get; init; } = [200];
    public string Method { get; init; } = "GET";
    public bool UseHttps { get; init; }
}

public sealed record CircuitBreakerConfig
{
    public bool Enabled { get; init; } = true;
    /// <summary>Error rate (0..1) in the window that opens the breaker. Seed: 0.1.</summary>
    public double ErrorThreshold { get; init; } = 0.5;
    /// <summary>How long the breaker stays open before half-open probes. Seed: 60.</summary>
    public int TimeoutSeconds { get; init; } = 30;
    public int MinRequests { get; init; } = 20;
    public int WindowSeconds { get; init; } = 10;
}

public sealed record RouteConfig
{
    public string? Name { get; init; }
    /// <summary>Path prefix or glob: "/oauth/*", "/*", "/api/v1".</summary>
    public string Path { get; init; } = "/";
    /// <summary>Host header to match (exact, or "*.example.com").</summary>
    public string? Host { get; init; }
    /// <summary>HTTP methods to match; empty = any.</summary>
    public IReadOnlyList<string> Methods { get; init; } = [];
    /// <summary>Request headers that must be present with these values.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();
    public string? Upstream { get; init; }
    public bool AuthRequired { get; init; }
    /// <summary>Remove this prefix from the path before forwarding.</summary>
    public string? StripPrefix { get; init; }
    /// <summary>Answer directly instead of proxying (like Caddy respond / nginx return).</summary>
    public RespondConfig? Respond { get; init; }
    /// <summary>Overrides the upstream's read_timeout_ms for this route.</summary>
    public int? TimeoutMs { get; init; }
    /// <summary>
    /// Requests on this route may be retried whatever their method (e.g. a POST search endpoint). Without it only
    /// GET, HEAD, OPTIONS, TRACE, PUT and DELETE are retried after a reset or a retry_on_status answer.
    /// </summary>
    public bool Idempotent { get; init; }
}

public sealed record RespondConfig
{
    public int Status { get; init; } = 200;
    public string Body { get; init; } = "";
    public string ContentType { get; init; } = "text/plain; charset=utf-8";
}

public sealed record AuthConfig
{
    /// <summary>none | jwt | session | mixed. Defaults to jwt when jwt_secret is set.</summary>
    public string? Mode { get; init; }
    public string? JwtSecret { get; init; }
    public string JwtAlgorithm { get; init; } = "HS256";
    public string? JwksUrl { get; init; }
    public string? Issuer { get; init; }
    public string? Audience { get; init; }
    public string? OauthServiceUrl { get; init; }
    public string? TokenValidationEndpoint { get; init; }
    public string CookieName { get; init; } = "portico_session";
    public bool CookieSecure { get; init; } = true;
    public bool CookieHttpOnly { get; init; } = true;
    public string? SessionRedisUrl { get; init; }
    public int TokenExpirySeconds { get; init; } = 3600;
}

public sealed record CacheConfig
{
    public bool Enabled { get; init; }
    public MemoryCacheConfig Memory { get; init; } = new();
    public DiskCacheConfig Disk { get; init; } = new();
    public IReadOnlyList<CacheRuleConfig> Rules { get; init; } = [];
}

public sealed record MemoryCacheConfig
{
    /// <summary>A size: "1GB", "512MB", "64KB" or bytes.</summary>
    public string MaxSize { get; init; } = "256MB";
    public int TtlSeconds { get; init; } = 300;
}

public sealed record DiskCacheConfig
{
    public bool Enabled { get; init; }
    public string? Path { get; init; }
    public string MaxSize { get; init; } = "10GB";
}

public sealed record CacheRuleConfig
{
    public string PathRegex { get; init; } = "";
    public int TtlSeconds { get; init; } = 300;
    public string? CacheControl { get; init; }
}

public sealed record LoggingConfig
{
    /// <summary>trace | debug | info | warn | error | critical | none. PORTICO_LOG overrides.</summary>
    public string Level { get; init; } = "info";
    /// <summary>json | text.</summary>
    public string Format { get; init; } = "text";
    /// <summary>
    /// Fraction of requests written to the access log, 0..1 (failed, 5xx and slow requests always). Defaults to
    /// 0.01, the seed's "1% sampling".
    /// </summary>
    public double SampleRate { get; init; } = 0.01;
    /// <summary>Alias of sample_rate (seed 000 says sampling_rate).</summary>
    public double? SamplingRate { get; init; }
    /// <summary>Seed 002's OTLP endpoint: where traces go when monitoring.tracing.otlp_endpoint is not set.</summary>
    public string? OtlpEndpoint { get; init; }
    public bool AccessLog { get; init; } = true;
}
