using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Portico.IntegrationTests.Operations;

/// <summary>
/// The admin dashboard in a real headless Chromium against the real gateway with real upstreams and traffic: it asks
/// for the token, then shows the routes, each server's health (one server is dead), breaker states and a non-zero
/// request rate, and its Drain button drains a server through the API.
/// </summary>
public sealed class DashboardTests(ITestOutputHelper output)
{
    private const string Token = "dashboard-test-token-7c1e";
    private const int Width = 1440;

    /// <summary>
    /// Set to 1 to write the screenshot to docs/dashboard.png (after 40 s of traffic, so the charts have a history);
    /// otherwise it goes to the temp folder and the test waits only for the first data.
    /// </summary>
    private const string UpdateScreenshotVariable = "PORTICO_UPDATE_DASHBOARD_PNG";

    [ChromiumFact]
    public async Task Dashboard_AfterToken_ShowsRoutesServerHealthAndTraffic()
    {
        var updateScreenshot = Environment.GetEnvironmentVariable(UpdateScreenshotVariable) == "1";
        // Answers vary by a few milliseconds so the latency percentiles differ; /api/fail answers 500 (the error chart),
        // never twice in a row, so passive health (unhealthy_threshold: 2) does not eject the api server.
        await using var api = await TestUpstream.StartAsync(Upstream);
        await using var web1 = await TestUpstream.StartAsync(Upstream);
        await using var web2 = await TestUpstream.StartAsync(Upstream);
        var dead = Ports.GetFree();
        var port = Ports.GetFree();
        var admin = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              listen_port: {admin}
            upstreams:
              - name: api
                load_balance_strategy: round_robin
                servers: ["{api.Address}", "127.0.0.1:{dead}"]
                health_check:
                  type: tcp
                  interval_seconds: 1
                  timeout_seconds: 1
                  healthy_threshold: 1
                  unhealthy_threshold: 2
                circuit_breaker:
                  enabled: true
                  error_threshold: 0.9
                  min_requests: 1000
              - name: web
                load_balance_strategy: least_connections
                servers:
                  - host: 127.0.0.1
                    port: {web1.Port}
                    zone: eu-west-1a
                  - host: 127.0.0.1
                    port: {web2.Port}
                    zone: eu-west-1b
            routes:
              - name: api
                path: "/api/*"
                upstream: api
              - name: web
                path: "/*"
                upstream: web
              - name: hello
                path: "/hello"
                respond:
                  status: 200
                  body: "hi"
            """, port, new Dictionary<string, string> { ["PORTICO_ADMIN_TOKEN"] = Token, ["PORTICO_LOG"] = "info,Portico.AccessLog=warn" });
        await gateway.WaitForPortAsync(admin, TimeSpan.FromSeconds(30));

        using var traffic = new CancellationTokenSource();
        var load = TrafficAsync(port, traffic.Token);
        try
        {
            await using var browser = await HeadlessChromium.StartAsync(Width, 900);
            await browser.NavigateAsync($"http://127.0.0.1:{admin}/");

            // Without a token the page asks for one and shows no data.
            await browser.WaitForAsync("document.body.dataset.state === 'login'", TimeSpan.FromSeconds(10), "document.body.dataset.state");
            Assert.True((await browser.EvaluateAsync("document.getElementById('main').hidden")).GetBoolean());

            // Typed into the form as a person would; the page keeps it in sessionStorage.
            await browser.EvaluateAsync($"document.getElementById('token').value = {JsonSerializer.Serialize(Token)}; document.getElementById('connect').click()");
            var deadRow = $"document.querySelector('tr[data-server=\"127.0.0.1:{dead}\"]')";
            await browser.WaitForAsync(
                $"document.body.dataset.state === 'live' && {deadRow} && {deadRow}.dataset.state === 'down' && Number(document.getElementById('kpi-rps').dataset.value) > 0",
                TimeSpan.FromSeconds(30),
                $"JSON.stringify({{state: document.body.dataset.state, dead: {deadRow} && {deadRow}.dataset.state, rps: document.getElementById('kpi-rps').dataset.value, notice: document.getElementById('notice').textContent}})");
            Assert.Equal(Token, (await browser.EvaluateAsync("sessionStorage.getItem('portico.adminToken')")).GetString());

            var routes = await browser.EvaluateAsync("[...document.querySelectorAll('#routes tbody tr')].map(r => r.dataset.route)");
            Assert.Equal(["api", "web", "hello"], routes.EnumerateArray().Select(r => r.GetString()));
            var servers = await browser.EvaluateAsync(
                "Object.fromEntries([...document.querySelectorAll('tr[data-server]')].map(r => [r.dataset.upstream + '/' + r.dataset.server, r.dataset.state]))");
            Assert.Equal("up", servers.GetProperty($"api/{api.Address}").GetString());
            Assert.Equal("down", servers.GetProperty($"api/127.0.0.1:{dead}").GetString());
            Assert.Equal("up", servers.GetProperty($"web/{web1.Address}").GetString());
            Assert.Equal("up", servers.GetProperty($"web/{web2.Address}").GetString());
            var text = (await browser.EvaluateAsync("document.getElementById('main').innerText")).GetString()!;
            Assert.Contains("closed", text, StringComparison.Ordinal);          // api's breakers
            Assert.Contains("eu-west-1a", text, StringComparison.Ordinal);
            Assert.Contains("1/2 available", text, StringComparison.Ordinal);   // api: the dead server is out
            // Every upstream still has a server to send to.
            Assert.Equal("ready", (await browser.EvaluateAsync("document.getElementById('ready').textContent")).GetString());
            var rps = double.Parse((await browser.EvaluateAsync("document.getElementById('kpi-rps').dataset.value")).GetString()!, System.Globalization.CultureInfo.InvariantCulture);
            output.WriteLine($"dashboard shows {rps:0.0} req/s; rows: {servers}");
            Assert.True(rps > 0);

            // The Drain button goes through the API: the row turns to draining and offers Enable.
            await browser.EvaluateAsync($"document.querySelector('tr[data-server=\"{web2.Address}\"] button').click()");
            await browser.WaitForAsync($"document.querySelector('tr[data-server=\"{web2.Address}\"]').dataset.state === 'draining'", TimeSpan.FromSeconds(10));
            Assert.Equal("Enable", (await browser.EvaluateAsync($"document.querySelector('tr[data-server=\"{web2.Address}\"] button').textContent")).GetString());
            using (var client = new HttpClient())
            {
                client.DefaultRequestHeaders.Authorization = new("Bearer", Token);
                var upstreams = JsonDocument.Parse(await client.GetStringAsync($"http://127.0.0.1:{admin}/api/upstreams")).RootElement;
                var web = upstreams.GetProperty("upstreams").EnumerateArray().Single(u => u.GetProperty("name").GetString() == "web");
                Assert.True(web.GetProperty("servers")[1].GetProperty("draining").GetBoolean());
            }

            if (updateScreenshot)
            {
                // A history for the charts: the traffic loop varies its rate over time.
                await Task.Delay(TimeSpan.FromSeconds(40));
            }
            var latency = (await browser.EvaluateAsync("document.getElementById('kpi-latency').textContent")).GetString();
            Assert.Contains("ms", latency, StringComparison.Ordinal);
            var png = await browser.ScreenshotAsync(Width);
            Assert.True(png.Length > 10_000 && png[0] == 0x89 && png[1] == (byte)'P', "not a PNG screenshot");
            var path = updateScreenshot
                ? Path.Combine(RepositoryRoot.Path, "docs", "dashboard.png")
                : Path.Combine(Path.GetTempPath(), $"portico-dashboard-{Environment.ProcessId}.png");
            await File.WriteAllBytesAsync(path, png);
            output.WriteLine($"screenshot: {path} ({png.Length} bytes)");
            // The percentile maths on known buckets (bounds 1, 10, 100 ms), as Prometheus' histogram_quantile answers.
            var quantiles = await browser.EvaluateAsync("""
                (() => {
                  const q = window.porticoDashboard.quantile, b = [0.001, 0.01, 0.1];
                  const older = [10, 20, 20, 20], newer = [60, 110, 120, 120];
                  return [q(0.5, older, newer, b), q(0.9, older, newer, b), q(0.95, older, newer, b), q(0.99, older, newer, b),
                          q(0.5, [0, 0, 0, 0], [0, 0, 0, 10], b), q(0.5, newer, newer, b)];
                })()
                """);
            double?[] expected = [0.001, 0.01, 0.055, 0.091, 0.1, null];
            var actual = quantiles.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.Null ? (double?)null : v.GetDouble()).ToArray();
            Assert.Equal(expected.Length, actual.Length);
            for (var i = 0; i < expected.Length; i++)
            {
                Assert.True(expected[i] is null ? actual[i] is null : actual[i] is { } value && Math.Abs(value - expected[i]!.Value) < 1e-9,
                    $"quantile case {i}: expected {expected[i]}, got {actual[i]}");
            }
            Assert.True(browser.Problems.Count == 0, "the page reported problems:\n" + string.Join('\n', browser.Problems));
        }
        finally
        {
            await traffic.CancelAsync();
            await load;
        }
    }

    [ChromiumFact]
    public async Task Dashboard_NoTokenConfigured_SaysHowToSetOne()
    {
        await using var upstream = await TestUpstream.StartAsync(Upstream);
        var port = Ports.GetFree();
        var admin = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync($"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              listen_port: {admin}
            upstreams:
              backend:
                servers: ["{upstream.Address}"]
            """, port);
        await gateway.WaitForPortAsync(admin, TimeSpan.FromSeconds(30));
        await using var browser = await HeadlessChromium.StartAsync(Width, 900);
        await browser.NavigateAsync($"http://127.0.0.1:{admin}/");

        await browser.WaitForAsync("document.getElementById('login-error').textContent.includes('PORTICO_ADMIN_TOKEN')", TimeSpan.FromSeconds(10),
            "document.getElementById('login-error').textContent");
        Assert.Contains("admin.token", (await browser.EvaluateAsync("document.getElementById('login-error').textContent")).GetString()!, StringComparison.Ordinal);
        Assert.Equal("login", (await browser.EvaluateAsync("document.body.dataset.state")).GetString());
    }

    private static async Task Upstream(HttpContext context)
    {
        if (context.Request.Path.StartsWithSegments("/api/fail"))
        {
            context.Response.StatusCode = 500;
            return;
        }
        await Task.Delay(Random.Shared.Next(0, 12));
        await context.Response.WriteAsync("ok");
    }

    /// <summary>Requests on every route until cancelled, at a rate that rises and falls (so the charts have a shape).</summary>
    private static async Task TrafficAsync(int port, CancellationToken cancellationToken)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        string[] paths = ["/api/users", "/", "/hello", "/api/orders", "/static/app.js", "/api/fail"];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; !cancellationToken.IsCancellationRequested; i++)
        {
            var path = i % 25 == 0 ? "/api/fail" : paths[i % (paths.Length - 1)];
            try
            {
                using var response = await client.GetAsync($"http://127.0.0.1:{port}{path}", cancellationToken);
            }
            catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException)
            {
            }
            var wave = 1 + Math.Sin(clock.Elapsed.TotalSeconds / 6);
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(8 + 20 * wave), cancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }
}
