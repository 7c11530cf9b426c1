using Portico.Config;

namespace Portico.Tests.Config;

/// <summary>The seeds' config files load as written and bind the values they contain.</summary>
public sealed class ConfigSeedTests
{
    private static string SeedPath(string name) => Path.Combine(AppContext.BaseDirectory, "Config", "seeds", name);

    private static string RepositoryFile(string relative)
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "Portico.slnx")))
            {
                return Path.Combine(directory.FullName, relative);
            }
        }

        throw new InvalidOperationException("Portico.slnx not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void LoadFile_Seed000Production_LoadsWithoutErrors()
    {
        var result = ConfigLoader.LoadFile(SeedPath("seed000-production.yaml"));

        var config = ConfigTestHelpers.AssertValid(result);
        Assert.Equal(SeedPath("seed000-production.yaml"), result.SourceName);
        Assert.Equal("0.0.0.0", config.Server.ListenAddress);
        Assert.Equal(8080, config.Server.ListenPort);
        Assert.Equal(4, config.Server.WorkerThreads);
        Assert.True(config.Server.GracefulShutdown);
        Assert.Equal(30, config.Server.GracefulTimeoutSeconds);
        Assert.Equal(1000, config.Performance.ConnectionPoolSize);
        Assert.True(config.Performance.CompressionEnabled);
        Assert.Equal(6, config.Performance.CompressionLevel);
        Assert.True(config.Monitoring.Prometheus.Enabled);
        Assert.Equal(9090, config.Monitoring.Prometheus.ListenPort);
        Assert.Equal("/metrics", config.Monitoring.Prometheus.MetricsPath);
        Assert.Equal(0.01, config.Monitoring.Tracing.SamplingRate);
        Assert.Equal(1000, config.Security.RateLimit.RequestsPerSecond);
        Assert.Equal(2000, config.Security.RateLimit.BurstSize);
        Assert.Equal(100, config.Security.DdosProtection.MaxConnectionsPerIp);
        Assert.True(config.Tls.Enabled);
        Assert.Equal("/certs/fullchain.pem", config.Tls.CertPath);
        Assert.Equal("/certs/privkey.pem", config.Tls.KeyPath);
        Assert.True(config.Tls.Acme.Enabled);
        Assert.Equal("admin@example.com", config.Tls.Acme.Email);
        Assert.Equal(["example.com"], config.Tls.Acme.Domains);

        var upstream = Assert.Single(config.Upstreams);
        Assert.Equal("backend-api", upstream.Name);
        Assert.Equal("round_robin", upstream.LoadBalanceStrategy);
        var server = Assert.Single(upstream.Servers);
        Assert.Equal("10.0.1.10", server.Host);
        Assert.Equal(8080, server.Port);
        Assert.Equal(100, server.Weight);
        Assert.False(server.Tls);
        Assert.NotNull(upstream.HealthCheck);
        Assert.Equal(5, upstream.HealthCheck.IntervalSeconds);
        Assert.Equal("/health", upstream.HealthCheck.Path);
        Assert.Equal(5, upstream.HealthCheck.TimeoutSeconds); // not in the seed: the record's default
        Assert.NotNull(upstream.CircuitBreaker);
        Assert.Equal(0.1, upstream.CircuitBreaker.ErrorThreshold);
        Assert.Equal(60, upstream.CircuitBreaker.TimeoutSeconds);
    }

    [Fact]
    public void LoadFile_Seed000Production_WarnsAboutIgnoredKeysAndMissingCertificates()
    {
        var result = ConfigLoader.LoadFile(SeedPath("seed000-production.yaml"));

        Assert.Contains(result.Warnings, w => w.Path == "server.worker_threads" && w.Line == 5);
        Assert.Contains(result.Warnings, w => w.Path == "performance.zero_copy_enabled");
        Assert.Contains(result.Warnings, w => w.Path == "performance.memory_pool_enabled");
        Assert.Contains(result.Warnings, w => w.Path == "tls.cert_path" && w.Message.Contains("not found", StringComparison.Ordinal));
        Assert.Contains(result.Warnings, w => w.Path == "tls.key_path");
    }

    [Fact]
    public void LoadFile_Seed001Default_LoadsWithoutErrors()
    {
        var result = ConfigLoader.LoadFile(SeedPath("seed001-default.yaml"));

        var config = ConfigTestHelpers.AssertValid(result);
        Assert.Equal("0.0.0.0:6188", config.Server.BindAddress);
        Assert.Equal(4, config.Server.WorkerThreads);

        Assert.Equal(
            ["oauth-service", "admin-portal", "kline-service", "flow-service", "test-service"],
            config.Upstreams.Select(u => u.Name));
        var oauth = config.Upstreams[0];
        var server = Assert.Single(oauth.Servers);
        Assert.Equal("127.0.0.1", server.Host);
        Assert.Equal(3001, server.Port);
        Assert.Equal(1, server.Weight);
        Assert.Equal(3005, config.Upstreams[4].Servers[0].Port);

        Assert.Equal(6, config.Routes.Count);
        Assert.Equal(["/oauth/*", "/admin/*", "/kline/*", "/flow/*", "/test/*", "/*"], config.Routes.Select(r => r.Path));
        Assert.Equal(
            ["oauth-service", "admin-portal", "kline-service", "flow-service", "test-service", "admin-portal"],
            config.Routes.Select(r => r.Upstream));
        Assert.Equal([false, true, true, true, false, true], config.Routes.Select(r => r.AuthRequired));

        var check = config.HealthCheck;
        Assert.NotNull(check);
        Assert.True(check.Enabled);
        Assert.Equal(30, check.IntervalSeconds);
        Assert.Equal(5, check.TimeoutSeconds);
        Assert.Equal(2, check.HealthyThreshold);
        Assert.Equal(3, check.UnhealthyThreshold);
        Assert.Equal("/health", check.Path);
        Assert.Equal([200], check.ExpectedStatusCodes);
        Assert.Equal("GET", check.Method);
        Assert.False(check.UseHttps);

        Assert.Equal("your-jwt-secret", config.Auth.JwtSecret);
        Assert.Equal("http://127.0.0.1:3001", config.Auth.OauthServiceUrl);
        Assert.Equal("/api/auth/validate", config.Auth.TokenValidationEndpoint);

        Assert.NotNull(config.Metrics);
        Assert.True(config.Metrics.Enabled);
        Assert.Equal("0.0.0.0:9090", config.Metrics.BindAddress);
        Assert.Equal("/metrics", config.Metrics.Path);
        Assert.Equal("info", config.Logging.Level);
        Assert.Equal("json", config.Logging.Format);
    }

    [Fact]
    public void LoadFile_Seed001Default_MapFormUpstreamsCarryTheirYamlPath()
    {
        var result = ConfigLoader.LoadFile(SeedPath("seed001-default.yaml"));

        var config = ConfigTestHelpers.AssertValid(result);
        Assert.Equal("upstreams.kline-service", result.SourceMap.PathOf(config.Upstreams[2], "?"));
        Assert.Equal((14, 3), result.SourceMap.Locate("upstreams.kline-service"));
        Assert.Equal((16, 9), result.SourceMap.Locate("upstreams.kline-service.servers[0]"));
    }

    [Fact]
    public void LoadFile_RepositoryProductionYaml_LoadsWithSeedAdvancedSections()
    {
        var result = ConfigLoader.LoadFile(RepositoryFile(Path.Combine("config", "production.yaml")));

        var config = ConfigTestHelpers.AssertValid(result);
        Assert.Equal("backend-api", Assert.Single(config.Upstreams).Name);
        Assert.False(config.Tls.Http3Enabled);
        Assert.True(config.Tls.OcspStapling);
        Assert.True(config.Tls.HstsEnabled);
        Assert.Equal(31536000, config.Tls.HstsMaxAge);
        Assert.Equal("client_ip", config.Security.RateLimit.KeyExtraction);
        Assert.Equal(["192.168.1.0/24", "10.0.0.0/8"], config.Security.AccessControl.IpWhitelist);
        Assert.Equal(["192.168.100.100"], config.Security.AccessControl.IpBlacklist);
        Assert.True(config.Security.AccessControl.GeoBlocking.Enabled);
        Assert.Equal(["US", "CN", "JP"], config.Security.AccessControl.GeoBlocking.AllowedCountries);
        Assert.True(config.Security.Headers.EnableDefaultHeaders);
        Assert.Equal("DENY", config.Security.Headers.CustomHeaders["X-Frame-Options"]);
        Assert.Equal(3, config.Security.Headers.CustomHeaders.Count);
        Assert.True(config.Cache.Enabled);
        Assert.Equal("1GB", config.Cache.Memory.MaxSize);
        Assert.False(config.Cache.Disk.Enabled);
        Assert.Equal("/tmp/pingora-cache", config.Cache.Disk.Path);
        Assert.Equal(2, config.Cache.Rules.Count);
        Assert.Equal(@"\.(js|css|png|jpg|jpeg|gif|ico|svg)$", config.Cache.Rules[0].PathRegex);
        Assert.Equal(86400, config.Cache.Rules[0].TtlSeconds);
        Assert.Equal("public, max-age=86400", config.Cache.Rules[0].CacheControl);
        Assert.Null(config.Cache.Rules[1].CacheControl);
    }
}
