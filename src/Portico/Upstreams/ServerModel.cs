using Portico.Config;

namespace Portico.Upstreams;

/// <summary>One server of an upstream group: its address and settings (immutable) plus its live <see cref="ServerState"/>.</summary>
public sealed class ServerModel
{
    public ServerModel(UpstreamServerConfig config, int index, ServerState? state = null)
    {
        Host = config.Host;
        Port = config.Port;
        Weight = config.Weight < 1 ? 1 : config.Weight;
        Tls = config.Tls;
        TlsVerify = config.TlsVerify;
        Sni = config.Sni ?? config.Host;
        Zone = config.Zone;
        Backup = config.Backup;
        Index = index;
        // IPv6 literals need brackets in an authority.
        Authority = Host.Contains(':') && !Host.StartsWith('[') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
        State = state ?? new ServerState();
    }

    public string Host { get; }
    public int Port { get; }
    public int Weight { get; }
    public bool Tls { get; }
    public bool TlsVerify { get; }
    public string Sni { get; }
    public string? Zone { get; }
    public bool Backup { get; }
    /// <summary>Position in the upstream's server list.</summary>
    public int Index { get; }
    /// <summary>"host:port" ("[::1]:port" for IPv6), as used in URIs, logs and metric labels.</summary>
    public string Authority { get; }
    public ServerState State { get; }

    public override string ToString() => Authority;
}

/// <summary>The mutable, thread-safe part of a server: in-flight count and availability. Survives reloads for unchanged servers.</summary>
public sealed class ServerState
{
    private int _inFlight;
    private volatile bool _healthy = true;
    private volatile bool _draining;

    /// <summary>Requests currently being proxied to this server.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>False when health checks or the circuit breaker took the server out.</summary>
    public bool IsHealthy => _healthy;

    /// <summary>True when an operator drained the server: no new requests.</summary>
    public bool IsDraining => _draining;

    /// <summary>Whether the balancer may pick this server.</summary>
    public bool IsAvailable => _healthy && !_draining;

    public void SetHealthy(bool healthy) => _healthy = healthy;

    public void SetDraining(bool draining) => _draining = draining;

    public void OnRequestStart() => Interlocked.Increment(ref _inFlight);

    public void OnRequestEnd() => Interlocked.Decrement(ref _inFlight);
}
