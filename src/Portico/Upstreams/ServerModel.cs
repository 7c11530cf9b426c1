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
    /// <summary>This server's metric cells; set when the app takes the snapshot (<see cref="Observability.GatewayMetrics"/>).</summary>
    internal Observability.ServerMetrics? Metrics { get; set; }

    public override string ToString() => Authority;
}

/// <summary>The mutable, thread-safe part of a server: in-flight count and availability. Survives reloads for unchanged servers.</summary>
public sealed class ServerState
{
    private int _inFlight;
    private long _requests;
    private long _failures;
    private volatile bool _healthy = true;
    private volatile bool _draining;

    /// <summary>Requests currently being proxied to this server.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>False when health checks or the circuit breaker took the server out.</summary>
    public bool IsHealthy => _healthy;

    /// <summary>
    /// Attempts sent to this server since it entered the config (a retry elsewhere counts on each server it reached).
    /// Only goes up; the admin API turns it into a recent rate by sampling it.
    /// </summary>
    public long Requests => Volatile.Read(ref _requests);

    /// <summary>Failed attempts on live traffic (connect failure, timeout, reset, 5xx), counted by <see cref="ReportFailure"/>.</summary>
    public long Failures => Volatile.Read(ref _failures);

    /// <summary>True when an operator drained the server: no new requests.</summary>
    public bool IsDraining => _draining;

    /// <summary>
    /// Whether the balancer may pick this server: healthy, not drained, not ejected by passive checks, and its circuit
    /// breaker (if any) not open, or open long enough to let a half-open probe through.
    /// </summary>
    public bool IsAvailable => _healthy && !_draining && !IsEjected && BreakerAllows;

    /// <summary>The server's circuit breaker when its upstream configures one; kept across reloads while its settings match.</summary>
    public CircuitBreaker? Breaker { get; internal set; }

    private bool BreakerAllows => Breaker is not { } breaker || breaker.State != CircuitState.Open || breaker.OpenRemaining == TimeSpan.Zero;

    private long _ejectedUntil;
    private int _consecutiveFailures;

    /// <summary>True while passive health checks keep the server out (after too many failures in a row).</summary>
    public bool IsEjected
    {
        get
        {
            var until = Volatile.Read(ref _ejectedUntil);
            return until != 0 && Environment.TickCount64 < until;
        }
    }

    /// <summary>Consecutive failures seen on live traffic since the last success.</summary>
    public int ConsecutiveFailures => Volatile.Read(ref _consecutiveFailures);

    /// <summary>A request to this server succeeded (any status below 500): the failure streak ends.</summary>
    public void ReportSuccess()
    {
        if (Volatile.Read(ref _consecutiveFailures) != 0)
        {
            Volatile.Write(ref _consecutiveFailures, 0);
        }
    }

    /// <summary>
    /// A request to this server failed on live traffic (connect failure, timeout, reset or a 5xx). After
    /// <paramref name="maxFails"/> in a row the server is ejected for <paramref name="ejectFor"/>, as nginx's
    /// max_fails/fail_timeout and Envoy's consecutive-5xx outlier detection do. Returns true when this call ejected it.
    /// </summary>
    public bool ReportFailure(int maxFails, TimeSpan ejectFor)
    {
        Interlocked.Increment(ref _failures);
        if (Interlocked.Increment(ref _consecutiveFailures) < maxFails)
        {
            return false;
        }
        Volatile.Write(ref _consecutiveFailures, 0);
        Volatile.Write(ref _ejectedUntil, Environment.TickCount64 + (long)ejectFor.TotalMilliseconds);
        return true;
    }

    public void SetHealthy(bool healthy) => _healthy = healthy;

    public void SetDraining(bool draining) => _draining = draining;

    /// <summary>An attempt to this server begins; pair with <see cref="OnRequestEnd"/>.</summary>
    /// <remarks>
    /// Two atomics on the same cache line: the second costs little once the line is held, and a per-server total is
    /// the only way to show a server's own request rate (the metrics count per upstream, to keep series few).
    /// </remarks>
    public void OnRequestStart()
    {
        Interlocked.Increment(ref _inFlight);
        Interlocked.Increment(ref _requests);
    }

    public void OnRequestEnd() => Interlocked.Decrement(ref _inFlight);
}
