using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Google.Protobuf;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Portico.IntegrationTests.Otlp;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A real OTLP/HTTP trace receiver (the collector side of the OTLP spec's "OTLP/HTTP" section): Kestrel on
/// 127.0.0.1, <c>POST /v1/traces</c> with <c>Content-Type: application/x-protobuf</c>, the body decoded as an
/// <see cref="ExportTraceServiceRequest"/> from the published .proto files, answered with an empty
/// <see cref="ExportTraceServiceResponse"/>. Anything else is refused (404 / 415) and counted, so a wrong path or
/// encoding fails the test instead of passing unseen.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly ConcurrentQueue<ReceivedSpan> _spans = new();
    private readonly ConcurrentQueue<string> _refused = new();
    private WebApplication? _app;

    public int Port { get; private set; }

    /// <summary>The base URL a client is configured with (the exporter appends /v1/traces).</summary>
    public string BaseUrl => $"http://127.0.0.1:{Port}";

    /// <summary>Every span received so far, with its resource and scope.</summary>
    public IReadOnlyCollection<ReceivedSpan> Spans => _spans;

    /// <summary>Requests that were not a valid OTLP/HTTP protobuf trace export ("METHOD path content-type").</summary>
    public IReadOnlyCollection<string> Refused => _refused;

    public static async Task<OtlpReceiver> StartAsync()
    {
        var receiver = new OtlpReceiver();
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http1AndHttp2));
        var app = builder.Build();
        app.Run(receiver.HandleAsync);
        await app.StartAsync();
        receiver._app = app;
        receiver.Port = new Uri(app.Urls.First()).Port;
        return receiver;
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        if (!HttpMethods.IsPost(request.Method) || request.Path != "/v1/traces")
        {
            _refused.Enqueue($"{request.Method} {request.Path} {request.ContentType}");
            context.Response.StatusCode = 404;
            return;
        }
        if (request.ContentType != "application/x-protobuf")
        {
            _refused.Enqueue($"{request.Method} {request.Path} {request.ContentType}");
            context.Response.StatusCode = 415;
            return;
        }
        using var body = new MemoryStream();
        await request.Body.CopyToAsync(body, context.RequestAborted);
        var export = ExportTraceServiceRequest.Parser.ParseFrom(body.ToArray());
        foreach (var resourceSpans in export.ResourceSpans)
        {
            foreach (var scopeSpans in resourceSpans.ScopeSpans)
            {
                foreach (var span in scopeSpans.Spans)
                {
                    _spans.Enqueue(new ReceivedSpan(span, resourceSpans.Resource, scopeSpans.Scope));
                }
            }
        }
        context.Response.ContentType = "application/x-protobuf";
        await context.Response.Body.WriteAsync(new ExportTraceServiceResponse().ToByteArray(), context.RequestAborted);
    }

    /// <summary>Waits until at least <paramref name="count"/> spans arrived; returns them all.</summary>
    public async Task<IReadOnlyList<ReceivedSpan>> WaitForSpansAsync(int count, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (_spans.Count < count)
        {
            if (deadline.Elapsed > timeout)
            {
                throw new TimeoutException($"{_spans.Count} of {count} spans arrived within {timeout}; refused: [{string.Join("; ", _refused)}]");
            }
            await Task.Delay(50);
        }
        return [.. _spans];
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            await _app.StopAsync(stop.Token);
            await _app.DisposeAsync();
        }
    }
}

/// <summary>One exported span with the resource and instrumentation scope it came under.</summary>
public sealed class ReceivedSpan(Span span, Otlp.Resource? resource, InstrumentationScope? scope)
{
    public Span Span { get; } = span;

    public string TraceId => Convert.ToHexStringLower(Span.TraceId.Span);

    public string SpanId => Convert.ToHexStringLower(Span.SpanId.Span);

    /// <summary>Empty for a root span.</summary>
    public string ParentSpanId => Convert.ToHexStringLower(Span.ParentSpanId.Span);

    public string ScopeName => scope?.Name ?? "";

    /// <summary>A span attribute as a string, int64 or bool; null when absent.</summary>
    public object? Attribute(string key) => ValueOf(Span.Attributes, key);

    public object? ResourceAttribute(string key) => resource is null ? null : ValueOf(resource.Attributes, key);

    private static object? ValueOf(IEnumerable<KeyValue> attributes, string key)
    {
        foreach (var attribute in attributes)
        {
            if (attribute.Key == key)
            {
                return attribute.Value.ValueCase switch
                {
                    AnyValue.ValueOneofCase.StringValue => attribute.Value.StringValue,
                    AnyValue.ValueOneofCase.IntValue => attribute.Value.IntValue,
                    AnyValue.ValueOneofCase.BoolValue => attribute.Value.BoolValue,
                    AnyValue.ValueOneofCase.DoubleValue => attribute.Value.DoubleValue,
                    _ => attribute.Value.ToString(),
                };
            }
        }
        return null;
    }

    public override string ToString() => $"{Span.Name} trace={TraceId} span={SpanId} parent={ParentSpanId}";
}
