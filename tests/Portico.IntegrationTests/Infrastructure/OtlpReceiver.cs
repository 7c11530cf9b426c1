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
/// A real OTLP trace receiver (the collector side of the OTLP spec): Kestrel on 127.0.0.1. OTLP/HTTP on
/// <see cref="Port"/>: <c>POST /v1/traces</c> with <c>Content-Type: application/x-protobuf</c>, the body decoded as an
/// <see cref="ExportTraceServiceRequest"/> from the published .proto files, answered with an empty
/// <see cref="ExportTraceServiceResponse"/>. OTLP/gRPC on <see cref="GrpcPort"/> (cleartext HTTP/2): the unary call
/// <c>/opentelemetry.proto.collector.trace.v1.TraceService/Export</c>, length-prefixed messages and a
/// <c>grpc-status</c> trailer (gRPC's PROTOCOL-HTTP2.md). Anything else is refused (404 / 415) and counted, so a
/// wrong path or encoding fails the test instead of passing unseen.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly ConcurrentQueue<ReceivedSpan> _spans = new();
    private readonly ConcurrentQueue<string> _refused = new();
    private WebApplication? _app;

    public int Port { get; private set; }

    /// <summary>The OTLP/gRPC port (HTTP/2 only, no TLS).</summary>
    public int GrpcPort { get; private set; }

    /// <summary>How many export calls arrived over gRPC.</summary>
    public int GrpcExports => _grpcExports;

    private int _grpcExports;

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
        receiver.Port = Ports.GetFree();
        receiver.GrpcPort = Ports.GetFree();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Loopback, receiver.Port, l => l.Protocols = HttpProtocols.Http1);
            k.Listen(IPAddress.Loopback, receiver.GrpcPort, l => l.Protocols = HttpProtocols.Http2);
        });
        var app = builder.Build();
        app.Run(receiver.HandleAsync);
        await app.StartAsync();
        receiver._app = app;
        return receiver;
    }

    private Task HandleAsync(HttpContext context) =>
        context.Request.Protocol == "HTTP/2" ? HandleGrpcAsync(context) : HandleHttpAsync(context);

    private async Task HandleGrpcAsync(HttpContext context)
    {
        var request = context.Request;
        if (!HttpMethods.IsPost(request.Method) || request.Path != "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            || request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) != true)
        {
            _refused.Enqueue($"grpc {request.Method} {request.Path} {request.ContentType}");
            context.Response.StatusCode = 404;
            return;
        }
        using var body = new MemoryStream();
        await request.Body.CopyToAsync(body, context.RequestAborted);
        var message = body.ToArray();
        // Length-Prefixed-Message: a compressed flag byte (0: none was negotiated) and a 4-byte big-endian length.
        if (message.Length < 5 || message[0] != 0 || System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(message.AsSpan(1)) != message.Length - 5)
        {
            _refused.Enqueue($"grpc framing: {message.Length} bytes");
            context.Response.StatusCode = 400;
            return;
        }
        Record(ExportTraceServiceRequest.Parser.ParseFrom(message, 5, message.Length - 5));
        Interlocked.Increment(ref _grpcExports);
        context.Response.ContentType = "application/grpc";
        var reply = new ExportTraceServiceResponse().ToByteArray();
        var framed = new byte[5 + reply.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(framed.AsSpan(1), reply.Length);
        reply.CopyTo(framed, 5);
        await context.Response.Body.WriteAsync(framed, context.RequestAborted);
        context.Response.AppendTrailer("grpc-status", "0");
    }

    private void Record(ExportTraceServiceRequest export)
    {
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
    }

    private async Task HandleHttpAsync(HttpContext context)
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
        Record(ExportTraceServiceRequest.Parser.ParseFrom(body.ToArray()));
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
