using Portico.Config;

namespace Portico.Routing;

/// <summary>A compiled route: what it matches and where it sends the request. Immutable; part of a config snapshot.</summary>
public sealed class RouteModel
{
    public required string Name { get; init; }
    /// <summary>The pattern as written: "/oauth/*", "/*", "/api/v1", "/api/*/users".</summary>
    public required string Path { get; init; }
    /// <summary>Host to match, lower case, without port: "api.example.com" or "*.example.com"; null = any.</summary>
    public string? Host { get; init; }
    /// <summary>Upper-case methods; empty = any.</summary>
    public string[] Methods { get; init; } = [];
    /// <summary>Request headers that must equal these values (names case-insensitive, values ordinal).</summary>
    public KeyValuePair<string, string>[] Headers { get; init; } = [];
    /// <summary>Name of the upstream group; null when the route answers itself (<see cref="Respond"/>).</summary>
    public string? UpstreamName { get; init; }
    public bool AuthRequired { get; init; }
    public string? StripPrefix { get; init; }
    public RespondConfig? Respond { get; init; }
    /// <summary>Overrides the upstream read timeout; null = the upstream's.</summary>
    public TimeSpan? Timeout { get; init; }
    /// <summary>Requests may be retried whatever their method (route `idempotent: true`).</summary>
    public bool Idempotent { get; init; }
    /// <summary>Position in the config's route list (ties are broken by it).</summary>
    public int Order { get; init; }
    /// <summary>The runtime upstream this route forwards to; set when the snapshot is compiled.</summary>
    public Upstreams.UpstreamModel? Upstream { get; set; }
    /// <summary>This route's metric cells; set when the app takes the snapshot (<see cref="Observability.GatewayMetrics"/>).</summary>
    internal Observability.RouteMetrics? Metrics { get; set; }
}
