using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using Portico.Config;

namespace Portico.Observability;

/// <summary>
/// The OpenTelemetry SDK pipeline behind <c>monitoring.tracing</c>: listens to the "Portico" ActivitySource,
/// records every span Portico starts (<see cref="RequestTracing"/> already sampled), and exports them in batches
/// over OTLP. Built once at start-up; its endpoint and protocol need a restart to change.
/// </summary>
internal sealed partial class OtlpTracing : IDisposable
{
    private readonly TracerProvider _provider;
    private readonly (Uri? Endpoint, OtlpExportProtocol? Protocol) _exporter;

    private OtlpTracing(TracerProvider provider, (Uri? Endpoint, OtlpExportProtocol? Protocol) exporter)
    {
        _provider = provider;
        _exporter = exporter;
    }

    /// <summary>The OTLP/HTTP path of the trace signal, appended to a base endpoint (OTLP spec, "OTLP/HTTP Request").</summary>
    private const string TracesPath = "v1/traces";

    /// <summary>Builds the pipeline when <c>monitoring.tracing.enabled</c>; null otherwise. Logs where spans go.</summary>
    public static OtlpTracing? Start(GatewayConfig config, ILogger logger)
    {
        var tracing = config.Monitoring.Tracing;
        if (!tracing.Enabled)
        {
            return null;
        }
        var exporter = ExporterOf(config);
        var resource = ResourceBuilder.CreateDefault();
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_SERVICE_NAME")))
        {
            resource.AddService("portico", serviceVersion: RequestTracing.Source.Version);
        }
        var provider = Sdk.CreateTracerProviderBuilder()
            .SetResourceBuilder(resource)
            .AddSource(RequestTracing.SourceName)
            // RequestTracing samples before a span exists; a second ratio here would sample twice.
            .SetSampler(new AlwaysOnSampler())
            .AddOtlpExporter(options =>
            {
                if (exporter.Protocol is { } protocol)
                {
                    options.Protocol = protocol;
                }
                if (exporter.Endpoint is { } endpoint)
                {
                    options.Endpoint = endpoint;
                }
            })
            .Build();
        Log.Exporting(logger, exporter.Endpoint?.ToString() ?? "the OTEL_EXPORTER_OTLP_ENDPOINT or SDK default",
            exporter.Protocol is OtlpExportProtocol.Grpc ? "grpc" : exporter.Protocol is null ? "default" : "http/protobuf", tracing.SamplingRate);
        return new OtlpTracing(provider, exporter);
    }

    /// <summary>Flushes the spans still batched (bounded: an unreachable collector cannot hold up the exit), then stops.</summary>
    public void Dispose()
    {
        _provider.Shutdown(5000);
        _provider.Dispose();
    }

    private static (Uri? Endpoint, OtlpExportProtocol? Protocol) ExporterOf(GatewayConfig config) =>
        Resolve(config.Monitoring.Tracing.OtlpEndpoint ?? config.Logging.OtlpEndpoint, config.Monitoring.Tracing.Protocol,
            Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_PROTOCOL") is { Length: > 0 });

    /// <summary>
    /// The exporter's endpoint and protocol. Protocol: as configured, else gRPC for port 4317 (its registered port),
    /// else http/protobuf (the OTLP spec's default). For http/protobuf a base URL gets <c>/v1/traces</c> appended,
    /// as the SDK does for OTEL_EXPORTER_OTLP_ENDPOINT (and only for it: an endpoint set in code is used as is), so
    /// <c>http://collector:4318</c> works as written in the OTel docs; a URL already ending in /v1/traces is kept.
    /// No endpoint: the SDK's own (OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318), over http/protobuf unless
    /// OTEL_EXPORTER_OTLP_PROTOCOL says otherwise.
    /// </summary>
    internal static (Uri? Endpoint, OtlpExportProtocol? Protocol) Resolve(string? endpoint, string? protocol, bool protocolFromEnvironment)
    {
        Uri? uri = endpoint is null ? null : new Uri(endpoint, UriKind.Absolute);
        OtlpExportProtocol? chosen = protocol switch
        {
            "grpc" => OtlpExportProtocol.Grpc,
            "http/protobuf" => OtlpExportProtocol.HttpProtobuf,
            _ when uri is not null => uri.Port == 4317 ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf,
            _ when protocolFromEnvironment => null,
            _ => OtlpExportProtocol.HttpProtobuf,
        };
        if (uri is not null && chosen == OtlpExportProtocol.HttpProtobuf)
        {
            var path = uri.AbsolutePath.TrimEnd('/');
            if (!path.EndsWith("/" + TracesPath, StringComparison.Ordinal))
            {
                uri = new UriBuilder(uri) { Path = path + "/" + TracesPath }.Uri;
            }
        }
        return (uri, chosen);
    }

    /// <summary>
    /// A reload applies sampling_rate, and enabled: false (no new spans; true again resumes them); the exporter is
    /// built once, so switching tracing on when it started off, or changing the endpoint or protocol, waits for a
    /// restart. Says so rather than ignoring it.
    /// </summary>
    public static void OnReload(OtlpTracing? running, GatewayConfig next, ILogger logger)
    {
        if (next.Monitoring.Tracing.Enabled && (running is null || running._exporter != ExporterOf(next)))
        {
            Log.NeedsRestart(logger);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4002, Level = LogLevel.Warning,
            Message = "Reload: monitoring.tracing enabled/otlp_endpoint/protocol take effect at the next restart (sampling_rate and enabled: false apply now)")]
        public static partial void NeedsRestart(ILogger logger);

        [LoggerMessage(EventId = 4001, Level = LogLevel.Information,
            Message = "Tracing: spans exported over OTLP ({Protocol}) to {Endpoint}; requests without a sampled parent traced at rate {Rate}")]
        public static partial void Exporting(ILogger logger, string endpoint, string protocol, double rate);
    }
}
