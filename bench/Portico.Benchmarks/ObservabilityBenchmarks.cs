using System.Diagnostics;
using System.Net;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Portico.Config;
using Portico.Gateway;
using Portico.Observability;
using Portico.Proxy;

namespace Portico.Benchmarks;

/// <summary>
/// The per-request cost of the access log and of tracing, single-threaded. A request the access-log sample leaves
/// out, and one that is not traced (unsampled parent, or no parent at rate 0), must allocate nothing; a logged line
/// and a recorded span are measured for reference (their formatting/export happens only for those requests).
/// </summary>
[MemoryDiagnoser]
public class ObservabilityBenchmarks : IDisposable
{
    private GatewayApp _unsampledApp = null!;
    private GatewayApp _loggedApp = null!;
    private GatewayContext _unsampledContext = null!;
    private GatewayContext _loggedContext = null!;
    private ProxySession _session = null!;
    private ProxySession _unsampledParent = null!;
    private ProxySession _sampledParent = null!;
    private ILoggerFactory _loggerFactory = null!;
    private ActivityListener _listener = null!;

    [GlobalSetup]
    public void Setup()
    {
        const string Upstreams = """
            upstreams:
              - name: api
                servers: ["127.0.0.1:3001"]
            routes:
              - name: api
                path: "/api/*"
                upstream: api
            """;
        // The logged case formats the line as the console logger would, then drops it (no I/O in the measurement).
        _loggerFactory = LoggerFactory.Create(builder => builder.AddProvider(new FormattingDropProvider()));
        _unsampledApp = new GatewayApp(Compile(Upstreams + "\nlogging:\n  sample_rate: 0.0\n"), _loggerFactory, new GatewayMetrics(processMetrics: false));
        _loggedApp = new GatewayApp(Compile(Upstreams + "\nlogging:\n  sample_rate: 1.0\n  format: json\n"), _loggerFactory, new GatewayMetrics(processMetrics: false));
        _session = Session(null);
        _unsampledParent = Session("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        _sampledParent = Session("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        _unsampledContext = _unsampledApp.NewContext(_session);
        _loggedContext = _loggedApp.NewContext(_session);

        // What the OpenTelemetry SDK's listener does for Portico's source, minus the export.
        _listener = new ActivityListener
        {
            ShouldListenTo = static source => source.Name == RequestTracing.SourceName,
            Sample = static (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(_listener);
    }

    private static GatewaySnapshot Compile(string yaml) => GatewayCompiler.Compile(ConfigLoader.LoadYaml(yaml).Config!);

    private static ProxySession Session(string? traceParent)
    {
        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Loopback;
        http.Request.Method = "GET";
        http.Request.Path = "/api/x";
        http.Request.Protocol = "HTTP/1.1";
        http.Response.StatusCode = 200;
        if (traceParent is not null)
        {
            http.Request.Headers.TraceParent = traceParent;
        }
        return new ProxySession(http, "bench") { Attempts = 1, UpstreamStatus = 200, ResponseBodyBytes = 100 };
    }

    // One session stands for many requests: its arrival time is reset each time, or after a second every
    // "request" would be slow (>= 1 s), and slow requests are always logged.
    [Benchmark(Baseline = true)]
    public ValueTask LoggingPhase_NotSampled()
    {
        _session.StartTimestamp = Stopwatch.GetTimestamp();
        return _unsampledApp.LoggingAsync(_session, null, _unsampledContext);
    }

    [Benchmark]
    public ValueTask LoggingPhase_LoggedJson()
    {
        _session.StartTimestamp = Stopwatch.GetTimestamp();
        return _loggedApp.LoggingAsync(_session, null, _loggedContext);
    }

    [Benchmark]
    public Activity? Span_UnsampledParent() => RequestTracing.StartServerSpan(_unsampledParent, 1.0);

    [Benchmark]
    public Activity? Span_NoParentRateZero() => RequestTracing.StartServerSpan(_session, 0.0);

    [Benchmark]
    public void Span_SampledParent_StartAndEnd()
    {
        var span = RequestTracing.StartServerSpan(_sampledParent, 0.0)!;
        RequestTracing.EndServerSpan(span, _sampledParent, null);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _listener.Dispose();
        _loggerFactory.Dispose();
        GC.SuppressFinalize(this);
    }

    private sealed class FormattingDropProvider : ILoggerProvider, ILogger
    {
        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            // The JSON console formatter's work: the message, and every property boxed through the state's list.
            _ = formatter(state, exception);
            if (state is IReadOnlyList<KeyValuePair<string, object?>> properties)
            {
                for (var i = 0; i < properties.Count; i++)
                {
                    _ = properties[i].Value;
                }
            }
        }

        public void Dispose()
        {
        }
    }
}
