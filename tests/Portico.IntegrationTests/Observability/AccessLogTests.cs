using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Observability;

/// <summary>
/// The real gateway's access log in JSON: with sample_rate 0 an OK request writes nothing, a proxy error is always
/// written, and the line is one JSON object whose fields are properties (trace id included).
/// </summary>
public sealed class AccessLogTests
{
    private const string TraceId = "4bf92f3577b34da6a3ce929d0e0e4736";

    [Fact]
    public async Task AccessLog_JsonSampleZero_OkRequestsSilent_ProxyErrorLoggedWithEveryField()
    {
        await using var upstream = await RecordingUpstream.StartAsync("backend");
        var dead = Ports.GetFree();
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              enabled: false
            logging:
              format: json
              sample_rate: 0.0
            upstreams:
              - name: backend
                servers: ["{upstream.Address}"]
              - name: deadpool
                max_retries: 0
                servers: ["127.0.0.1:{dead}"]
            routes:
              - name: api
                path: /api/*
                upstream: backend
              - name: dead
                path: /dead/*
                upstream: deadpool
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);
        using var client = new HttpClient(new SocketsHttpHandler { ActivityHeadersPropagator = null }) { Timeout = TimeSpan.FromSeconds(15) };
        var traceParent = $"00-{TraceId}-00f067aa0ba902b7-01";

        for (var i = 0; i < 20; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/api/ok{i}");
            if (i == 0)
            {
                request.Headers.TryAddWithoutValidation("traceparent", traceParent);
                request.Headers.TryAddWithoutValidation("tracestate", "vendor=abc");
            }
            using var ok = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        using var failing = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/dead/x?q=1");
        failing.Headers.TryAddWithoutValidation("traceparent", traceParent);
        using var failed = await client.SendAsync(failing);
        Assert.Equal(HttpStatusCode.BadGateway, failed.StatusCode);

        // Console logging is queued in order: once the 502's line is out, any OK request's line would be too.
        await gateway.WaitForOutputAsync("\"Category\":\"Portico.AccessLog\"", TimeSpan.FromSeconds(10));
        var lines = gateway.Output.Split('\n').Where(l => l.Contains("\"Category\":\"Portico.AccessLog\"", StringComparison.Ordinal)).ToList();
        var line = Assert.Single(lines);

        using var json = JsonDocument.Parse(line);
        var root = json.RootElement;
        Assert.Equal(2001, root.GetProperty("EventId").GetInt32());
        Assert.Equal("Information", root.GetProperty("LogLevel").GetString());
        Assert.Equal("GET /dead/x 502", root.GetProperty("Message").GetString());
        var time = DateTimeOffset.Parse(root.GetProperty("Timestamp").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(DateTimeOffset.UtcNow - time, TimeSpan.Zero, TimeSpan.FromMinutes(1));
        var state = root.GetProperty("State");
        Assert.Equal(failed.Headers.GetValues("X-Request-ID").Single(), state.GetProperty("request_id").GetString());
        Assert.Equal(TraceId, state.GetProperty("trace_id").GetString());
        Assert.Equal("127.0.0.1", state.GetProperty("client_ip").GetString());
        Assert.Equal("GET", state.GetProperty("method").GetString());
        Assert.Equal("/dead/x", state.GetProperty("path").GetString());
        Assert.Equal("HTTP/1.1", state.GetProperty("protocol").GetString());
        Assert.Equal(502, state.GetProperty("status").GetInt32());
        Assert.True(state.GetProperty("bytes").GetInt64() > 0);
        Assert.Equal("dead", state.GetProperty("route").GetString());
        Assert.Equal("deadpool", state.GetProperty("upstream").GetString());
        Assert.Equal($"127.0.0.1:{dead}", state.GetProperty("server").GetString());
        Assert.InRange(state.GetProperty("duration_ms").GetDouble(), 0.0, 10_000.0);
        Assert.Equal(0.0, state.GetProperty("upstream_ms").GetDouble());
        Assert.Equal(1, state.GetProperty("attempts").GetInt32());
        Assert.Equal("upstream_connect_failed", state.GetProperty("error").GetString());

        // Tracing is off here: the client's trace headers reach the upstream as sent, and none is invented.
        var first = upstream.Last("/api/ok0")!;
        Assert.Equal(traceParent, first.Header("traceparent"));
        Assert.Equal("vendor=abc", first.Header("tracestate"));
        Assert.Null(upstream.Last("/api/ok1")!.Header("traceparent"));
    }
    /// <summary>
    /// Times on the own epoll loops come from the loop's clock (read per batch of events, not per request): a request
    /// that waits on a slow upstream still shows the wait in duration_ms and upstream_ms, request after request, and
    /// the request id's UUIDv7 time is the wall clock's.
    /// </summary>
    [Fact]
    public async Task AccessLog_SlowUpstream_DurationsAndRequestIdTimeAreTheClocks()
    {
        await using var upstream = await TestUpstream.StartAsync(async context =>
        {
            await Task.Delay(300);
            await context.Response.WriteAsync("slow");
        });
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              listen_address: "127.0.0.1"
              listen_port: {port}
            admin:
              enabled: false
            logging:
              format: json
              sample_rate: 1.0
            upstreams:
              - name: backend
                servers: ["{upstream.Address}"]
            routes:
              - name: all
                path: /*
                upstream: backend
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(15) };
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            using var response = await client.GetAsync($"http://127.0.0.1:{port}/slow{i}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            ids.Add(response.Headers.GetValues("X-Request-ID").Single());
        }

        await gateway.WaitForOutputAsync("GET /slow2 200", TimeSpan.FromSeconds(10));
        var lines = gateway.Output.Split('\n').Where(l => l.Contains("\"Category\":\"Portico.AccessLog\"", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, lines.Count);
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        foreach (var line in lines)
        {
            using var json = JsonDocument.Parse(line);
            var state = json.RootElement.GetProperty("State");
            Assert.InRange(state.GetProperty("duration_ms").GetDouble(), 290.0, 10_000.0);
            Assert.InRange(state.GetProperty("upstream_ms").GetDouble(), 290.0, 10_000.0);
            Assert.Contains(state.GetProperty("request_id").GetString(), ids);
        }
        foreach (var id in ids)
        {
            // UUIDv7: the first 48 bits are Unix milliseconds.
            var milliseconds = Convert.ToInt64(id[..12], 16);
            Assert.InRange(now - milliseconds, 0, 60_000);
        }
    }
}
