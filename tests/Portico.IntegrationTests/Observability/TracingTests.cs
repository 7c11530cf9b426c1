using System.Net;
using Portico.IntegrationTests.Infrastructure;
using Portico.IntegrationTests.Otlp;

namespace Portico.IntegrationTests.Observability;

/// <summary>
/// The real gateway traces through a real upstream and exports over OTLP/HTTP (protobuf) to a real receiver: the
/// span continues the client's trace, the upstream's parent is the gateway's span, and sampling honours the
/// client's flag and the configured rate.
/// </summary>
public sealed class TracingTests
{
    private const string ClientTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    private const string ClientSpanId = "00f067aa0ba902b7";
    private const string OtherTraceId = "5cf92f3577b34da6a3ce929d0e0e4737";
    private const string OtherSpanId = "11f067aa0ba902b8";

    /// <summary>
    /// The batch processor exports every 5 s by default; OTEL_BSP_SCHEDULE_DELAY (read by the OpenTelemetry SDK in the
    /// gateway process) makes the test wait 100 ms instead.
    /// </summary>
    private static readonly Dictionary<string, string> FastExport = new() { ["OTEL_BSP_SCHEDULE_DELAY"] = "100" };

    private static string Config(int port, string samplingRate, OtlpReceiver receiver, RecordingUpstream upstream, int deadPort, bool grpc = false) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
        admin:
          enabled: false
        monitoring:
          tracing:
            enabled: true
            sampling_rate: {samplingRate}
            otlp_endpoint: "{(grpc ? $"http://127.0.0.1:{receiver.GrpcPort}" : receiver.BaseUrl)}"
            protocol: {(grpc ? "grpc" : "http/protobuf")}
        upstreams:
          - name: backend
            servers: ["{upstream.Address}"]
          - name: deadpool
            max_retries: 0
            servers: ["127.0.0.1:{deadPort}"]
        routes:
          - name: api
            path: /api/*
            upstream: backend
          - name: dead
            path: /dead/*
            upstream: deadpool
        """;

    /// <summary>A client that adds no trace headers of its own: only what the test sets is sent.</summary>
    private static HttpClient Client() =>
        new(new SocketsHttpHandler { ActivityHeadersPropagator = null, UseProxy = false }) { Timeout = TimeSpan.FromSeconds(15) };

    private static async Task<HttpResponseMessage> GetAsync(HttpClient client, string url, string? traceParent = null, string? traceState = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (traceParent is not null)
        {
            request.Headers.TryAddWithoutValidation("traceparent", traceParent);
        }
        if (traceState is not null)
        {
            request.Headers.TryAddWithoutValidation("tracestate", traceState);
        }
        var response = await client.SendAsync(request);
        await response.Content.LoadIntoBufferAsync();
        return response;
    }

    private static ReceivedSpan SpanFor(IReadOnlyList<ReceivedSpan> spans, string path) =>
        Assert.Single(spans, s => (string?)s.Attribute("url.path") == path);

    [Fact]
    public async Task Tracing_Enabled_ExportsServerSpansOverOtlpHttp_AndUpstreamIsTheirChild()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        await using var upstream = await RecordingUpstream.StartAsync("backend");
        var dead = Ports.GetFree();
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, "1.0", receiver, upstream, dead), port, FastExport);
        using var client = Client();
        var baseUrl = $"http://127.0.0.1:{port}";

        using var continued = await GetAsync(client, baseUrl + "/api/a", $"00-{ClientTraceId}-{ClientSpanId}-01", "vendor=abc,other=1");
        using var root = await GetAsync(client, baseUrl + "/api/b");
        using var failed = await GetAsync(client, baseUrl + "/dead/c", $"00-{OtherTraceId}-{OtherSpanId}-01");

        Assert.Equal(HttpStatusCode.OK, continued.StatusCode);
        Assert.Equal(HttpStatusCode.OK, root.StatusCode);
        Assert.Equal(HttpStatusCode.BadGateway, failed.StatusCode);
        var spans = await receiver.WaitForSpansAsync(3, TimeSpan.FromSeconds(20));
        Assert.Empty(receiver.Refused);
        Assert.Equal(3, spans.Count);

        // The client's trace continues: same trace id, the client's span as parent, its tracestate kept.
        var a = SpanFor(spans, "/api/a");
        Assert.Equal(ClientTraceId, a.TraceId);
        Assert.Equal(ClientSpanId, a.ParentSpanId);
        Assert.Equal(Span.Types.SpanKind.Server, a.Span.Kind);
        Assert.Equal("GET api", a.Span.Name);
        Assert.Equal("vendor=abc,other=1", a.Span.TraceState);
        Assert.Equal(Status.Types.StatusCode.Unset, a.Span.Status?.Code ?? Status.Types.StatusCode.Unset);
        Assert.Equal("GET", a.Attribute("http.request.method"));
        Assert.Equal("api", a.Attribute("http.route"));
        Assert.Equal("127.0.0.1", a.Attribute("server.address"));
        Assert.Equal((long)port, a.Attribute("server.port"));
        Assert.Equal("backend", a.Attribute("portico.upstream"));
        Assert.Equal(upstream.Address, a.Attribute("portico.server"));
        Assert.Equal(200L, a.Attribute("http.response.status_code"));
        Assert.Equal(1L, a.Attribute("portico.attempts"));
        Assert.Equal(continued.Headers.GetValues("X-Request-ID").Single(), a.Attribute("portico.request_id"));
        Assert.Null(a.Attribute("error.type"));
        Assert.Equal("Portico", a.ScopeName);
        Assert.Equal("portico", a.ResourceAttribute("service.name"));
        Assert.True(a.Span.EndTimeUnixNano >= a.Span.StartTimeUnixNano);

        // The upstream's parent is the gateway's span, not the client's.
        var seenA = upstream.Last("/api/a")!;
        Assert.Equal($"00-{ClientTraceId}-{a.SpanId}-01", seenA.Header("traceparent"));
        Assert.Equal("vendor=abc,other=1", seenA.Header("tracestate"));

        // No traceparent from the client: the trace starts at the gateway.
        var b = SpanFor(spans, "/api/b");
        Assert.Equal("", b.ParentSpanId);
        Assert.NotEqual(ClientTraceId, b.TraceId);
        var seenB = upstream.Last("/api/b")!;
        Assert.Equal($"00-{b.TraceId}-{b.SpanId}-01", seenB.Header("traceparent"));
        Assert.Null(seenB.Header("tracestate"));

        // A proxy failure: status Error with the error code, the server that refused.
        var c = SpanFor(spans, "/dead/c");
        Assert.Equal(OtherTraceId, c.TraceId);
        Assert.Equal(OtherSpanId, c.ParentSpanId);
        Assert.Equal(Status.Types.StatusCode.Error, c.Span.Status.Code);
        Assert.Equal("upstream_connect_failed", c.Attribute("error.type"));
        Assert.Equal(502L, c.Attribute("http.response.status_code"));
        Assert.Equal("dead", c.Attribute("http.route"));
        Assert.Equal("deadpool", c.Attribute("portico.upstream"));
        Assert.Equal($"127.0.0.1:{dead}", c.Attribute("portico.server"));
        Assert.Equal(1L, c.Attribute("portico.attempts"));
    }

    [Fact]
    public async Task Tracing_RateZero_OnlyASampledParentIsTraced_OthersPassThroughUntouched()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        await using var upstream = await RecordingUpstream.StartAsync("backend");
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, "0.0", receiver, upstream, Ports.GetFree()), port, FastExport);
        using var client = Client();
        var baseUrl = $"http://127.0.0.1:{port}";

        for (var i = 0; i < 10; i++)
        {
            using var response = await GetAsync(client, $"{baseUrl}/api/root{i}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        var unsampled = $"00-{OtherTraceId}-{OtherSpanId}-00";
        using (var response = await GetAsync(client, baseUrl + "/api/unsampled", unsampled, "vendor=keep"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        using (var response = await GetAsync(client, baseUrl + "/api/sampled", $"00-{ClientTraceId}-{ClientSpanId}-01"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        // Spans are exported in the order they end: once the last request's span is in, an earlier one would be too.
        var spans = await receiver.WaitForSpansAsync(1, TimeSpan.FromSeconds(20));
        var span = Assert.Single(spans);
        Assert.Equal("/api/sampled", span.Attribute("url.path"));
        Assert.Equal(ClientTraceId, span.TraceId);
        Assert.Equal(ClientSpanId, span.ParentSpanId);
        Assert.Equal($"00-{ClientTraceId}-{span.SpanId}-01", upstream.Last("/api/sampled")!.Header("traceparent"));

        // Not traced: no header invented for a root request, the client's own passed on exactly.
        for (var i = 0; i < 10; i++)
        {
            Assert.Null(upstream.Last($"/api/root{i}")!.Header("traceparent"));
        }
        var seen = upstream.Last("/api/unsampled")!;
        Assert.Equal(unsampled, seen.Header("traceparent"));
        Assert.Equal("vendor=keep", seen.Header("tracestate"));

        // A further export cycle (the batch delay is 100 ms) brings nothing more: the unsampled requests made no span.
        await Task.Delay(500);
        Assert.Single(receiver.Spans);
        Assert.Empty(receiver.Refused);
    }

    [Fact]
    public async Task Tracing_GrpcProtocol_ExportsOverOtlpGrpc()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        await using var upstream = await RecordingUpstream.StartAsync("backend");
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, "1.0", receiver, upstream, Ports.GetFree(), grpc: true), port, FastExport);
        using var client = Client();

        using var response = await GetAsync(client, $"http://127.0.0.1:{port}/api/grpc", $"00-{ClientTraceId}-{ClientSpanId}-01");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var span = Assert.Single(await receiver.WaitForSpansAsync(1, TimeSpan.FromSeconds(20)));
        Assert.Empty(receiver.Refused);
        Assert.True(receiver.GrpcExports >= 1);
        Assert.Equal(ClientTraceId, span.TraceId);
        Assert.Equal(ClientSpanId, span.ParentSpanId);
        Assert.Equal("/api/grpc", span.Attribute("url.path"));
        Assert.Equal($"00-{ClientTraceId}-{span.SpanId}-01", upstream.Last("/api/grpc")!.Header("traceparent"));
    }
}
