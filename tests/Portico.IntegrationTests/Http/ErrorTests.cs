using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Upstream failures through the real gateway: connect refused → 502, a silent upstream → 504 after
/// read_timeout_ms, no route → 404, and a refused server retried on the next one.
/// </summary>
public sealed class ErrorTests : IClassFixture<ErrorTests.Fixture>
{
    private readonly Fixture _fixture;

    public ErrorTests(Fixture fixture)
    {
        _fixture = fixture;
    }

    public sealed class Fixture : IAsyncLifetime
    {
        public GatewayProcess Gateway { get; private set; } = null!;

        public RecordingUpstream Working { get; private set; } = null!;

        public SilentUpstream Silent { get; private set; } = null!;

        /// <summary>A port with nothing listening (bound once, then released).</summary>
        public int DeadPort { get; private set; }

        public int Port { get; private set; }

        public string Url(string path) => $"http://127.0.0.1:{Port}{path}";

        public async Task InitializeAsync()
        {
            Working = await RecordingUpstream.StartAsync("working");
            Silent = SilentUpstream.Start();
            DeadPort = Ports.GetFree();
            Port = Ports.GetFree();
            var yaml = $"""
                server:
                  bind_address: "127.0.0.1:{Port}"
                  graceful_timeout_seconds: 1
                admin:
                  enabled: false
                upstreams:
                  dead:
                    servers: ["127.0.0.1:{DeadPort}"]
                  silent:
                    read_timeout_ms: 1000
                    servers: ["{Silent.Address}"]
                  half-dead:
                    load_balance_strategy: round_robin
                    servers: ["127.0.0.1:{DeadPort}", "{Working.Address}"]
                routes:
                  - path: "/dead/*"
                    upstream: dead
                  - path: "/silent/*"
                    upstream: silent
                  - path: "/retry/*"
                    upstream: half-dead
                """;
            Gateway = await GatewayProcess.StartAsync(yaml, Port);
        }

        public async Task DisposeAsync()
        {
            await Gateway.DisposeAsync();
            await Working.DisposeAsync();
            await Silent.DisposeAsync();
        }
    }

    [Fact]
    public async Task Forward_UpstreamRefusesConnection_Returns502WithJsonAndRequestId()
    {
        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url("/dead/x"));

        Assert.True(response.Status == 502, response.ToString() + "\n" + _fixture.Gateway.Output);
        Assert.StartsWith("application/json", response.Header("Content-Type"));
        var requestId = response.Header("X-Request-ID");
        Assert.False(string.IsNullOrEmpty(requestId));
        using var json = JsonDocument.Parse(response.Body);
        Assert.Equal(requestId, json.RootElement.GetProperty("request_id").GetString());
        Assert.Equal(502, json.RootElement.GetProperty("status").GetInt32());
        Assert.Equal("upstream_connect_failed", json.RootElement.GetProperty("error").GetString());
    }

    [Fact]
    public async Task Forward_UpstreamNeverAnswers_Returns504AfterReadTimeout()
    {
        var acceptedBefore = _fixture.Silent.Accepted;
        var clock = Stopwatch.StartNew();

        var response = await Curl.RunAsync("--max-time", "15", _fixture.Url("/silent/x"));
        clock.Stop();

        Assert.True(response.Status == 504, response.ToString() + "\n" + _fixture.Gateway.Output);
        Assert.True(_fixture.Silent.Accepted > acceptedBefore, "the request never reached the silent upstream");
        // read_timeout_ms is 1000; curl's own start-up and the 504 body add a little.
        Assert.InRange(clock.Elapsed, TimeSpan.FromMilliseconds(900), TimeSpan.FromSeconds(3.5));
        using var json = JsonDocument.Parse(response.Body);
        Assert.Equal(response.Header("X-Request-ID"), json.RootElement.GetProperty("request_id").GetString());
        Assert.Equal("upstream_timeout", json.RootElement.GetProperty("error").GetString());
    }

    [Fact]
    public async Task Forward_FirstServerRefuses_RetriedOnSecondServer()
    {
        var before = _fixture.Working.Requests;
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };

        var statuses = new List<int>();
        for (var i = 0; i < 10; i++)
        {
            using var response = await client.GetAsync(_fixture.Url($"/retry/get/{i}"));
            statuses.Add((int)response.StatusCode);
        }

        Assert.All(statuses, s => Assert.Equal(200, s));
        Assert.Equal(before + 10, _fixture.Working.Requests);
    }

    [Fact]
    public async Task Forward_FirstServerRefusesPost_BodyDeliveredToSecondServer()
    {
        _fixture.Working.Map("/retry/post", static async context =>
        {
            using var reader = new StreamReader(context.Request.Body);
            var body = await reader.ReadToEndAsync(context.RequestAborted);
            await context.Response.WriteAsync("got " + body, context.RequestAborted);
        });
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };

        for (var i = 0; i < 4; i++)
        {
            using var response = await client.PostAsync(_fixture.Url("/retry/post"), new StringContent($"payload-{i}"));
            Assert.Equal(200, (int)response.StatusCode);
            Assert.Equal($"got payload-{i}", await response.Content.ReadAsStringAsync());
        }
    }

    [Fact]
    public async Task Route_NoRouteMatches_Returns404Json()
    {
        await using var upstream = await RecordingUpstream.StartAsync("only");
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
              graceful_timeout_seconds: 1
            admin:
              enabled: false
            upstreams:
              one:
                servers: ["{upstream.Address}"]
              two:
                servers: ["{upstream.Address}"]
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);

        var response = await Curl.RunAsync("--max-time", "10", $"http://127.0.0.1:{port}/nowhere");

        Assert.True(response.Status == 404, response.ToString() + "\n" + gateway.Output);
        Assert.StartsWith("application/json", response.Header("Content-Type"));
        using var json = JsonDocument.Parse(response.Body);
        Assert.Equal(response.Header("X-Request-ID"), json.RootElement.GetProperty("request_id").GetString());
        Assert.Equal("no_route", json.RootElement.GetProperty("error").GetString());
        Assert.Equal(0, upstream.Requests);
    }
}
