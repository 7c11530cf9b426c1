using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Portico.Gateway;
using Portico.Observability;
using Portico.Proxy;
using static Portico.Tests.Observability.MetricsTestHelpers;

namespace Portico.Tests.Observability;

/// <summary>
/// The access log written by the gateway's logging phase: sampled, errors always, every field a property, and
/// nothing allocated for a request the sample leaves out (measured on the current thread only).
/// </summary>
public sealed class AccessLogTests : IDisposable
{
    private const int Requests = 10_000;
    private const string TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    private readonly CapturingLoggerProvider _logs = new();
    private readonly ILoggerFactory _factory;

    public AccessLogTests()
    {
        _factory = LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(LogLevel.Trace);
            builder.AddProvider(_logs);
        });
    }

    public void Dispose() => _factory.Dispose();

    private GatewayApp App(string logging) =>
        new(Snapshot(GatewayYaml + "\nlogging:\n" + logging), _factory, new GatewayMetrics(processMetrics: false));

    private IReadOnlyList<CapturedEntry> AccessLines() =>
        _logs.Entries.Where(e => e.Category == "Portico.AccessLog").ToList();

    private static void Log(GatewayApp app, ProxySession session, ProxyError? error = null)
    {
        var pending = app.LoggingAsync(session, error, app.NewContext(session));
        Assert.True(pending.IsCompletedSuccessfully);
    }

    [Fact]
    public void Logging_UnsampledRequest_WritesAndAllocatesNothing()
    {
        var app = App("  sample_rate: 0.0\n");
        var session = Session(status: 200, attempts: 1, upstreamStatus: 200, upstreamHeaderTime: TimeSpan.FromMilliseconds(2), responseBytes: 100);
        session.Request.Headers.TraceParent = TraceParent;
        var ctx = app.NewContext(session);
        Assert.True(app.LoggingAsync(session, null, ctx).IsCompletedSuccessfully);   // the metric cells are created once

        AllocationAssert.Zero(() =>
        {
            // One session stands for many requests; without this, a slow machine would make it "slow" (>= 1 s), always logged.
            session.StartTimestamp = Stopwatch.GetTimestamp();
            var pending = app.LoggingAsync(session, null, ctx);
            if (!pending.IsCompletedSuccessfully)
            {
                Assert.Fail("LoggingAsync did not complete synchronously");
            }
        }, Requests);
        Assert.Empty(AccessLines());
    }

    [Fact]
    public void Logging_ClientMistakeAtSampleZero_NotWritten()
    {
        var app = App("  sample_rate: 0.0\n");

        Log(app, Session(status: 404), new ProxyError(ProxyErrorKind.NoRoute, ProxyErrorSource.Downstream, false, "no route"));
        Log(app, Session(status: 200), new ProxyError(ProxyErrorKind.DownstreamClosed, ProxyErrorSource.Downstream, false, "client closed"));

        Assert.Empty(AccessLines());
    }

    [Fact]
    public void Logging_ProxyErrorAtSampleZero_WrittenWithEveryField()
    {
        var app = App("  sample_rate: 0.0\n  format: json\n");
        var session = Session(status: 502, attempts: 2);
        session.Request.Headers.TraceParent = TraceParent;
        var error = new ProxyError(ProxyErrorKind.ConnectRefused, ProxyErrorSource.Upstream, false, "could not connect to upstream");

        Log(app, session, error);

        var line = Assert.Single(AccessLines());
        Assert.Equal(2001, line.EventId);
        Assert.Equal(LogLevel.Information, line.Level);
        Assert.Equal("GET / 502", line.Message);
        var p = line.Properties;
        Assert.Equal("test", p["request_id"]);
        Assert.Equal("0af7651916cd43dd8448eb211c80319c", p["trace_id"]);
        Assert.Equal("127.0.0.1", p["client_ip"]);
        Assert.Equal("GET", p["method"]);
        Assert.Equal("/", p["path"]);
        Assert.Equal(502, p["status"]);
        Assert.Equal(0L, p["bytes"]);
        Assert.Equal("-", p["route"]);
        Assert.Equal("-", p["upstream"]);
        Assert.Equal("-", p["server"]);
        Assert.IsType<double>(p["duration_ms"]);
        Assert.Equal(0.0, p["upstream_ms"]);
        Assert.Equal(2, p["attempts"]);
        Assert.Equal("upstream_connect_failed", p["error"]);
        Assert.Equal(15, p.Count);
    }

    [Fact]
    public void Logging_Upstream5xxAtSampleZero_Written()
    {
        var app = App("  sample_rate: 0.0\n");

        Log(app, Session(status: 503, attempts: 1, upstreamStatus: 503));

        Assert.Equal(503, Assert.Single(AccessLines()).Properties["status"]);
    }

    [Fact]
    public void Logging_AccessLogOff_OnlyErrors()
    {
        var app = App("  access_log: false\n  sample_rate: 1.0\n");

        Log(app, Session(status: 200));
        Log(app, Session(status: 500));

        Assert.Equal(500, Assert.Single(AccessLines()).Properties["status"]);
    }

    [Fact]
    public void Logging_TextFormat_OneLineWithTheFieldsInOrder()
    {
        var app = App("  sample_rate: 1.0\n");
        var session = Session(status: 200, attempts: 1, responseBytes: 42);
        session.Request.Protocol = "HTTP/1.1";

        Log(app, session);

        var line = Assert.Single(AccessLines());
        Assert.Matches("""^test - 127\.0\.0\.1 "GET / HTTP/1\.1" 200 42 route=- upstream=- server=- duration_ms=[0-9.]+ upstream_ms=0 attempts=1 error=-$""", line.Message);
    }

    [Fact]
    public void Logging_TracedRequest_TraceIdOfTheSpan()
    {
        var app = App("  sample_rate: 1.0\n");
        var session = Session(status: 200);
        using var span = new Activity("test").SetIdFormat(ActivityIdFormat.W3C).Start();
        session.Activity = span;

        Log(app, session);

        Assert.Equal(span.TraceId.ToHexString(), Assert.Single(AccessLines()).Properties["trace_id"]);
    }

    [Fact]
    public void Logging_DefaultSampleRate_IsTheSeedsOnePercent()
    {
        Assert.Equal(0.01, new Portico.Config.LoggingConfig().SampleRate);
    }
}
