using System.Text;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Routing end to end on seed 001's route set (config/default.yaml's routes, map-form upstreams), plus host,
/// method, strip_prefix and respond routes, and JWT-protected routes with a real HS256 token.
/// </summary>
public sealed class RoutingTests : IClassFixture<RoutingTests.Fixture>
{
    private const string Secret = "integration-tests-hs256-secret-0123456789";
    private readonly Fixture _fixture;

    public RoutingTests(Fixture fixture)
    {
        _fixture = fixture;
    }

    public sealed class Fixture : IAsyncLifetime
    {
        private readonly Dictionary<string, RecordingUpstream> _upstreams = [];

        public GatewayProcess Gateway { get; private set; } = null!;

        public int Port { get; private set; }

        public RecordingUpstream this[string name] => _upstreams[name];

        public string Url(string path) => $"http://127.0.0.1:{Port}{path}";

        public int TotalUpstreamRequests => _upstreams.Values.Sum(u => u.Requests);

        public async Task InitializeAsync()
        {
            foreach (var name in new[] { "oauth-service", "admin-portal", "kline-service", "flow-service", "test-service", "host-service", "write-service" })
            {
                _upstreams[name] = await RecordingUpstream.StartAsync(name);
            }
            Port = Ports.GetFree();
            var upstreams = string.Concat(_upstreams.Select(u => $"  {u.Key}:\n    servers:\n      - \"{u.Value.Address}\"\n"));
            var yaml = $"""
                server:
                  bind_address: "127.0.0.1:{Port}"
                  graceful_timeout_seconds: 1
                admin:
                  enabled: false
                upstreams:
                {upstreams}
                routes:
                  - path: "/oauth/*"
                    upstream: "oauth-service"
                    auth_required: false
                  - path: "/admin/*"
                    upstream: "admin-portal"
                    auth_required: true
                  - path: "/kline/*"
                    upstream: "kline-service"
                    auth_required: true
                  - path: "/flow/*"
                    upstream: "flow-service"
                    auth_required: true
                  - path: "/test/*"
                    upstream: "test-service"
                    auth_required: false
                  - path: "/*"
                    upstream: "admin-portal"
                    auth_required: true
                  - path: "/portico/hello"
                    respond:
                      status: 200
                      body: "Hello from Portico\n"
                  - path: "/*"
                    host: "api.example.test"
                    upstream: "host-service"
                  - path: "/test/write"
                    methods: ["POST"]
                    upstream: "write-service"
                  - path: "/strip/*"
                    upstream: "test-service"
                    strip_prefix: "/strip"
                auth:
                  jwt_secret: "{Secret}"
                """;
            Gateway = await GatewayProcess.StartAsync(yaml, Port);
        }

        public async Task DisposeAsync()
        {
            await Gateway.DisposeAsync();
            foreach (var upstream in _upstreams.Values)
            {
                await upstream.DisposeAsync();
            }
        }
    }

    [Theory]
    [InlineData("/oauth/token", "oauth-service")]
    [InlineData("/oauth", "oauth-service")]
    [InlineData("/test/anything/deeper", "test-service")]
    public async Task Route_PublicPrefix_ReachesItsUpstream(string path, string upstream)
    {
        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url(path));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal(upstream, response.Header("X-Upstream"));
        Assert.Equal($"{upstream} GET {path}", response.Body);
        Assert.NotNull(_fixture[upstream].Last(path));
    }

    [Theory]
    [InlineData("/admin/x")]
    [InlineData("/kline/x")]
    [InlineData("/flow/x")]
    [InlineData("/")]
    public async Task Route_AuthRequiredWithoutToken_Returns401WithBearerChallenge(string path)
    {
        var before = _fixture.TotalUpstreamRequests;

        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url(path));

        Assert.True(response.Status == 401, response.ToString());
        Assert.StartsWith("Bearer", response.Header("WWW-Authenticate"));
        Assert.Equal(before, _fixture.TotalUpstreamRequests);
    }

    [Fact]
    public async Task Route_AuthRequiredWithValidToken_ForwardsSubAsUserId()
    {
        var token = CreateToken(Secret, "user-42", DateTime.UtcNow.AddMinutes(5));

        var response = await Curl.RunAsync("--max-time", "10", "-H", "Authorization: Bearer " + token, "-H", "X-User-Id: spoofed-admin", _fixture.Url("/admin/x"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("admin-portal", response.Header("X-Upstream"));
        Assert.Equal("user-42", _fixture["admin-portal"].Last("/admin/x")!.Header("X-User-Id"));
    }

    [Theory]
    [InlineData("/", "admin-portal")]
    [InlineData("/somewhere/else", "admin-portal")]
    [InlineData("/kline/candles", "kline-service")]
    [InlineData("/flow/orders", "flow-service")]
    public async Task Route_AuthRequiredWithValidToken_ReachesItsUpstream(string path, string upstream)
    {
        var token = CreateToken(Secret, "user-7", DateTime.UtcNow.AddMinutes(5));

        var response = await Curl.RunAsync("--max-time", "10", "-H", "Authorization: Bearer " + token, _fixture.Url(path));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal(upstream, response.Header("X-Upstream"));
        Assert.Equal("user-7", _fixture[upstream].Last(path)!.Header("X-User-Id"));
    }

    [Fact]
    public async Task Route_TokenSignedWithOtherSecret_Returns401InvalidToken()
    {
        var token = CreateToken("another-secret-that-is-long-enough-0123456789", "user-42", DateTime.UtcNow.AddMinutes(5));
        var before = _fixture["admin-portal"].Requests;

        var response = await Curl.RunAsync("--max-time", "10", "-H", "Authorization: Bearer " + token, _fixture.Url("/admin/x"));

        Assert.True(response.Status == 401, response.ToString());
        Assert.Contains("invalid_token", response.Header("WWW-Authenticate"));
        Assert.Equal(before, _fixture["admin-portal"].Requests);
    }

    [Fact]
    public async Task Route_ExpiredToken_Returns401()
    {
        var token = CreateToken(Secret, "user-42", DateTime.UtcNow.AddMinutes(-10));

        var response = await Curl.RunAsync("--max-time", "10", "-H", "Authorization: Bearer " + token, _fixture.Url("/admin/expired"));

        Assert.True(response.Status == 401, response.ToString());
        Assert.Null(_fixture["admin-portal"].Last("/admin/expired"));
    }

    [Fact]
    public async Task Route_PublicRoute_ClientIdentityHeadersStripped()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "X-User-Id: admin", "-H", "X-User-Roles: root", _fixture.Url("/test/identity"));

        Assert.True(response.Status == 200, response.ToString());
        var seen = _fixture["test-service"].Last("/test/identity")!;
        Assert.Null(seen.Header("X-User-Id"));
        Assert.Null(seen.Header("X-User-Roles"));
    }

    [Theory]
    [InlineData("api.example.test")]
    [InlineData("API.Example.Test:8443")]
    public async Task Route_HostMatch_ServedByHostRoute(string host)
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "Host: " + host, _fixture.Url("/by-host"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("host-service", response.Header("X-Upstream"));
        Assert.Equal(host, _fixture["host-service"].Last("/by-host")!.Header("Host"));
    }

    [Fact]
    public async Task Route_OtherHost_FallsToCatchAll()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "Host: other.example.test", _fixture.Url("/by-host"));

        // The catch-all /* requires a token.
        Assert.True(response.Status == 401, response.ToString());
    }

    [Fact]
    public async Task Route_MethodMatch_PostAndGetGoToDifferentUpstreams()
    {
        var post = await Curl.RunAsync("--max-time", "10", "-X", "POST", "--data-binary", "x", _fixture.Url("/test/write"));
        var get = await Curl.RunAsync("--max-time", "10", _fixture.Url("/test/write"));

        Assert.True(post.Status == 200, post.ToString());
        Assert.Equal("write-service", post.Header("X-Upstream"));
        Assert.True(get.Status == 200, get.ToString());
        Assert.Equal("test-service", get.Header("X-Upstream"));
    }

    [Theory]
    [InlineData("/strip/a/b?q=1", "/a/b?q=1")]
    [InlineData("/strip", "/")]
    [InlineData("/strip/", "/")]
    public async Task Route_StripPrefix_UpstreamSeesRemainder(string requested, string expected)
    {
        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url(requested));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("test-service", response.Header("X-Upstream"));
        Assert.Equal($"test-service GET {expected}", response.Body);
    }

    /// <summary>
    /// One keep-alive connection, so one pooled request context and the proxy session kept with it
    /// (<c>OwnRequest.Session</c>): nothing of one request (a stripped path, the route, the request id, the status) may
    /// carry over to the next.
    /// </summary>
    [Fact]
    public async Task Route_KeepAliveRequests_KeptSessionCarriesNothingOver()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        var ids = new HashSet<string>();
        foreach (var (requested, expected, upstream) in new[]
        {
            ("/strip/one", "/one", "test-service"),
            ("/test/two", "/test/two", "test-service"),
            ("/oauth/three", "/oauth/three", "oauth-service"),
            ("/strip/four?x=1", "/four?x=1", "test-service"),
            ("/test/five", "/test/five", "test-service"),
        })
        {
            Assert.True(await connection.SendAsync($"GET {requested} HTTP/1.1\r\nHost: gw.test\r\n\r\n"));
            var response = await connection.ReadResponseAsync();
            Assert.NotNull(response);
            Assert.True(response.Status == 200, requested + ": " + response);
            Assert.Equal(upstream, response.Header("X-Upstream"));
            Assert.Equal($"{upstream} GET {expected}", response.BodyText);
            var id = response.Header("X-Request-ID");
            Assert.False(string.IsNullOrEmpty(id));
            Assert.True(ids.Add(id!), "request id repeated: " + id);
        }
        // And a 401 (no upstream attempt) between two proxied requests leaves no upstream state behind either.
        Assert.True(await connection.SendAsync("GET /admin/x HTTP/1.1\r\nHost: gw.test\r\n\r\n"));
        var refused = await connection.ReadResponseAsync();
        Assert.Equal(401, refused!.Status);
        Assert.Null(refused.Header("X-Upstream"));
        Assert.True(await connection.SendAsync("GET /strip/six HTTP/1.1\r\nHost: gw.test\r\n\r\n"));
        var last = await connection.ReadResponseAsync();
        Assert.Equal("test-service GET /six", last!.BodyText);
    }

    [Fact]
    public async Task Route_Respond_AnsweredByGatewayWithoutUpstream()
    {
        var before = _fixture.TotalUpstreamRequests;

        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url("/portico/hello"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("Hello from Portico\n", response.Body);
        Assert.StartsWith("text/plain", response.Header("Content-Type"));
        Assert.Equal(before, _fixture.TotalUpstreamRequests);
    }

    [Fact]
    public async Task Route_NoRoutesOneUpstream_EverythingGoesToIt()
    {
        await using var upstream = await RecordingUpstream.StartAsync("solo");
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
              graceful_timeout_seconds: 1
            admin:
              enabled: false
            upstreams:
              solo:
                servers: ["{upstream.Address}"]
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);

        var root = await Curl.RunAsync("--max-time", "10", $"http://127.0.0.1:{port}/");
        var deep = await Curl.RunAsync("--max-time", "10", $"http://127.0.0.1:{port}/any/deep/path?x=1");
        var post = await Curl.RunAsync("--max-time", "10", "--data-binary", "b", $"http://127.0.0.1:{port}/admin/x");

        Assert.Equal("solo GET /", root.Body);
        Assert.Equal("solo GET /any/deep/path?x=1", deep.Body);
        Assert.Equal("solo POST /admin/x", post.Body);
        Assert.Equal(3, upstream.Requests);
    }

    private static string CreateToken(string secret, string subject, DateTime expires)
    {
        var handler = new JsonWebTokenHandler();
        return handler.CreateToken(new SecurityTokenDescriptor
        {
            Claims = new Dictionary<string, object> { ["sub"] = subject },
            IssuedAt = expires.AddMinutes(-20),
            NotBefore = expires.AddMinutes(-20),
            Expires = expires,
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(secret)), SecurityAlgorithms.HmacSha256),
        });
    }
}
