using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>
/// The admin API on the real gateway process: the token (401, 403, 200; config or environment; none configured),
/// redaction of secrets, upstream health, drain and enable with real traffic, reload through the API, and methods.
/// </summary>
public sealed class AdminApiTests
{
    private const string ConfigToken = "config-admin-token-4f2a9c";
    private const string JwtSecret = "jwt-secret-that-must-never-leak-0123456789";

    private static string Config(int port, int admin, string servers, string? token = ConfigToken, string extra = "") => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
        admin:
          listen_port: {admin}
        {(token is null ? "" : $"  token: \"{token}\"")}
        upstreams:
          backend:
            servers: [{servers}]
        routes:
          - name: everything
            path: "/*"
            upstream: backend
        {extra}
        """;

    private sealed class Admin(int port, string? token) : IDisposable
    {
        private readonly HttpClient _client = new() { Timeout = TimeSpan.FromSeconds(15) };

        public string Url(string path) => $"http://127.0.0.1:{port}{path}";

        public Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string? withToken = "")
        {
            var request = new HttpRequestMessage(method, Url(path));
            var bearer = withToken == "" ? token : withToken;
            if (bearer is not null)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
            }
            return _client.SendAsync(request);
        }

        public async Task<JsonElement> JsonAsync(HttpMethod method, string path, HttpStatusCode expected = HttpStatusCode.OK)
        {
            using var response = await SendAsync(method, path);
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(expected == response.StatusCode, $"{method} {path}: expected {(int)expected}, got {(int)response.StatusCode}: {body}");
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            return JsonDocument.Parse(body).RootElement.Clone();
        }

        public Task<JsonElement> GetAsync(string path) => JsonAsync(HttpMethod.Get, path);

        public void Dispose() => _client.Dispose();
    }

    [Fact]
    public async Task Api_Token_MissingIs401_WrongIs403_RightIs200_HealthStaysOpen()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{upstream.Address}\""), adminPort);
        using var admin = new Admin(adminPort, ConfigToken);

        foreach (var path in new[] { "/api/stats", "/api/config", "/api/upstreams", "/api/routes", "/api/nothing-here" })
        {
            using var missing = await admin.SendAsync(HttpMethod.Get, path, withToken: null);
            Assert.Equal(HttpStatusCode.Unauthorized, missing.StatusCode);
            Assert.Equal("Bearer", missing.Headers.WwwAuthenticate.Single().Scheme);

            using var wrong = await admin.SendAsync(HttpMethod.Get, path, withToken: ConfigToken + "x");
            Assert.Equal(HttpStatusCode.Forbidden, wrong.StatusCode);
            Assert.Empty(wrong.Headers.WwwAuthenticate);
        }
        // Refused before anything runs: a POST without the token drains nothing and reloads nothing.
        using (var refused = await admin.SendAsync(HttpMethod.Post, $"/api/upstreams/backend/servers/{upstream.Address}/drain", withToken: null))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }
        // Another scheme is not a bearer token.
        using (var basic = new HttpRequestMessage(HttpMethod.Get, admin.Url("/api/stats")))
        using (var client = new HttpClient())
        {
            basic.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String("admin:x"u8.ToArray()));
            using var response = await client.SendAsync(basic);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }

        var stats = await admin.GetAsync("/api/stats");
        Assert.Equal(1, stats.GetProperty("generation").GetInt64());
        using (var unknown = await admin.SendAsync(HttpMethod.Get, "/api/nothing-here"))
        {
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        }

        // Liveness, readiness and the dashboard page (which holds no data) need no token.
        using var open = new HttpClient();
        Assert.Equal("{\"status\":\"ok\"}\n", await open.GetStringAsync(admin.Url("/health")));
        Assert.Equal("{\"status\":\"ok\"}\n", await open.GetStringAsync(admin.Url("/healthz")));
        using (var ready = await open.GetAsync(admin.Url("/ready")))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        }
        using (var page = await open.GetAsync(admin.Url("/")))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
            Assert.Contains("script-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
            Assert.Contains("dashboard.js", await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        using (var script = await open.GetAsync(admin.Url("/dashboard.js")))
        {
            Assert.Equal(HttpStatusCode.OK, script.StatusCode);
            Assert.Equal("text/javascript", script.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task Api_NoTokenConfigured_RefusedWith403AndHowToSetOne_DashboardStillLoads()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{upstream.Address}\"", token: null), adminPort);
        using var admin = new Admin(adminPort, "anything");

        foreach (var token in new[] { null, "anything" })
        {
            using var response = await admin.SendAsync(HttpMethod.Get, "/api/stats", withToken: token);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            var message = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("message").GetString()!;
            Assert.Contains("admin.token", message, StringComparison.Ordinal);
            Assert.Contains("PORTICO_ADMIN_TOKEN", message, StringComparison.Ordinal);
        }
        using var open = new HttpClient();
        using var page = await open.GetAsync(admin.Url("/"));
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
    }

    [Fact]
    public async Task Api_EnvironmentToken_WinsOverConfigToken()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{upstream.Address}\""), adminPort,
            new Dictionary<string, string> { ["PORTICO_ADMIN_TOKEN"] = "environment-token-77" });
        using var admin = new Admin(adminPort, "environment-token-77");

        await admin.GetAsync("/api/stats");
        using var config = await admin.SendAsync(HttpMethod.Get, "/api/stats", withToken: ConfigToken);
        Assert.Equal(HttpStatusCode.Forbidden, config.StatusCode);
    }

    [Fact]
    public async Task Config_SecretsAreRedacted()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{upstream.Address}\"", extra: $"""
            auth:
              jwt_secret: "{JwtSecret}"
              session_redis_url: "redis://:redis-password-31337@127.0.0.1:6379/2"
            security:
              rate_limit:
                redis_url: "redis://cache.internal:6379/0?password=query-password-999"
              headers:
                custom_headers:
                  X-Api-Key: "header-api-key-abc"
                  X-Served-By: "portico"
            """), adminPort);
        using var admin = new Admin(adminPort, ConfigToken);

        using var response = await admin.SendAsync(HttpMethod.Get, "/api/config");
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        foreach (var secret in new[] { JwtSecret, ConfigToken, "redis-password-31337", "query-password-999", "header-api-key-abc" })
        {
            Assert.DoesNotContain(secret, text, StringComparison.Ordinal);
        }
        var config = JsonDocument.Parse(text).RootElement.GetProperty("config");
        Assert.Equal("***", config.GetProperty("auth").GetProperty("jwt_secret").GetString());
        Assert.Equal("***", config.GetProperty("admin").GetProperty("token").GetString());
        Assert.Equal("redis://***@127.0.0.1:6379/2", config.GetProperty("auth").GetProperty("session_redis_url").GetString());
        Assert.Equal("redis://cache.internal:6379/0?password=***", config.GetProperty("security").GetProperty("rate_limit").GetProperty("redis_url").GetString());
        var headers = config.GetProperty("security").GetProperty("headers").GetProperty("custom_headers");
        Assert.Equal("***", headers.GetProperty("X-Api-Key").GetString());
        Assert.Equal("portico", headers.GetProperty("X-Served-By").GetString());
        // What is not secret is all there, under the YAML key names.
        Assert.Equal(upstream.Port, config.GetProperty("upstreams")[0].GetProperty("servers")[0].GetProperty("port").GetInt32());
        Assert.Equal(adminPort, config.GetProperty("admin").GetProperty("listen_port").GetInt32());
        Assert.Equal("HS256", config.GetProperty("auth").GetProperty("jwt_algorithm").GetString());
    }

    [Fact]
    public async Task Upstreams_ListEveryServerWithItsHealth()
    {
        await using var live = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var dead = Ports.GetFree();
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              listen_port: {adminPort}
              token: "{ConfigToken}"
            upstreams:
              - name: backend
                servers:
                  - {"{"} host: 127.0.0.1, port: {live.Port}, zone: zone-a, weight: 3 {"}"}
                  - {"{"} host: 127.0.0.1, port: {dead}, zone: zone-b, backup: true {"}"}
                health_check:
                  type: tcp
                  interval_seconds: 1
                  timeout_seconds: 1
                  healthy_threshold: 1
                  unhealthy_threshold: 1
                circuit_breaker:
                  enabled: true
            """, adminPort);
        using var admin = new Admin(adminPort, ConfigToken);

        // The first TCP probe runs within about a second (interval plus jitter).
        JsonElement backend = default;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        do
        {
            backend = (await admin.GetAsync("/api/upstreams")).GetProperty("upstreams")[0];
            // Both views of the probe's result: the count is taken just before the servers are listed, so one
            // response can straddle the probe that marks the server down.
            if (!backend.GetProperty("servers")[1].GetProperty("healthy").GetBoolean() && backend.GetProperty("servers_available").GetInt32() == 1)
            {
                break;
            }
            await Task.Delay(200);
        }
        while (DateTime.UtcNow < deadline);

        Assert.Equal("backend", backend.GetProperty("name").GetString());
        Assert.Equal(1, backend.GetProperty("servers_available").GetInt32());
        Assert.Equal(2, backend.GetProperty("servers_total").GetInt32());
        Assert.True(backend.GetProperty("circuit_breaker").GetBoolean());
        var up = backend.GetProperty("servers")[0];
        Assert.Equal(live.Address, up.GetProperty("address").GetString());
        Assert.Equal("zone-a", up.GetProperty("zone").GetString());
        Assert.Equal(3, up.GetProperty("weight").GetInt32());
        Assert.False(up.GetProperty("backup").GetBoolean());
        Assert.Equal("up", up.GetProperty("state").GetString());
        Assert.True(up.GetProperty("healthy").GetBoolean());
        Assert.False(up.GetProperty("draining").GetBoolean());
        Assert.False(up.GetProperty("ejected").GetBoolean());
        Assert.Equal("closed", up.GetProperty("circuit_breaker").GetString());
        Assert.Equal(0, up.GetProperty("in_flight").GetInt32());
        var down = backend.GetProperty("servers")[1];
        Assert.Equal($"127.0.0.1:{dead}", down.GetProperty("address").GetString());
        Assert.True(down.GetProperty("backup").GetBoolean());
        Assert.Equal("down", down.GetProperty("state").GetString());
        Assert.False(down.GetProperty("healthy").GetBoolean());
        Assert.False(down.GetProperty("available").GetBoolean());

        // Traffic shows up in the server's totals and, after a second of samples, in its recent rate.
        using var client = new HttpClient();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var sent = 0;
        while (clock.Elapsed < TimeSpan.FromSeconds(2.5))
        {
            Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/x"));
            sent++;
            await Task.Delay(20);
        }
        up = (await admin.GetAsync("/api/upstreams")).GetProperty("upstreams")[0].GetProperty("servers")[0];
        Assert.Equal(sent, up.GetProperty("requests_total").GetInt64());
        Assert.True(up.GetProperty("requests_per_second").GetDouble() > 1, up.ToString());
        // A request is counted in the logging phase, which may finish just after the client has its answer.
        var stats = await admin.GetAsync("/api/stats");
        for (var i = 0; i < 50 && stats.GetProperty("upstreams")[0].GetProperty("requests_total").GetInt64() < sent; i++)
        {
            await Task.Delay(100);
            stats = await admin.GetAsync("/api/stats");
        }
        Assert.Equal(sent, stats.GetProperty("requests_total").GetInt64());
        Assert.Equal(sent, stats.GetProperty("latency").GetProperty("count").GetInt64());
        Assert.Equal(0, stats.GetProperty("errors_total").GetInt64());
        // No routes: every request went to the only upstream.
        Assert.Equal(0, stats.GetProperty("routes").GetArrayLength());
        Assert.Equal(sent, stats.GetProperty("upstreams")[0].GetProperty("requests_total").GetInt64());
        Assert.Equal(1, stats.GetProperty("upstreams")[0].GetProperty("servers_available").GetInt32());
    }

    [Fact]
    public async Task Drain_StopsTrafficToTheServer_EnableBringsItBack()
    {
        await using var a = await TestUpstream.StartAsync(c => c.Response.WriteAsync("a"));
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("b"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{a.Address}\", \"{b.Address}\""), adminPort);
        using var admin = new Admin(adminPort, ConfigToken);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        async Task SendAsync(int count)
        {
            for (var i = 0; i < count; i++)
            {
                using var response = await client.GetAsync($"http://127.0.0.1:{port}/x");
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }
        }

        await SendAsync(20);
        Assert.Equal(10, a.Requests);
        Assert.Equal(10, b.Requests);

        var drained = await admin.JsonAsync(HttpMethod.Post, $"/api/upstreams/backend/servers/{a.Address}/drain");
        Assert.True(drained.GetProperty("draining").GetBoolean());
        Assert.Equal(a.Address, drained.GetProperty("server").GetString());
        await SendAsync(20);
        Assert.Equal(10, a.Requests);
        Assert.Equal(30, b.Requests);
        var server = (await admin.GetAsync("/api/upstreams")).GetProperty("upstreams")[0].GetProperty("servers")[0];
        Assert.True(server.GetProperty("draining").GetBoolean());
        Assert.Equal("draining", server.GetProperty("state").GetString());
        Assert.False(server.GetProperty("available").GetBoolean());

        var enabled = await admin.JsonAsync(HttpMethod.Post, $"/api/upstreams/backend/servers/{a.Address}/enable");
        Assert.False(enabled.GetProperty("draining").GetBoolean());
        await SendAsync(20);
        Assert.Equal(20, a.Requests);
        Assert.Equal(40, b.Requests);

        // Names that do not exist are 404s that say what does.
        var unknown = await admin.JsonAsync(HttpMethod.Post, "/api/upstreams/backend/servers/127.0.0.1:1/drain", HttpStatusCode.NotFound);
        Assert.Contains(a.Address, unknown.GetProperty("message").GetString()!, StringComparison.Ordinal);
        await admin.JsonAsync(HttpMethod.Post, $"/api/upstreams/nope/servers/{a.Address}/drain", HttpStatusCode.NotFound);
        await gateway.WaitForOutputAsync($"server backend/{a.Address} drained", TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Reload_AppliesAChangedFile_ReportsARejectedOne()
    {
        await using var a = await TestUpstream.StartAsync(c => c.Response.WriteAsync("A"));
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("B"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{a.Address}\""), adminPort);
        using var admin = new Admin(adminPort, ConfigToken);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/";
        Assert.Equal("A", await client.GetStringAsync(url));

        await gateway.WriteConfigAsync(Config(port, adminPort, $"\"{b.Address}\""));
        var applied = await admin.JsonAsync(HttpMethod.Post, "/api/reload");
        Assert.True(applied.GetProperty("applied").GetBoolean());
        Assert.Equal(2, applied.GetProperty("generation").GetInt64());
        Assert.Equal("B", await client.GetStringAsync(url));

        await gateway.WriteConfigAsync(Config(port, adminPort, $"\"{a.Address}\"") + "\nnonsense_key: 1\n");
        var rejected = await admin.JsonAsync(HttpMethod.Post, "/api/reload", HttpStatusCode.UnprocessableEntity);
        Assert.False(rejected.GetProperty("applied").GetBoolean());
        Assert.Equal(2, rejected.GetProperty("generation").GetInt64());
        var error = rejected.GetProperty("errors").EnumerateArray().Single();
        Assert.Equal("nonsense_key", error.GetProperty("path").GetString());
        Assert.True(error.GetProperty("line").GetInt32() > 0);
        Assert.Contains("unknown key", error.GetProperty("message").GetString()!, StringComparison.Ordinal);
        Assert.Equal("B", await client.GetStringAsync(url));
        await gateway.WaitForOutputAsync("rejected", TimeSpan.FromSeconds(5));

        // The token is read from the config in force, so a reload rotates it.
        await gateway.WriteConfigAsync(Config(port, adminPort, $"\"{b.Address}\"", token: "rotated-token-2"));
        Assert.True((await admin.JsonAsync(HttpMethod.Post, "/api/reload")).GetProperty("applied").GetBoolean());
        using (var old = await admin.SendAsync(HttpMethod.Get, "/api/stats"))
        {
            Assert.Equal(HttpStatusCode.Forbidden, old.StatusCode);
        }
        using (var rotated = await admin.SendAsync(HttpMethod.Get, "/api/stats", withToken: "rotated-token-2"))
        {
            Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        }
    }

    [Fact]
    public async Task Methods_ActionsArePostOnly_ViewsAreGetOnly()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var (port, adminPort) = (Ports.GetFree(), Ports.GetFree());
        await using var gateway = await GatewayProcess.StartAsync(Config(port, adminPort, $"\"{upstream.Address}\""), adminPort);
        using var admin = new Admin(adminPort, ConfigToken);

        foreach (var path in new[] { "/api/reload", $"/api/upstreams/backend/servers/{upstream.Address}/drain", $"/api/upstreams/backend/servers/{upstream.Address}/enable" })
        {
            foreach (var method in new[] { HttpMethod.Get, HttpMethod.Put, HttpMethod.Delete })
            {
                using var response = await admin.SendAsync(method, path);
                Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
                Assert.Equal(["POST"], response.Content.Headers.Allow);
            }
        }
        foreach (var path in new[] { "/api/config", "/api/routes", "/api/upstreams", "/api/stats" })
        {
            using var response = await admin.SendAsync(HttpMethod.Post, path);
            Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
            Assert.Equal(["GET", "HEAD"], response.Content.Headers.Allow);
        }
        // A GET did not drain anything, and no reload ran.
        var upstreams = await admin.GetAsync("/api/upstreams");
        Assert.False(upstreams.GetProperty("upstreams")[0].GetProperty("servers")[0].GetProperty("draining").GetBoolean());
        Assert.Equal(1, upstreams.GetProperty("generation").GetInt64());
    }
}
