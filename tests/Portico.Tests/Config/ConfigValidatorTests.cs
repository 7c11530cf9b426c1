using Portico.Config;
using static Portico.Tests.Config.ConfigTestHelpers;

namespace Portico.Tests.Config;

/// <summary>Every semantic rule rejects a bad value at the right YAML path and line.</summary>
public sealed class ConfigValidatorTests
{
    /// <summary>Two valid upstreams (and no routes), so each test adds only the section it is about.</summary>
    private const string Base = """
        upstreams:
          - name: a
            servers: ["10.0.0.1:80"]
          - name: b
            servers: ["10.0.0.2:80"]

        """;

    private static ConfigLoadResult LoadWithBase(string yaml) => Load(Base + yaml);

    private static int Line(string yaml, string marker) => LineOf(Base + yaml, marker);

    [Fact]
    public void Validate_Base_IsValid()
    {
        AssertValid(Load(Base));
    }

    // ---- server, admin, listeners ----

    [Theory]
    [InlineData("0")]
    [InlineData("65536")]
    [InlineData("-1")]
    public void Validate_ListenPortOutOfRange_ReportsPort(string port)
    {
        var yaml = $"server:\n  listen_port: {port}\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "server.listen_port", Line(yaml, "listen_port"), "out of range; use 1..65535");
    }

    [Theory]
    [InlineData("example.com")]
    [InlineData("10.0.1")]
    [InlineData("300.1.1.1")]
    public void Validate_ListenAddressNotAnIp_ReportsAddress(string address)
    {
        var yaml = $"server:\n  listen_address: \"{address}\"\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "server.listen_address", Line(yaml, "listen_address"), "not an address to listen on");
    }

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("*")]
    [InlineData("localhost")]
    [InlineData("[::]")]
    [InlineData("::1")]
    [InlineData("[::1]")]
    [InlineData("192.168.1.10")]
    public void Validate_ListenAddressForms_AreAccepted(string address)
    {
        AssertValid(LoadWithBase($"server:\n  listen_address: \"{address}\"\n"));
    }

    [Theory]
    [InlineData("0.0.0.0", "no port")]
    [InlineData("0.0.0.0:0", "out of range")]
    [InlineData("example.com:80", "not an address to listen on")]
    [InlineData("::1:80", "brackets")]
    public void Validate_BindAddressNotHostPort_ReportsBindAddress(string address, string problem)
    {
        var yaml = $"server:\n  bind_address: \"{address}\"\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "server.bind_address", Line(yaml, "bind_address"), problem);
    }

    [Fact]
    public void Validate_BindAddressIpv6_IsAccepted()
    {
        AssertValid(LoadWithBase("server:\n  bind_address: \"[::]:6188\"\n"));
    }

    [Fact]
    public void Validate_ListenerAddressInvalid_ReportsListenerPath()
    {
        const string Yaml = """
            server:
              listeners:
                - address: "127.0.0.1:8081"
                - address: "127.0.0.1"
                  tls: true
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "server.listeners[1].address", Line(Yaml, "\"127.0.0.1\""), "no port");
    }

    [Fact]
    public void Validate_NegativeGracefulTimeout_ReportsIt()
    {
        var yaml = "server:\n  graceful_timeout_seconds: -1\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "server.graceful_timeout_seconds", Line(yaml, "graceful_timeout_seconds"), "0 or more");
    }

    [Fact]
    public void Validate_GracefulTimeoutZero_IsAccepted()
    {
        AssertValid(LoadWithBase("server:\n  graceful_timeout_seconds: 0\n"));
    }

    [Fact]
    public void Validate_AdminPortOutOfRange_ReportsIt()
    {
        var yaml = "admin:\n  listen_address: 127.0.0.1\n  listen_port: 70000\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "admin.listen_port", Line(yaml, "listen_port"));
    }

    [Fact]
    public void Validate_WorkerThreadsSet_Warns()
    {
        var yaml = "server:\n  worker_threads: 4\n";

        var result = LoadWithBase(yaml);

        Assert.True(result.IsValid);
        AssertWarning(result, "server.worker_threads", Line(yaml, "worker_threads"), "thread pool");
    }

    // ---- performance, monitoring, metrics ----

    [Theory]
    [InlineData(0)]
    [InlineData(12)]
    public void Validate_CompressionLevelOutOfRange_ReportsIt(int level)
    {
        var yaml = $"performance:\n  compression_level: {level}\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "performance.compression_level", Line(yaml, "compression_level"));
    }

    [Fact]
    public void Validate_ZeroCopyAndMemoryPoolKeys_Warn()
    {
        var yaml = "performance:\n  zero_copy_enabled: true\n  memory_pool_enabled: false\n";

        var result = LoadWithBase(yaml);

        Assert.True(result.IsValid);
        AssertWarning(result, "performance.zero_copy_enabled", Line(yaml, "zero_copy"), "no effect");
        AssertWarning(result, "performance.memory_pool_enabled", Line(yaml, "memory_pool"), "no effect");
    }

    [Fact]
    public void Validate_TracingSamplingRateOutOfRange_ReportsIt()
    {
        var yaml = "monitoring:\n  tracing:\n    sampling_rate: 1.5\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "monitoring.tracing.sampling_rate", Line(yaml, "sampling_rate"), "[0, 1]");
    }

    [Fact]
    public void Validate_TracingProtocolAndEndpoint_AreChecked()
    {
        const string Yaml = """
            monitoring:
              tracing:
                enabled: true
                otlp_endpoint: "127.0.0.1:4318"
                protocol: http/json
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "monitoring.tracing.otlp_endpoint", Line(Yaml, "otlp_endpoint"), "absolute http");
        AssertError(result, "monitoring.tracing.protocol", Line(Yaml, "protocol"), "one of: http/protobuf, grpc");
    }

    [Theory]
    [InlineData("grpc")]
    [InlineData("http/protobuf")]
    public void Validate_TracingProtocols_AreAccepted(string protocol)
    {
        AssertValid(LoadWithBase($"monitoring:\n  tracing:\n    otlp_endpoint: \"http://collector:4317\"\n    protocol: {protocol}\n"));
    }

    [Fact]
    public void Validate_PrometheusPortAndPath_AreChecked()
    {
        const string Yaml = """
            monitoring:
              prometheus:
                listen_port: 0
                metrics_path: metrics
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "monitoring.prometheus.listen_port", Line(Yaml, "listen_port"));
        AssertError(result, "monitoring.prometheus.metrics_path", Line(Yaml, "metrics_path"), "must start with '/'");
    }

    [Fact]
    public void Validate_MetricsBindAddressInvalid_ReportsIt()
    {
        var yaml = "metrics:\n  bind_address: \"0.0.0.0\"\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "metrics.bind_address", Line(yaml, "bind_address"), "no port");
    }

    [Fact]
    public void Validate_PrometheusAndMetricsOnDifferentPorts_Warns()
    {
        const string Yaml = """
            monitoring:
              prometheus:
                enabled: true
                listen_port: 9090
            metrics:
              bind_address: "0.0.0.0:9100"
            """;

        var result = LoadWithBase(Yaml);

        Assert.True(result.IsValid, result.ToString());
        AssertWarning(result, "metrics.bind_address", Line(Yaml, "bind_address"), "keep one of them");
    }

    [Fact]
    public void Validate_PrometheusAndMetricsOnSamePort_DoNotWarn()
    {
        var result = LoadWithBase("monitoring:\n  prometheus:\n    enabled: true\nmetrics:\n  bind_address: \"0.0.0.0:9090\"\n");

        Assert.Empty(result.Warnings);
    }

    // ---- upstreams ----

    [Fact]
    public void Validate_UpstreamWithoutName_ReportsItemLine()
    {
        const string Yaml = """
            upstreams:
              - servers: ["10.0.0.1:80"]
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].name", 2, "needs a name");
    }

    [Fact]
    public void Validate_DuplicateUpstreamNames_ReportsSecond()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
              - name: a
                servers: ["10.0.0.2:80"]
            """;

        var result = Load(Yaml);

        var error = AssertError(result, "upstreams[1].name", 4, "used twice");
        Assert.Single(result.Errors);
        Assert.Equal(11, error.Column);
    }

    [Fact]
    public void Validate_RetryOnStatusNotAnErrorStatus_ReportsTheEntry()
    {
        const string Yaml = """
            upstreams:
              - name: a
                retry_on_status: [503, 200]
                servers: ["10.0.0.1:80"]
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].retry_on_status[1]", 3, "expected an HTTP error status 400..599");
        Assert.Single(result.Errors);
    }

    [Fact]
    public void Validate_UpstreamWithoutServers_ReportsServers()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: []
              - name: b
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].servers", 3, "has no servers");
        AssertError(result, "upstreams[1].servers", 4, "has no servers");
    }

    [Fact]
    public void Validate_MapFormUpstreamWithoutServers_ReportsByName()
    {
        const string Yaml = """
            upstreams:
              users:
                load_balance_strategy: random
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams.users.servers", 2, "has no servers");
    }

    [Fact]
    public void Validate_ServerFields_AreChecked()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers:
                  - host: ""
                    port: 80
                  - host: 10.0.0.1
                    port: 65536
                  - host: 10.0.0.2
                    port: 80
                    weight: 0
                  - host: "https://10.0.0.3"
                    port: 443
                    weight: -1
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].servers[0].host", 4, "host is empty");
        AssertError(result, "upstreams[0].servers[1].port", 7, "out of range");
        AssertError(result, "upstreams[0].servers[2].weight", 10, "at least 1");
        AssertError(result, "upstreams[0].servers[3].host", 11, "scheme");
        AssertError(result, "upstreams[0].servers[3].weight", 13, "at least 1");
        Assert.Equal(5, result.Errors.Count);
    }

    [Fact]
    public void Validate_MapFormServerPortOutOfRange_ReportsByName()
    {
        const string Yaml = """
            upstreams:
              users:
                servers:
                  - "10.0.0.1:80"
                  - "10.0.0.2:99999"
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams.users.servers[1].port", 5, "out of range");
    }

    [Fact]
    public void Validate_UnknownStrategy_SuggestsNearest()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                load_balance_strategy: least_conn
            """;

        var result = Load(Yaml);

        var error = AssertError(result, "upstreams[0].load_balance_strategy", 4, "unknown load_balance_strategy 'least_conn'");
        Assert.Contains("one of: round_robin, weighted_round_robin, least_connections, ip_hash, random", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_StrategyTypo_SuggestsNearest()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                load_balance_strategy: ip-hash
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].load_balance_strategy", 4, "did you mean 'ip_hash'?");
    }

    [Theory]
    [InlineData("round_robin")]
    [InlineData("weighted_round_robin")]
    [InlineData("least_connections")]
    [InlineData("ip_hash")]
    [InlineData("random")]
    public void Validate_KnownStrategies_AreAccepted(string strategy)
    {
        AssertValid(Load($"upstreams:\n  - name: a\n    servers: [\"h:1\"]\n    load_balance_strategy: {strategy}\n"));
    }

    [Fact]
    public void Validate_UnknownProtocol_ReportsIt()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                protocol: h3
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].protocol", 4, "one of: http, h2c, grpc");
    }

    [Fact]
    public void Validate_NonPositiveTimeouts_ReportThem()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                connect_timeout_ms: 0
                read_timeout_ms: -5
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].connect_timeout_ms", 4, "at least 1");
        AssertError(result, "upstreams[0].read_timeout_ms", 5, "at least 1");
    }

    // ---- health checks and circuit breakers ----

    [Fact]
    public void Validate_UpstreamHealthCheck_ReportsEveryBadField()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                health_check:
                  type: udp
                  interval_seconds: 0
                  timeout_seconds: -1
                  healthy_threshold: 0
                  unhealthy_threshold: 0
                  path: health
                  expected_status_codes: [200, 99, 600]
                  method: "GE T"
            """;

        var result = Load(Yaml);

        const string P = "upstreams[0].health_check";
        AssertError(result, P + ".type", 5, "one of: http, tcp");
        AssertError(result, P + ".interval_seconds", 6);
        AssertError(result, P + ".timeout_seconds", 7);
        AssertError(result, P + ".healthy_threshold", 8);
        AssertError(result, P + ".unhealthy_threshold", 9);
        AssertError(result, P + ".path", 10, "must start with '/'");
        AssertError(result, P + ".expected_status_codes[1]", 11);
        AssertError(result, P + ".expected_status_codes[2]", 11);
        AssertError(result, P + ".method", 12, "not an HTTP method");
        Assert.Equal(9, result.Errors.Count);
    }

    [Fact]
    public void Validate_TopLevelHealthCheck_IsChecked()
    {
        var yaml = "health_check:\n  interval_seconds: 0\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "health_check.interval_seconds", Line(yaml, "interval_seconds"));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1.5")]
    [InlineData("-0.1")]
    public void Validate_CircuitBreakerThresholdOutOfRange_ReportsIt(string threshold)
    {
        var yaml = $"upstreams:\n  - name: a\n    servers: [\"h:1\"]\n    circuit_breaker:\n      error_threshold: {threshold}\n      timeout_seconds: 0\n";

        var result = Load(yaml);

        AssertError(result, "upstreams[0].circuit_breaker.error_threshold", 5, "(0, 1]");
        AssertError(result, "upstreams[0].circuit_breaker.timeout_seconds", 6);
    }

    [Fact]
    public void Validate_CircuitBreakerThresholdOne_IsAccepted()
    {
        AssertValid(Load("upstreams:\n  - name: a\n    servers: [\"h:1\"]\n    circuit_breaker:\n      error_threshold: 1\n"));
    }

    // ---- routes ----

    [Fact]
    public void Validate_RouteUnknownUpstream_ListsKnownNames()
    {
        const string Yaml = """
            routes:
              - path: /x
                upstream: a
              - path: /y
                upstream: b
              - path: /z
                upstream: foo
            """;

        var result = LoadWithBase(Yaml);

        var error = AssertError(result, "routes[2].upstream", Line(Yaml, "upstream: foo"));
        Assert.Equal("unknown upstream 'foo' (known: a, b)", error.Message);
        Assert.Equal(15, error.Column);
    }

    [Fact]
    public void Validate_RouteWithoutUpstreamOrRespond_ReportsIt()
    {
        const string Yaml = """
            routes:
              - path: /x
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "routes[0].upstream", Line(Yaml, "path: /x"), "needs upstream:");
    }

    [Fact]
    public void Validate_RouteWithUpstreamAndRespond_ReportsIt()
    {
        const string Yaml = """
            routes:
              - path: /x
                upstream: a
                respond:
                  status: 204
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "routes[0].respond", Line(Yaml, "respond:"), "not both");
    }

    [Fact]
    public void Validate_RouteRespondOnly_IsAcceptedWithoutUpstream()
    {
        const string Yaml = """
            routes:
              - path: /ping
                respond:
                  status: 200
                  body: pong
            """;

        var config = AssertValid(LoadWithBase(Yaml));

        Assert.Equal("pong", config.Routes[0].Respond!.Body);
    }

    [Theory]
    [InlineData(99)]
    [InlineData(600)]
    public void Validate_RespondStatusOutOfRange_ReportsIt(int status)
    {
        var yaml = $"routes:\n  - path: /x\n    respond:\n      status: {status}\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "routes[0].respond.status", Line(yaml, "status:"), "100..599");
    }

    [Theory]
    [InlineData("api/*", "must start with '/'")]
    [InlineData("/api*", "whole segment")]
    [InlineData("/a/b*c/d", "whole segment")]
    [InlineData("/a/**", "whole segment")]
    [InlineData("/a?x=1", "query")]
    public void Validate_RoutePathInvalid_ReportsIt(string path, string problem)
    {
        var yaml = $"routes:\n  - path: \"{path}\"\n    upstream: a\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "routes[0].path", Line(yaml, "path:"), problem);
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/*")]
    [InlineData("/a/*")]
    [InlineData("/a/*/b")]
    [InlineData("/api/v1")]
    public void Validate_RoutePathForms_AreAccepted(string path)
    {
        AssertValid(LoadWithBase($"routes:\n  - path: \"{path}\"\n    upstream: a\n"));
    }

    [Fact]
    public void Validate_RouteMethodNotAToken_ReportsItem()
    {
        const string Yaml = """
            routes:
              - path: /x
                upstream: a
                methods:
                  - get
                  - "PO ST"
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "routes[0].methods[1]", Line(Yaml, "PO ST"), "not an HTTP method");
        Assert.Single(result.Errors);
    }

    [Fact]
    public void Validate_RouteTimeoutZero_ReportsIt()
    {
        var yaml = "routes:\n  - path: /x\n    upstream: a\n    timeout_ms: 0\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "routes[0].timeout_ms", Line(yaml, "timeout_ms"));
    }

    // ---- auth ----

    [Fact]
    public void Validate_AuthRequiredWithoutJwtKey_ReportsAtRoute()
    {
        const string Yaml = """
            routes:
              - path: /open
                upstream: a
              - path: /private
                upstream: a
                auth_required: true
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "routes[1].auth_required", Line(Yaml, "auth_required"), "jwt_secret");
        Assert.Single(result.Errors);
    }

    [Fact]
    public void Validate_AuthRequiredInJwtModeWithoutKey_ReportsAtRoute()
    {
        const string Yaml = """
            auth:
              mode: jwt
            routes:
              - path: /private
                upstream: a
                auth_required: true
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "routes[0].auth_required", Line(Yaml, "auth_required"), "jwt_secret");
    }

    [Fact]
    public void Validate_AuthRequiredWithJwtSecret_IsAccepted()
    {
        var yaml = "auth:\n  jwt_secret: s3cret-s3cret-s3cret-s3cret-s3cret\nroutes:\n  - path: /private\n    upstream: a\n    auth_required: true\n";

        AssertValid(LoadWithBase(yaml));
    }

    [Fact]
    public void Validate_ShortJwtSecret_WarnsThatTokensWillBeRejected()
    {
        var result = LoadWithBase("auth:\n  jwt_secret: your-jwt-secret\n");
        Assert.True(result.IsValid, result.ToString());
        Assert.Contains(result.Warnings, w => w.Path == "auth.jwt_secret" && w.Message.Contains("15 bytes", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("jwks_url: https://idp.example.com/.well-known/jwks.json", "auth.jwks_url")]
    [InlineData("jwt_algorithm: RS256", "auth.jwt_algorithm")]
    [InlineData("mode: session", "auth.mode")]
    [InlineData("mode: mixed", "auth.mode")]
    public void Validate_AuthFeaturesNotServedYet_AreErrorsNotSilentlyIgnored(string keyLine, string path)
    {
        var yaml = $"auth:\n  jwt_secret: s3cret-s3cret-s3cret-s3cret-s3cret\n  {keyLine}\n";

        var result = LoadWithBase(yaml);

        AssertError(result, path, Line(yaml, keyLine), "not supported yet");
    }

    [Fact]
    public void Validate_AuthModeAndAlgorithmUnknown_ReportThem()
    {
        const string Yaml = """
            auth:
              mode: basic
              jwt_algorithm: HS999
              jwks_url: not-a-url
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "auth.mode", Line(Yaml, "mode:"), "one of: none, jwt, session, mixed");
        AssertError(result, "auth.jwt_algorithm", Line(Yaml, "jwt_algorithm"), "one of: HS256, HS384, HS512, RS256, ES256");
        AssertError(result, "auth.jwks_url", Line(Yaml, "jwks_url"), "absolute");
    }

    [Fact]
    public void Validate_JwtAlgorithmWrongCase_SuggestsCanonical()
    {
        var yaml = "auth:\n  jwt_algorithm: hs256\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "auth.jwt_algorithm", Line(yaml, "jwt_algorithm"), "did you mean 'HS256'?");
    }

    // ---- security ----

    [Fact]
    public void Validate_RateLimitValues_AreChecked()
    {
        const string Yaml = """
            security:
              rate_limit:
                requests_per_second: 0
                burst_size: 0
                key_extraction: ip
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "security.rate_limit.requests_per_second", Line(Yaml, "requests_per_second"), "greater than 0");
        AssertError(result, "security.rate_limit.burst_size", Line(Yaml, "burst_size"), "at least 1");
        AssertError(result, "security.rate_limit.key_extraction", Line(Yaml, "key_extraction"), "one of: client_ip, header, route, custom");
    }

    [Fact]
    public void Validate_HeaderKeyExtractionWithoutHeader_ReportsAtRateLimit()
    {
        const string Yaml = """
            security:
              rate_limit:
                key_extraction: header
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "security.rate_limit.header", Line(Yaml, "rate_limit:"), "no header is named");
    }

    [Fact]
    public void Validate_HeaderKeyExtractionWithHeader_IsAccepted()
    {
        AssertValid(LoadWithBase("security:\n  rate_limit:\n    key_extraction: header\n    header: X-Api-Key\n"));
    }

    [Fact]
    public void Validate_AccessControlEntries_AreParsedAsIpOrCidr()
    {
        const string Yaml = """
            security:
              access_control:
                ip_whitelist: ["192.168.1.0/24", "10.0.0.0/8", "2001:db8::/32", "::1", "10.0.0.300", "10.0.0.0/33"]
                ip_blacklist:
                  - 192.168.100.100
                  - not-an-ip
                  - "10.1"
              trusted_proxies: ["10.0.0.0/8", "fd00::/8", "proxy.local"]
            """;

        var result = LoadWithBase(Yaml);

        var whitelist = Line(Yaml, "ip_whitelist");
        AssertError(result, "security.access_control.ip_whitelist[4]", whitelist, "not an IP address or CIDR");
        AssertError(result, "security.access_control.ip_whitelist[5]", whitelist);
        AssertError(result, "security.access_control.ip_blacklist[1]", Line(Yaml, "not-an-ip"));
        AssertError(result, "security.access_control.ip_blacklist[2]", Line(Yaml, "\"10.1\""));
        AssertError(result, "security.trusted_proxies[2]", Line(Yaml, "trusted_proxies"));
        Assert.Equal(5, result.Errors.Count);
    }

    [Fact]
    public void Validate_CidrWithHostBits_Warns()
    {
        var yaml = "security:\n  trusted_proxies: [\"10.0.0.1/8\"]\n";

        var result = LoadWithBase(yaml);

        Assert.True(result.IsValid);
        AssertWarning(result, "security.trusted_proxies[0]", Line(yaml, "trusted_proxies"), "10.0.0.0/8");
    }

    [Fact]
    public void Validate_CountryNotTwoLetters_ReportsItem()
    {
        const string Yaml = """
            security:
              access_control:
                geo_blocking:
                  enabled: true
                  allowed_countries: ["US", "USA", "C1"]
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "security.access_control.geo_blocking.allowed_countries[1]", Line(Yaml, "allowed_countries"), "two-letter");
        AssertError(result, "security.access_control.geo_blocking.allowed_countries[2]", Line(Yaml, "allowed_countries"));
    }

    [Fact]
    public void Validate_CustomHeaderNameInvalid_ReportsIt()
    {
        const string Yaml = """
            security:
              headers:
                custom_headers:
                  "X Bad": "1"
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "security.headers.custom_headers.X Bad", Line(Yaml, "X Bad"), "not a valid header name");
    }

    // ---- TLS ----

    [Fact]
    public void Validate_TlsWithoutAcmeOrCertificate_RequiresPaths()
    {
        const string Yaml = """
            tls:
              enabled: true
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "tls.cert_path", Line(Yaml, "tls:"), "cert_path");
        AssertError(result, "tls.key_path", Line(Yaml, "tls:"), "key_path");
    }

    [Fact]
    public void Validate_TlsCertificateFilesMissing_WarnOnly()
    {
        const string Yaml = """
            tls:
              enabled: true
              cert_path: /nonexistent/portico/fullchain.pem
              key_path: /nonexistent/portico/privkey.pem
            """;

        var result = LoadWithBase(Yaml);

        Assert.True(result.IsValid, result.ToString());
        AssertWarning(result, "tls.cert_path", Line(Yaml, "cert_path"), "not found");
        AssertWarning(result, "tls.key_path", Line(Yaml, "key_path"), "not found");
    }

    [Fact]
    public void Validate_TlsCertificateFilesPresent_DoNotWarn()
    {
        var cert = Path.GetTempFileName();
        try
        {
            var result = LoadWithBase($"tls:\n  enabled: true\n  cert_path: \"{cert}\"\n  key_path: \"{cert}\"\n");

            Assert.True(result.IsValid, result.ToString());
            Assert.Empty(result.Warnings);
        }
        finally
        {
            File.Delete(cert);
        }
    }

    [Fact]
    public void Validate_TlsPortAndAcme_AreChecked()
    {
        const string Yaml = """
            tls:
              enabled: true
              listen_port: 0
              acme:
                enabled: true
                directory_url: "ftp://acme.example"
                domains: []
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "tls.listen_port", Line(Yaml, "listen_port"));
        AssertError(result, "tls.acme.directory_url", Line(Yaml, "directory_url"), "http");
        AssertError(result, "tls.acme.domains", Line(Yaml, "domains"), "no domains");
        Assert.DoesNotContain(result.Errors, e => e.Path == "tls.cert_path");
    }

    // ---- cache ----

    [Theory]
    [InlineData("1XB")]
    [InlineData("lots")]
    [InlineData("-5MB")]
    public void Validate_CacheSizeUnparseable_ReportsIt(string size)
    {
        var yaml = $"cache:\n  memory:\n    max_size: \"{size}\"\n";

        var result = LoadWithBase(yaml);

        AssertError(result, "cache.memory.max_size", Line(yaml, "max_size"), "not a size");
    }

    [Fact]
    public void Validate_CacheRuleRegexInvalid_ReportsRegexError()
    {
        const string Yaml = """
            cache:
              enabled: true
              disk:
                enabled: true
                max_size: 10 gigs
              rules:
                - path_regex: "\\.(js|css)$"
                - path_regex: "(unclosed"
                  ttl_seconds: -1
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "cache.disk.path", Line(Yaml, "disk:"), "has no path");
        AssertError(result, "cache.disk.max_size", Line(Yaml, "10 gigs"));
        AssertError(result, "cache.rules[1].path_regex", Line(Yaml, "(unclosed"), "invalid regular expression");
        AssertError(result, "cache.rules[1].ttl_seconds", Line(Yaml, "ttl_seconds"));
        Assert.Equal(4, result.Errors.Count);
    }

    // ---- logging ----

    [Fact]
    public void Validate_LoggingValues_AreChecked()
    {
        const string Yaml = """
            logging:
              level: verbose
              format: xml
              sample_rate: 2
              sampling_rate: -0.5
            """;

        var result = LoadWithBase(Yaml);

        AssertError(result, "logging.level", Line(Yaml, "level"), "one of: trace, debug, info");
        AssertError(result, "logging.format", Line(Yaml, "format"), "one of: json, text");
        AssertError(result, "logging.sample_rate", Line(Yaml, "sample_rate"), "[0, 1]");
        AssertError(result, "logging.sampling_rate", Line(Yaml, "sampling_rate"), "[0, 1]");
    }

    [Theory]
    [InlineData("trace")]
    [InlineData("information")]
    [InlineData("warning")]
    [InlineData("off")]
    public void Validate_LogLevels_AreAccepted(string level)
    {
        AssertValid(LoadWithBase($"logging:\n  level: {level}\n"));
    }
}
