using System.Diagnostics;
using System.Globalization;
using Portico.Proxy;

namespace Portico.Observability;

/// <summary>
/// Distributed tracing of proxied requests: the <c>"Portico"</c> <see cref="ActivitySource"/>, and the W3C Trace
/// Context decisions (https://www.w3.org/TR/trace-context/) the runner makes once per request: whether to trace it,
/// under which parent, and the attributes of its server span.
/// </summary>
/// <remarks>
/// <para>
/// Sampling is parent-based: a client's traceparent with the sampled flag is always traced, one without it never
/// is, and a request with no (valid) traceparent is traced with probability <c>rootSamplingRate</c>. The decision is
/// made here, before an <see cref="Activity"/> exists, so an unsampled request allocates nothing. It may seem simpler
/// to hand OpenTelemetry's <c>ParentBasedSampler(TraceIdRatioBasedSampler)</c> to the SDK, but the SDK answers "drop"
/// for a root or remote-parent span with <see cref="ActivitySamplingResult.PropagationData"/>: every unsampled request
/// would still get an Activity (and its ids). The SDK therefore samples everything Portico starts.
/// </para>
/// <para>
/// Upstream propagation is the forwarder's job (<c>HttpForwarder.CopyRequestHeaders</c>): with a span, the client's
/// traceparent is replaced by the span's own (so the upstream's span is its child) and the tracestate continues;
/// without one, both headers pass through as the client sent them.
/// </para>
/// </remarks>
public static class RequestTracing
{
    /// <summary>The name of the <see cref="ActivitySource"/>: what a TracerProvider must listen to (<c>AddSource("Portico")</c>).</summary>
    public const string SourceName = "Portico";

    /// <summary>Where the server spans come from; nothing is created unless something listens to it.</summary>
    public static ActivitySource Source { get; } = new(SourceName, typeof(RequestTracing).Assembly.GetName().Version?.ToString(3));

    // Attribute names: OpenTelemetry HTTP semantic conventions (stable since v1.23) and Portico's own.
    internal const string MethodTag = "http.request.method";
    internal const string PathTag = "url.path";
    internal const string SchemeTag = "url.scheme";
    internal const string RouteTag = "http.route";
    internal const string ServerAddressTag = "server.address";
    internal const string ServerPortTag = "server.port";
    internal const string ClientAddressTag = "client.address";
    internal const string ProtocolVersionTag = "network.protocol.version";
    internal const string StatusCodeTag = "http.response.status_code";
    internal const string ErrorTypeTag = "error.type";
    internal const string RequestIdTag = "portico.request_id";
    internal const string UpstreamTag = "portico.upstream";
    internal const string UpstreamServerTag = "portico.server";
    internal const string AttemptsTag = "portico.attempts";

    /// <summary>Length of a version-00 traceparent: "00-" 32 hex "-" 16 hex "-" 2 hex.</summary>
    private const int TraceParentLength = 55;

    /// <summary>
    /// Starts the server span of <paramref name="session"/> when the request is sampled; null otherwise (nothing is
    /// allocated then). Call only when <see cref="Source"/> has listeners.
    /// </summary>
    /// <param name="session">The request, its session just created.</param>
    /// <param name="rootSamplingRate">Probability (0..1) of tracing a request that has no valid traceparent.</param>
    internal static Activity? StartServerSpan(ProxySession session, double rootSamplingRate)
    {
        var headers = session.Request.Headers;
        ActivityContext parent = default;
        var current = Activity.Current;
        if (current is { Recorded: true })
        {
            // The host already records a span for this request (ASP.NET Core instrumentation in a library user's
            // app): nest under it rather than beside it; it made the sampling decision.
            parent = current.Context;
        }
        else
        {
            var traceParent = headers.TraceParent;
            // W3C §3.2: several traceparent values make the header invalid; the trace restarts here.
            if (traceParent.Count == 1 && traceParent[0] is { } value && SampledFlag(value) is { } sampled)
            {
                if (!sampled)
                {
                    // The caller decided not to record this trace; honour it, and let its headers pass through.
                    return null;
                }
                var traceState = headers.TraceState;
                ActivityContext.TryParse(value, traceState.Count == 0 ? null : traceState.ToString(), isRemote: true, out parent);
            }
            if (parent == default && !SampleRoot(rootSamplingRate))
            {
                return null;
            }
            if (current is not null)
            {
                // An unrecorded host activity (ASP.NET Core makes one when its hosting logs are on) is not exported,
                // so a span under it would point at a parent no backend has. This flow only.
                Activity.Current = null;
            }
        }

        var request = session.Request;
        var span = Source.StartActivity(request.Method, ActivityKind.Server, parent);
        if (span is null || !span.IsAllDataRequested)
        {
            return span;
        }
        var context = session.HttpContext;
        span.SetTag(MethodTag, request.Method);
        span.SetTag(PathTag, request.PathBase.HasValue ? request.PathBase.Add(request.Path).Value : request.Path.Value);
        span.SetTag(SchemeTag, HttpForwarder.DownstreamScheme(context));
        var host = request.Host;
        if (host.HasValue)
        {
            span.SetTag(ServerAddressTag, host.Host);
        }
        span.SetTag(ServerPortTag, host.Port ?? context.Connection.LocalPort);
        span.SetTag(ClientAddressTag, (session.ClientAddress.IsIPv4MappedToIPv6 ? session.ClientAddress.MapToIPv4() : session.ClientAddress).ToString());
        span.SetTag(ProtocolVersionTag, ProtocolVersion(request.Protocol));
        span.SetTag(RequestIdTag, session.RequestId);
        return span;
    }

    /// <summary>
    /// Records the outcome on <paramref name="span"/> and ends it. Status Error for a 5xx answer and for failures
    /// of the upstream or of Portico; a client's own mistakes (no route, bad request) and a client that went away
    /// keep status Unset, as the HTTP conventions ask of server spans for 4xx.
    /// </summary>
    internal static void EndServerSpan(Activity span, ProxySession session, ProxyError? error)
    {
        if (span.IsAllDataRequested)
        {
            var response = session.Response;
            var answered = error is not { Kind: ProxyErrorKind.DownstreamClosed } || response.HasStarted;
            var status = response.StatusCode;
            if (answered)
            {
                span.SetTag(StatusCodeTag, status);
            }
            span.SetTag(AttemptsTag, session.Attempts);
            if (session.Peer is { } peer)
            {
                if (peer.UpstreamName is { } upstream)
                {
                    span.SetTag(UpstreamTag, upstream);
                }
                span.SetTag(UpstreamServerTag, peer.Server.Authority);
            }
            if (error is not null)
            {
                span.SetTag(ErrorTypeTag, error.Code);
                if (error.Source != ProxyErrorSource.Downstream || (answered && status >= 500))
                {
                    span.SetStatus(ActivityStatusCode.Error, error.Message);
                }
            }
            else if (answered && status >= 500)
            {
                // HTTP conventions: error.type is the status code when nothing more specific is known.
                span.SetTag(ErrorTypeTag, status.ToString(CultureInfo.InvariantCulture));
                span.SetStatus(ActivityStatusCode.Error);
            }
        }
        span.Stop();
    }

    /// <summary>
    /// The sampled bit of a traceparent (W3C §3.2.2.5), or null when the value is not shaped like one. Reads the
    /// flags without parsing the ids, so an unsampled parent costs no allocation; a sampled one is fully parsed by
    /// <see cref="ActivityContext.TryParse(string, string, bool, out ActivityContext)"/>.
    /// </summary>
    internal static bool? SampledFlag(string traceParent)
    {
        // Version ff is invalid; a later version may be longer, with a '-' after the flags (§3.2.4).
        if (traceParent.Length < TraceParentLength || traceParent[2] != '-' || traceParent[35] != '-' || traceParent[52] != '-'
            || (traceParent.Length > TraceParentLength && traceParent[TraceParentLength] != '-')
            || traceParent.StartsWith("ff", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }
        var low = HexValue(traceParent[54]);
        if (HexValue(traceParent[53]) < 0 || low < 0)
        {
            return null;
        }
        return (low & 1) != 0;
    }

    /// <summary>The trace id of a well-shaped traceparent (characters 3..34), or null.</summary>
    internal static string? TraceIdOf(string traceParent) =>
        SampledFlag(traceParent) is null ? null : traceParent.Substring(3, 32);

    private static bool SampleRoot(double rate) => rate >= 1.0 || (rate > 0 && Random.Shared.NextDouble() < rate);

    private static int HexValue(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        _ => -1,
    };

    private static string ProtocolVersion(string protocol) => protocol switch
    {
        "HTTP/2" => "2",
        "HTTP/3" => "3",
        "HTTP/1.0" => "1.0",
        _ => "1.1",
    };
}
