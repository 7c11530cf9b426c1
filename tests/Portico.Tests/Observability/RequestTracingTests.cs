using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Exporter;
using Portico.Observability;
using Portico.Proxy;

namespace Portico.Tests.Observability;

/// <summary>
/// The per-request tracing decisions: parent-based sampling, the parent a span gets, its attributes, and that a
/// request that is not sampled allocates nothing (measured on the current thread, so parallel tests do not disturb it).
/// </summary>
public sealed class RequestTracingTests : IDisposable
{
    private const string ClientTraceId = "0af7651916cd43dd8448eb211c80319c";
    private const string ClientSpanId = "b7ad6b7169203331";
    private const string Sampled = $"00-{ClientTraceId}-{ClientSpanId}-01";
    private const string NotSampled = $"00-{ClientTraceId}-{ClientSpanId}-00";
    private const int Requests = 10_000;

    private readonly ActivityListener _listener = new()
    {
        ShouldListenTo = static source => source.Name == RequestTracing.SourceName,
        Sample = static (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
    };

    public RequestTracingTests()
    {
        ActivitySource.AddActivityListener(_listener);
    }

    public void Dispose() => _listener.Dispose();

    private static ProxySession Session(string? traceParent = null, string? traceState = null)
    {
        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Parse("::ffff:192.0.2.7");
        http.Connection.LocalPort = 8080;
        http.Request.Method = "POST";
        http.Request.Path = "/api/orders";
        http.Request.Host = new HostString("shop.example");
        http.Request.Protocol = "HTTP/1.1";
        if (traceParent is not null)
        {
            http.Request.Headers.TraceParent = traceParent;
        }
        if (traceState is not null)
        {
            http.Request.Headers.TraceState = traceState;
        }
        return new ProxySession(http, "req-1");
    }

    [Theory]
    [InlineData(Sampled, true)]
    [InlineData(NotSampled, false)]
    [InlineData($"00-{ClientTraceId}-{ClientSpanId}-03", true)]
    [InlineData($"00-{ClientTraceId}-{ClientSpanId}-02", false)]
    [InlineData($"01-{ClientTraceId}-{ClientSpanId}-01-future", true)]
    [InlineData($"00-{ClientTraceId}-{ClientSpanId}-0A", null)]
    [InlineData($"ff-{ClientTraceId}-{ClientSpanId}-01", null)]
    [InlineData($"00-{ClientTraceId}-{ClientSpanId}-01x", null)]
    [InlineData($"00-{ClientTraceId}-{ClientSpanId}", null)]
    [InlineData("garbage", null)]
    public void SampledFlag_ReadsTheFlagsOfAWellShapedTraceparent(string traceParent, bool? expected)
    {
        Assert.Equal(expected, RequestTracing.SampledFlag(traceParent));
    }

    [Fact]
    public void StartServerSpan_UnsampledParent_NoSpanAndNothingAllocated()
    {
        var session = Session(NotSampled, "vendor=x");
        Assert.Null(RequestTracing.StartServerSpan(session, 1.0));

        AllocationAssert.Zero(() => RequestTracing.StartServerSpan(session, 1.0), Requests);
    }

    [Fact]
    public void StartServerSpan_NoParentAndRateZero_NoSpanAndNothingAllocated()
    {
        var session = Session();
        Assert.Null(RequestTracing.StartServerSpan(session, 0.0));

        AllocationAssert.Zero(() => RequestTracing.StartServerSpan(session, 0.0), Requests);
    }

    [Fact]
    public void StartServerSpan_SampledParentAndRateZero_ChildOfTheClientsSpanWithItsTraceState()
    {
        var session = Session(Sampled, "vendor=x,other=y");

        using var span = RequestTracing.StartServerSpan(session, 0.0);

        Assert.NotNull(span);
        Assert.Equal(ActivityKind.Server, span.Kind);
        Assert.Equal(ClientTraceId, span.TraceId.ToHexString());
        Assert.Equal(ClientSpanId, span.ParentSpanId.ToHexString());
        Assert.True(span.HasRemoteParent);
        Assert.True(span.Recorded);
        Assert.Equal("vendor=x,other=y", span.TraceStateString);
        Assert.Equal($"00-{ClientTraceId}-{span.SpanId.ToHexString()}-01", span.Id);
        Assert.Equal("POST", span.GetTagItem("http.request.method"));
        Assert.Equal("/api/orders", span.GetTagItem("url.path"));
        Assert.Equal("http", span.GetTagItem("url.scheme"));
        Assert.Equal("shop.example", span.GetTagItem("server.address"));
        Assert.Equal(8080, span.GetTagItem("server.port"));
        Assert.Equal("192.0.2.7", span.GetTagItem("client.address"));
        Assert.Equal("1.1", span.GetTagItem("network.protocol.version"));
        Assert.Equal("req-1", span.GetTagItem("portico.request_id"));
    }

    [Fact]
    public void StartServerSpan_NoParentAndRateOne_RootSpanEvenUnderAnUnrecordedHostActivity()
    {
        // What ASP.NET Core's hosting creates when only its logs want an activity: not exported, so no parent.
        using var host = new Activity("Microsoft.AspNetCore.Hosting.HttpRequestIn").Start();

        using var span = RequestTracing.StartServerSpan(Session(), 1.0);

        Assert.NotNull(span);
        Assert.Equal(default, span.ParentSpanId);
        Assert.NotEqual(host.TraceId, span.TraceId);
        Assert.Null(span.TraceStateString);
    }

    [Fact]
    public void StartServerSpan_MalformedParentAndRateOne_RestartsTheTrace()
    {
        using var span = RequestTracing.StartServerSpan(Session($"00-{ClientTraceId}-{ClientSpanId}-0X", "vendor=x"), 1.0);

        Assert.NotNull(span);
        Assert.Equal(default, span.ParentSpanId);
        Assert.NotEqual(ClientTraceId, span.TraceId.ToHexString());
        Assert.Null(span.TraceStateString);
    }

    [Fact]
    public void EndServerSpan_UpstreamFailure_StatusErrorWithCodeAttemptsAndServer()
    {
        var session = Session(Sampled);
        var span = RequestTracing.StartServerSpan(session, 1.0)!;
        session.Attempts = 2;
        session.Peer = UpstreamPeer.Create("127.0.0.1", 3001);
        session.Response.StatusCode = 502;
        var error = new ProxyError(ProxyErrorKind.ConnectRefused, ProxyErrorSource.Upstream, true, "could not connect to upstream");

        RequestTracing.EndServerSpan(span, session, error);

        Assert.True(span.IsStopped);
        Assert.Equal(ActivityStatusCode.Error, span.Status);
        Assert.Equal("could not connect to upstream", span.StatusDescription);
        Assert.Equal(502, span.GetTagItem("http.response.status_code"));
        Assert.Equal("upstream_connect_failed", span.GetTagItem("error.type"));
        Assert.Equal(2, span.GetTagItem("portico.attempts"));
        Assert.Equal("127.0.0.1:3001", span.GetTagItem("portico.server"));
    }

    [Theory]
    [InlineData(200, ActivityStatusCode.Unset, null)]
    [InlineData(404, ActivityStatusCode.Unset, null)]
    [InlineData(503, ActivityStatusCode.Error, "503")]
    public void EndServerSpan_UpstreamAnswer_ErrorOnlyFor5xx(int status, ActivityStatusCode expected, string? errorType)
    {
        var session = Session();
        var span = RequestTracing.StartServerSpan(session, 1.0)!;
        session.Response.StatusCode = status;

        RequestTracing.EndServerSpan(span, session, null);

        Assert.Equal(expected, span.Status);
        Assert.Equal(status, span.GetTagItem("http.response.status_code"));
        Assert.Equal(errorType, span.GetTagItem("error.type"));
    }

    [Fact]
    public void EndServerSpan_ClientMistake_CodeRecordedStatusUnset()
    {
        var session = Session();
        var span = RequestTracing.StartServerSpan(session, 1.0)!;
        session.Response.StatusCode = 404;

        RequestTracing.EndServerSpan(span, session, new ProxyError(ProxyErrorKind.NoRoute, ProxyErrorSource.Downstream, false, "no route"));

        Assert.Equal(ActivityStatusCode.Unset, span.Status);
        Assert.Equal("no_route", span.GetTagItem("error.type"));
    }

    [Theory]
    [InlineData("http://127.0.0.1:4318", null, "http://127.0.0.1:4318/v1/traces", OtlpExportProtocol.HttpProtobuf)]
    [InlineData("http://collector:4318/", null, "http://collector:4318/v1/traces", OtlpExportProtocol.HttpProtobuf)]
    [InlineData("https://collector/otlp", null, "https://collector/otlp/v1/traces", OtlpExportProtocol.HttpProtobuf)]
    [InlineData("http://collector:4318/v1/traces", null, "http://collector:4318/v1/traces", OtlpExportProtocol.HttpProtobuf)]
    [InlineData("http://collector:4317", null, "http://collector:4317/", OtlpExportProtocol.Grpc)]
    [InlineData("http://collector:9000", "grpc", "http://collector:9000/", OtlpExportProtocol.Grpc)]
    [InlineData("http://collector:4317", "http/protobuf", "http://collector:4317/v1/traces", OtlpExportProtocol.HttpProtobuf)]
    public void ResolveExporter_BaseUrlGetsTheTracesPathForHttp(string endpoint, string? protocol, string expected, OtlpExportProtocol expectedProtocol)
    {
        var (uri, chosen) = OtlpTracing.Resolve(endpoint, protocol, protocolFromEnvironment: false);

        Assert.Equal(expected, uri!.ToString());
        Assert.Equal(expectedProtocol, chosen);
    }

    [Fact]
    public void ResolveExporter_NoEndpoint_SdkDefaultOverHttpUnlessTheEnvironmentNamesAProtocol()
    {
        Assert.Equal((null, OtlpExportProtocol.HttpProtobuf), OtlpTracing.Resolve(null, null, protocolFromEnvironment: false));
        Assert.Equal((null, null), OtlpTracing.Resolve(null, null, protocolFromEnvironment: true));
    }

    [Fact]
    public void OnReload_TracingSwitchedOnOrExporterChanged_WarnsThatARestartIsNeeded()
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        var logger = factory.CreateLogger("Portico");
        var off = Config("monitoring:\n  tracing:\n    enabled: false\n");
        var on = Config("monitoring:\n  tracing:\n    enabled: true\n    otlp_endpoint: \"http://127.0.0.1:1\"\n");
        var onElsewhere = Config("monitoring:\n  tracing:\n    enabled: true\n    otlp_endpoint: \"http://127.0.0.1:2\"\n");
        var onOtherRate = Config("monitoring:\n  tracing:\n    enabled: true\n    sampling_rate: 0.5\n    otlp_endpoint: \"http://127.0.0.1:1\"\n");
        using var running = OtlpTracing.Start(on, logger)!;

        OtlpTracing.OnReload(null, on, logger);          // started off: the exporter does not exist
        OtlpTracing.OnReload(running, onElsewhere, logger);
        Assert.Equal(2, logs.Entries.Count(e => e.EventId == 4002));

        OtlpTracing.OnReload(null, off, logger);
        OtlpTracing.OnReload(running, off, logger);
        OtlpTracing.OnReload(running, onOtherRate, logger);
        Assert.Equal(2, logs.Entries.Count(e => e.EventId == 4002));
        Assert.Single(logs.Entries, e => e.EventId == 4001 && e.Message.Contains("http://127.0.0.1:1/v1/traces", StringComparison.Ordinal));
    }

    private static Portico.Config.GatewayConfig Config(string yaml) =>
        MetricsTestHelpers.Config("upstreams:\n  - name: a\n    servers: [\"10.0.0.1:80\"]\n" + yaml);
}
