using Portico.Config;
using static Portico.Tests.Config.ConfigTestHelpers;

namespace Portico.Tests.Config;

/// <summary>Parsing and binding: YAML shapes, types, unknown keys, syntax errors, environment variables.</summary>
public sealed class ConfigLoaderTests
{
    [Fact]
    public void Load_ListFormUpstreams_BindsNamesAndServerObjects()
    {
        const string Yaml = """
            upstreams:
              - name: api
                load_balance_strategy: weighted_round_robin
                protocol: h2c
                servers:
                  - host: api1.example.com
                    port: 8080
                    weight: 100
                  - host: api2.example.com
                    port: 8443
                    weight: 80
                    tls: true
                    tls_verify: false
                    sni: api.example.com
                    zone: eu-1
                    backup: true
            """;

        var config = AssertValid(Load(Yaml));

        var upstream = Assert.Single(config.Upstreams);
        Assert.Equal("api", upstream.Name);
        Assert.Equal("weighted_round_robin", upstream.LoadBalanceStrategy);
        Assert.Equal("h2c", upstream.Protocol);
        Assert.Equal(2, upstream.Servers.Count);
        Assert.Equal(new UpstreamServerConfig { Host = "api1.example.com", Port = 8080, Weight = 100 }, upstream.Servers[0]);
        var second = upstream.Servers[1];
        Assert.True(second.Tls);
        Assert.False(second.TlsVerify);
        Assert.Equal("api.example.com", second.Sni);
        Assert.Equal("eu-1", second.Zone);
        Assert.True(second.Backup);
    }

    [Fact]
    public void Load_MapFormUpstreams_KeyBecomesName()
    {
        const string Yaml = """
            upstreams:
              users:
                servers: ["10.0.0.1:80", "10.0.0.2:81"]
                load_balance_strategy: least_connections
              billing:
                servers:
                  - host: billing.internal
                    port: 9000
            """;

        var config = AssertValid(Load(Yaml));

        Assert.Equal(["users", "billing"], config.Upstreams.Select(u => u.Name));
        Assert.Equal("least_connections", config.Upstreams[0].LoadBalanceStrategy);
        Assert.Equal([("10.0.0.1", 80), ("10.0.0.2", 81)], config.Upstreams[0].Servers.Select(s => (s.Host, s.Port)));
        Assert.Equal("billing.internal", config.Upstreams[1].Servers[0].Host);
    }

    [Fact]
    public void Load_MapFormUpstreamWithDifferentName_ReportsNameAtItsLine()
    {
        const string Yaml = """
            upstreams:
              users:
                name: people
                servers: ["10.0.0.1:80"]
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams.users.name", LineOf(Yaml, "name: people"), "differs from the key");
    }

    [Fact]
    public void Load_EmptyMapFormUpstream_ReportsItsKey()
    {
        const string Yaml = """
            upstreams:
              users:
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams.users", LineOf(Yaml, "users:"), "is empty");
        Assert.Single(result.Errors);
    }

    [Theory]
    [InlineData("\"127.0.0.1:3001\"", "127.0.0.1", 3001)]
    [InlineData("\"[::1]:8080\"", "::1", 8080)]
    [InlineData("\"[2001:db8::10]:443\"", "2001:db8::10", 443)]
    [InlineData("api.internal:80", "api.internal", 80)]
    public void Load_StringServer_ParsesHostAndPort(string server, string host, int port)
    {
        var yaml = $"upstreams:\n  a:\n    servers:\n      - {server}\n";

        var config = AssertValid(Load(yaml));

        var parsed = Assert.Single(config.Upstreams[0].Servers);
        Assert.Equal(host, parsed.Host);
        Assert.Equal(port, parsed.Port);
        Assert.Equal(1, parsed.Weight);
    }

    [Theory]
    [InlineData("\"127.0.0.1\"", "no port")]
    [InlineData("\"[::1]\"", "no port")]
    [InlineData("\"::1:8080\"", "brackets")]
    [InlineData("\"10.0.0.1:http\"", "not a port number")]
    [InlineData("\"[::1:8080\"", "unclosed")]
    public void Load_StringServerWithoutValidPort_ReportsServerPathAndLine(string server, string problem)
    {
        var yaml = $"upstreams:\n  - name: a\n    servers:\n      - \"10.0.0.9:80\"\n      - {server}\n";

        var result = Load(yaml);

        AssertError(result, "upstreams[0].servers[1]", 5, problem);
        Assert.Single(result.Errors); // the dropped server is not reported again by the validator
    }

    [Fact]
    public void Load_StringServerAloneWithoutPort_ReportsOnlyTheServer()
    {
        const string Yaml = """
            upstreams:
              oauth-service:
                servers:
                  - "127.0.0.1"
            """;

        var result = Load(Yaml);

        var error = AssertError(result, "upstreams.oauth-service.servers[0]", 4, "no port");
        Assert.Equal(9, error.Column);
        Assert.Single(result.Errors); // not also "has no servers"
    }

    [Fact]
    public void Load_UnknownKey_ReportsLineAndSuggestion()
    {
        const string Yaml = """
            server:
              listen_address: "0.0.0.0"
              listen_prot: 8080
            """;

        var result = Load(Yaml);

        var error = AssertError(result, "server.listen_prot", 3, "did you mean 'listen_port'?");
        Assert.Equal(3, error.Column);
        Assert.Equal("line 3, col 3: server.listen_prot: unknown key 'listen_prot'; did you mean 'listen_port'?", error.ToString());
        Assert.Null(result.Config);
    }

    [Fact]
    public void Load_UnknownKeyFarFromAnyKnownKey_ListsKnownKeys()
    {
        const string Yaml = """
            logging:
              colour_scheme: dark
            """;

        var result = Load(Yaml);

        AssertError(result, "logging.colour_scheme", 2, "known keys: level, format, sample_rate");
    }

    [Fact]
    public void Load_UnknownTopLevelKey_SuggestsNearest()
    {
        const string Yaml = """
            upstream:
              - name: a
            """;

        var result = Load(Yaml);

        AssertError(result, "upstream", 1, "did you mean 'upstreams'?");
    }

    [Fact]
    public void Load_UnknownKeyInListItem_UsesIndexInPath()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers:
                  - host: 10.0.0.1
                    port: 80
                  - host: 10.0.0.2
                    prot: 80
            """;

        var result = Load(Yaml);

        AssertError(result, "upstreams[0].servers[1].prot", 7, "did you mean 'port'?");
    }

    [Fact]
    public void Load_NonIntegerPort_ReportsTypeErrorAtValue()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers:
                  - host: 10.0.0.1
                    port: abc
            """;

        var result = Load(Yaml);

        var error = AssertError(result, "upstreams[0].servers[0].port", 5, "expected an integer, found 'abc'");
        Assert.Equal(15, error.Column);
        Assert.Single(result.Errors); // the port keeps its default 0, which the validator must not report again
    }

    [Fact]
    public void Load_InvalidBoolean_ReportsTypeError()
    {
        const string Yaml = """
            tls:
              enabled: maybe
            """;

        var result = Load(Yaml);

        AssertError(result, "tls.enabled", 2, "expected true or false, found 'maybe'");
    }

    [Theory]
    [InlineData("yes", true)]
    [InlineData("True", true)]
    [InlineData("off", false)]
    [InlineData("FALSE", false)]
    public void Load_BooleanSpellings_AreAccepted(string text, bool expected)
    {
        var config = AssertValid(Load($"performance:\n  compression_enabled: {text}\n"));

        Assert.Equal(expected, config.Performance.CompressionEnabled);
    }

    [Theory]
    [InlineData("8080.5")]
    [InlineData("99999999999")]
    [InlineData("[8080]")]
    public void Load_IntegerPropertyWithWrongValue_ReportsTypeError(string text)
    {
        var result = Load($"server:\n  listen_port: {text}\n");

        AssertError(result, "server.listen_port", 2, "expected an integer");
    }

    [Fact]
    public void Load_QuotedNumber_BindsToInteger()
    {
        var config = AssertValid(Load("server:\n  listen_port: \"8081\"\n"));

        Assert.Equal(8081, config.Server.ListenPort);
    }

    [Fact]
    public void Load_MappingWhereStringExpected_ReportsTypeError()
    {
        const string Yaml = """
            logging:
              level:
                value: info
            """;

        var result = Load(Yaml);

        AssertError(result, "logging.level", 3, "expected a string, found a mapping");
    }

    [Fact]
    public void Load_ScalarWhereListExpected_ReportsTypeError()
    {
        const string Yaml = """
            tls:
              acme:
                domains: example.com
            """;

        var result = Load(Yaml);

        AssertError(result, "tls.acme.domains", 3, "expected a list");
    }

    [Fact]
    public void Load_NullForNullableProperty_BindsNull()
    {
        const string Yaml = """
            server:
              zone: ~
              bind_address:
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                health_check: null
            routes:
              - path: /
                upstream: a
                timeout_ms:
            """;

        var config = AssertValid(Load(Yaml));

        Assert.Null(config.Server.Zone);
        Assert.Null(config.Server.BindAddress);
        Assert.Null(config.Upstreams[0].HealthCheck);
        Assert.Null(config.Routes[0].TimeoutMs);
    }

    [Fact]
    public void Load_NullForNonNullableProperty_ReportsError()
    {
        const string Yaml = """
            server:
              listen_port:
            logging: ~
            """;

        var result = Load(Yaml);

        AssertError(result, "server.listen_port", 2, "a value is required");
        AssertError(result, "logging", 3, "a value is required");
    }

    [Fact]
    public void Load_QuotedEmptyString_IsEmptyNotNull()
    {
        var config = AssertValid(Load("auth:\n  mode: none\n  issuer: \"\"\n"));

        Assert.Equal("", config.Auth.Issuer);
    }

    [Fact]
    public void Load_DictionaryProperty_BindsEntries()
    {
        const string Yaml = """
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
            routes:
              - path: /api/*
                upstream: a
                methods: [get, POST]
                headers:
                  X-Tenant: blue
                  X-Version: 2
            """;

        var config = AssertValid(Load(Yaml));

        var route = Assert.Single(config.Routes);
        Assert.Equal(["get", "POST"], route.Methods);
        Assert.Equal("blue", route.Headers["X-Tenant"]);
        Assert.Equal("2", route.Headers["X-Version"]);
    }

    [Fact]
    public void Load_AbsentKeys_KeepRecordDefaults()
    {
        var config = AssertValid(Load("logging:\n  format: json\n"));

        Assert.Equal("json", config.Logging.Format);
        Assert.Equal("info", config.Logging.Level);
        Assert.Equal(new ServerConfig(), config.Server);
        Assert.Equal(9080, config.Admin.ListenPort);
        Assert.Empty(config.Upstreams);
    }

    [Fact]
    public void Load_MergeKeys_ApplyAnchorsWithExplicitKeysWinning()
    {
        const string Yaml = """
            upstreams:
              - &base
                name: a
                connect_timeout_ms: 250
                servers: ["10.0.0.1:80"]
              - <<: *base
                name: b
            """;

        var config = AssertValid(Load(Yaml));

        Assert.Equal(["a", "b"], config.Upstreams.Select(u => u.Name));
        Assert.Equal(250, config.Upstreams[1].ConnectTimeoutMs);
        Assert.Equal("10.0.0.1", config.Upstreams[1].Servers[0].Host);
    }

    [Fact]
    public void Load_SyntaxError_ReportsSingleErrorWithLine()
    {
        const string Yaml = """
            server:
              listen_port: 8080
             listen_address: 0.0.0.0
            """;

        var result = Load(Yaml);

        var error = Assert.Single(result.Errors);
        Assert.Equal(3, error.Line);
        Assert.Contains("YAML syntax error", error.Message, StringComparison.Ordinal);
        Assert.Null(result.Config);
    }

    [Fact]
    public void Load_UnclosedFlowList_ReportsSyntaxErrorWithLine()
    {
        const string Yaml = """
            tls:
              acme:
                domains: [example.com, www.example.com
            logging:
              level: info
            """;

        var result = Load(Yaml);

        var error = Assert.Single(result.Errors);
        Assert.True(error.Line >= 3, error.ToString());
        Assert.Contains("YAML syntax error", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_DuplicateKey_ReportsLine()
    {
        const string Yaml = """
            server:
              listen_port: 8080
              listen_port: 8081
            """;

        var result = Load(Yaml);

        var error = Assert.Single(result.Errors);
        Assert.Equal(3, error.Line);
        Assert.Contains("Duplicate key", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   \n\n")]
    [InlineData("# only a comment\n")]
    [InlineData("~\n")]
    public void Load_EmptyFile_ReportsError(string yaml)
    {
        var result = Load(yaml);

        var error = Assert.Single(result.Errors);
        Assert.Contains("empty", error.Message, StringComparison.Ordinal);
        Assert.False(result.IsValid);
    }

    [Fact]
    public void Load_RootIsList_ReportsError()
    {
        var result = Load("- a\n- b\n");

        var error = Assert.Single(result.Errors);
        Assert.Equal(1, error.Line);
        Assert.Contains("must be a mapping", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_TwoDocuments_ReportsSecond()
    {
        var result = Load("server:\n  listen_port: 80\n---\nserver:\n  listen_port: 81\n");

        var error = Assert.Single(result.Errors);
        Assert.Equal(4, error.Line);
    }

    [Fact]
    public void Load_SeveralProblems_ReportsAllOfThem()
    {
        const string Yaml = """
            server:
              listen_port: 70000
              listen_adress: 0.0.0.0
            upstreams:
              - name: a
                servers: ["10.0.0.1:80"]
                load_balance_strategy: round_robbin
            routes:
              - path: /x
                upstream: missing
              - path: y
                upstream: a
            logging:
              level: loud
              format: yaml
            """;

        var result = Load(Yaml);

        AssertError(result, "server.listen_adress", 3, "did you mean 'listen_address'?");
        AssertError(result, "server.listen_port", 2);
        AssertError(result, "upstreams[0].load_balance_strategy", 7, "did you mean 'round_robin'?");
        AssertError(result, "routes[0].upstream", 10, "unknown upstream 'missing' (known: a)");
        AssertError(result, "routes[1].path", 11);
        AssertError(result, "logging.level", 14);
        AssertError(result, "logging.format", 15);
        Assert.Equal(7, result.Errors.Count);
    }

    [Fact]
    public void Load_EnvironmentVariables_AreExpanded()
    {
        const string Yaml = """
            server:
              listen_port: ${PORT}
              listen_address: ${ADDR:-127.0.0.1}
              zone: "zone-${ZONE:-a}-${REGION:-eu}"
            auth:
              mode: jwt
              jwt_secret: "${JWT_SECRET}"
              issuer: "literal $${NOT_A_VAR} and $5"
            """;
        var environment = new Dictionary<string, string> { ["PORT"] = "9000", ["JWT_SECRET"] = "s3cr3t", ["REGION"] = "us" };

        var config = AssertValid(Load(Yaml, environment));

        Assert.Equal(9000, config.Server.ListenPort);
        Assert.Equal("127.0.0.1", config.Server.ListenAddress);
        Assert.Equal("zone-a-us", config.Server.Zone);
        Assert.Equal("s3cr3t", config.Auth.JwtSecret);
        Assert.Equal("literal ${NOT_A_VAR} and $5", config.Auth.Issuer);
    }

    [Fact]
    public void Load_EnvironmentVariableEmpty_UsesDefault()
    {
        var environment = new Dictionary<string, string> { ["LEVEL"] = "" };

        var config = AssertValid(Load("logging:\n  level: ${LEVEL:-debug}\n", environment));

        Assert.Equal("debug", config.Logging.Level);
    }

    [Fact]
    public void Load_EnvironmentVariableExpandingToNothing_IsNullForNullableProperty()
    {
        var config = AssertValid(Load("auth:\n  mode: none\n  jwt_secret: ${JWT_SECRET:-}\n"));

        Assert.Null(config.Auth.JwtSecret);
    }

    [Fact]
    public void Load_UnsetEnvironmentVariableWithoutDefault_ReportsError()
    {
        const string Yaml = """
            auth:
              mode: jwt
              jwt_secret: ${JWT_SECRET}
            """;

        var result = Load(Yaml);

        AssertError(result, "auth.jwt_secret", 3, "environment variable 'JWT_SECRET' is not set");
    }

    [Theory]
    [InlineData("${UNCLOSED", "unterminated")]
    [InlineData("${1BAD}", "not a valid environment variable reference")]
    [InlineData("${}", "not a valid environment variable reference")]
    public void Load_MalformedEnvironmentReference_ReportsError(string value, string problem)
    {
        var result = Load($"logging:\n  level: \"{value}\"\n");

        AssertError(result, "logging.level", 2, problem);
    }

    [Fact]
    public void Load_EnvironmentVariableWithWrongType_ReportsTypeError()
    {
        var result = Load("server:\n  listen_port: ${PORT}\n", new Dictionary<string, string> { ["PORT"] = "http" });

        AssertError(result, "server.listen_port", 2, "expected an integer, found 'http'");
    }

    [Fact]
    public void LoadFile_MissingFile_ReportsError()
    {
        var path = Path.Combine(Path.GetTempPath(), "portico-missing-" + Guid.NewGuid().ToString("N") + ".yaml");

        var result = ConfigLoader.LoadFile(path);

        var error = Assert.Single(result.Errors);
        Assert.Contains("cannot read config file", error.Message, StringComparison.Ordinal);
        Assert.Equal(path, result.SourceName);
    }

    [Fact]
    public void LoadYaml_WithSourceName_NamesItInOutput()
    {
        var result = ConfigLoader.LoadYaml("server:\n  listen_prot: 1\n", "gateway.yaml");

        Assert.Equal("gateway.yaml", result.SourceName);
        Assert.StartsWith("gateway.yaml: error: line 2, col 3: server.listen_prot:", result.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void ConfigError_WithoutLocation_OmitsIt()
    {
        Assert.Equal("the config file is empty", new ConfigError("", 0, 0, "the config file is empty").ToString());
        Assert.Equal("routes[2].upstream: unknown upstream 'foo' (known: a, b)",
            new ConfigError("routes[2].upstream", 0, 0, "unknown upstream 'foo' (known: a, b)").ToString());
        Assert.Equal("line 12, col 5: routes[2].upstream: unknown upstream 'foo' (known: a, b)",
            new ConfigError("routes[2].upstream", 12, 5, "unknown upstream 'foo' (known: a, b)").ToString());
    }

    [Theory]
    [InlineData("ListenPort", "listen_port")]
    [InlineData("Http2Enabled", "http2_enabled")]
    [InlineData("HstsMaxAge", "hsts_max_age")]
    [InlineData("OauthServiceUrl", "oauth_service_url")]
    [InlineData("HealthCheckIntervalSecs", "health_check_interval_secs")]
    [InlineData("TLSVerify", "tls_verify")]
    [InlineData("Tls", "tls")]
    public void ToSnakeCase_PropertyNames_MapToYamlKeys(string property, string key)
    {
        Assert.Equal(key, ConfigLoader.ToSnakeCase(property));
    }

    [Fact]
    public void Validate_ConfigBuiltInCode_ReportsPathsWithoutLines()
    {
        var config = new GatewayConfig
        {
            Upstreams = [new UpstreamConfig { Name = "a", Servers = [new UpstreamServerConfig { Host = "h", Port = 0 }] }],
            Routes = [new RouteConfig { Path = "/", Upstream = "b" }],
        };

        var result = ConfigLoader.Validate(config);

        Assert.Null(result.Config);
        Assert.Contains(result.Errors, e => e.Path == "upstreams[0].servers[0].port" && e.Line == 0);
        Assert.Contains(result.Errors, e => e.Path == "routes[0].upstream" && e.Message == "unknown upstream 'b' (known: a)");
    }

    [Fact]
    public void Validate_ValidConfigBuiltInCode_ReturnsIt()
    {
        var config = new GatewayConfig
        {
            Upstreams = [new UpstreamConfig { Name = "a", Servers = [new UpstreamServerConfig { Host = "h", Port = 80 }] }],
            Routes = [new RouteConfig { Path = "/", Upstream = "a" }],
        };

        var result = ConfigLoader.Validate(config);

        Assert.True(result.IsValid, result.ToString());
        Assert.Same(config, result.Config);
    }
}
