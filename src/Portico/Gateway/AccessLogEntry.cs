using System.Collections;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Portico.Gateway;

/// <summary>
/// One access-log line as structured log state: each field is a named property (snake_case, so a JSON line reads
/// <c>"State":{"request_id":"…","status":502,…}</c>), and the text line is built only when a formatter asks.
/// </summary>
/// <remarks>
/// It may seem simpler to use a <c>[LoggerMessage]</c> template, but its property names are the template's
/// placeholders (PascalCase parameters), and the JSON formatter then repeats the whole text line in two places. The
/// JSON form carries a short message instead (method, path, status); every field is a property.
/// Created only for a request that is logged: an unsampled request builds nothing.
/// </remarks>
internal readonly struct AccessLogEntry : IReadOnlyList<KeyValuePair<string, object?>>
{
    /// <summary>The access log's event id (category <c>Portico.AccessLog</c>).</summary>
    public static readonly EventId EventId = new(2001, "Access");

    /// <summary>The formatter handed to <see cref="ILogger.Log{TState}"/>.</summary>
    public static readonly Func<AccessLogEntry, Exception?, string> Format = static (entry, _) => entry.ToString();

    public AccessLogEntry(string requestId, string traceId, string clientIp, string method, string path, string protocol,
        int status, long bytes, string route, string upstream, string server, double durationMs, double upstreamMs,
        int attempts, string error, bool shortMessage)
    {
        RequestId = requestId;
        TraceId = traceId;
        ClientIp = clientIp;
        Method = method;
        Path = path;
        Protocol = protocol;
        Status = status;
        Bytes = bytes;
        Route = route;
        Upstream = upstream;
        Server = server;
        DurationMs = Math.Round(durationMs, 3);
        UpstreamMs = Math.Round(upstreamMs, 3);
        Attempts = attempts;
        Error = error;
        ShortMessage = shortMessage;
    }

    public string RequestId { get; }
    /// <summary>The trace id (32 hex digits) of the request's span or of the client's traceparent; "-" when neither.</summary>
    public string TraceId { get; }
    public string ClientIp { get; }
    public string Method { get; }
    public string Path { get; }
    public string Protocol { get; }
    public int Status { get; }
    /// <summary>Response body bytes sent to the client.</summary>
    public long Bytes { get; }
    public string Route { get; }
    public string Upstream { get; }
    public string Server { get; }
    /// <summary>From arrival to the end of the response, in milliseconds.</summary>
    public double DurationMs { get; }
    /// <summary>Until the upstream's response headers arrived (last attempt), in milliseconds; 0 when none did.</summary>
    public double UpstreamMs { get; }
    public int Attempts { get; }
    public string Error { get; }
    /// <summary>True for the JSON format: the message is "GET /path 200", the fields are properties.</summary>
    public bool ShortMessage { get; }

    public int Count => 15;

    public KeyValuePair<string, object?> this[int index] => index switch
    {
        0 => new("request_id", RequestId),
        1 => new("trace_id", TraceId),
        2 => new("client_ip", ClientIp),
        3 => new("method", Method),
        4 => new("path", Path),
        5 => new("protocol", Protocol),
        6 => new("status", Status),
        7 => new("bytes", Bytes),
        8 => new("route", Route),
        9 => new("upstream", Upstream),
        10 => new("server", Server),
        11 => new("duration_ms", DurationMs),
        12 => new("upstream_ms", UpstreamMs),
        13 => new("attempts", Attempts),
        14 => new("error", Error),
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
    {
        var items = new KeyValuePair<string, object?>[Count];
        for (var i = 0; i < items.Length; i++)
        {
            items[i] = this[i];
        }
        return ((IEnumerable<KeyValuePair<string, object?>>)items).GetEnumerator();
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public override string ToString() => ShortMessage
        ? string.Create(CultureInfo.InvariantCulture, $"{Method} {Path} {Status}")
        : string.Create(CultureInfo.InvariantCulture,
            $"{RequestId} {TraceId} {ClientIp} \"{Method} {Path} {Protocol}\" {Status} {Bytes} route={Route} upstream={Upstream} server={Server} duration_ms={DurationMs:0.###} upstream_ms={UpstreamMs:0.###} attempts={Attempts} error={Error}");
}
