using System.Collections.Frozen;
using Portico.Config;
using Portico.Proxy;
using Portico.Routing;
using Portico.Upstreams;

namespace Portico.Gateway;

/// <summary>
/// Turns a validated <see cref="GatewayConfig"/> into a <see cref="GatewaySnapshot"/>. Given the previous
/// snapshot, it reuses the connection pool of every upstream whose pool settings did not change and the live
/// state (in-flight, health) of every server that is still there, so a reload drops no connection.
/// </summary>
public static class GatewayCompiler
{
    public static GatewaySnapshot Compile(GatewayConfig config, GatewaySnapshot? previous = null)
    {
        var upstreams = new Dictionary<string, UpstreamModel>(StringComparer.Ordinal);
        var peers = new Dictionary<UpstreamModel, UpstreamPeer[]>();
        foreach (var upstreamConfig in config.Upstreams)
        {
            UpstreamModel? old = null;
            previous?.Upstreams.TryGetValue(upstreamConfig.Name, out old);
            var model = CompileUpstream(config, upstreamConfig, old);
            upstreams[model.Name] = model;
            var upstreamPeers = new UpstreamPeer[model.Servers.Length];
            for (var i = 0; i < upstreamPeers.Length; i++)
            {
                upstreamPeers[i] = new UpstreamPeer(model.Servers[i], model.Client, model.ReadTimeout, model.Name);
            }
            peers[model] = upstreamPeers;
        }

        var routes = new List<RouteModel>(config.Routes.Count);
        for (var i = 0; i < config.Routes.Count; i++)
        {
            var r = config.Routes[i];
            var methods = new string[r.Methods.Count];
            for (var m = 0; m < methods.Length; m++)
            {
                methods[m] = r.Methods[m].ToUpperInvariant();
            }
            var headers = new KeyValuePair<string, string>[r.Headers.Count];
            var h = 0;
            foreach (var pair in r.Headers)
            {
                headers[h++] = pair;
            }
            var route = new RouteModel
            {
                Name = r.Name ?? $"{r.Path}",
                Path = r.Path,
                Host = r.Host?.ToLowerInvariant(),
                Methods = methods,
                Headers = headers,
                UpstreamName = r.Upstream,
                AuthRequired = r.AuthRequired,
                StripPrefix = r.StripPrefix,
                Respond = r.Respond,
                Timeout = r.TimeoutMs is { } ms ? TimeSpan.FromMilliseconds(ms) : null,
                Idempotent = r.Idempotent,
                Order = i,
            };
            if (r.Upstream is not null)
            {
                route.Upstream = upstreams.TryGetValue(r.Upstream, out var target)
                    ? target
                    : throw new InvalidOperationException($"route {route.Name}: unknown upstream '{r.Upstream}'");
            }
            routes.Add(route);
        }

        var defaultUpstream = routes.Count == 0 && upstreams.Count == 1 ? upstreams.Values.First() : null;
        return new GatewaySnapshot(config, RouteTable.Build(routes), upstreams.ToFrozenDictionary(StringComparer.Ordinal),
            peers.ToFrozenDictionary(), defaultUpstream, (previous?.Generation ?? 0) + 1);
    }

    /// <summary>Disposes the pools of <paramref name="old"/> that <paramref name="current"/> no longer uses.</summary>
    public static void DisposeUnused(GatewaySnapshot old, GatewaySnapshot current)
    {
        var inUse = new HashSet<UpstreamClient>(current.Clients);
        foreach (var client in old.Clients)
        {
            if (!inUse.Contains(client))
            {
                client.Dispose();
            }
        }
    }

    /// <summary>Splits servers into local zone, other zones and backups, one balancer each (empty tiers dropped).</summary>
    private static bool[]? BuildStatusSet(IReadOnlyList<int> statuses)
    {
        if (statuses.Count == 0)
        {
            return null;
        }
        var set = new bool[600];
        foreach (var status in statuses)
        {
            set[status] = true;
        }
        return set;
    }

    internal static LoadBalancingPolicy[] BuildTiers(string strategy, ServerModel[] servers, string? nodeZone)
    {
        var local = new List<ServerModel>();
        var remote = new List<ServerModel>();
        var backup = new List<ServerModel>();
        foreach (var server in servers)
        {
            if (server.Backup)
            {
                backup.Add(server);
            }
            else if (nodeZone is null || server.Zone is null || string.Equals(server.Zone, nodeZone, StringComparison.Ordinal))
            {
                local.Add(server);
            }
            else
            {
                remote.Add(server);
            }
        }
        var tiers = new List<LoadBalancingPolicy>(3);
        foreach (var tier in (List<ServerModel>[])[local, remote, backup])
        {
            if (tier.Count > 0)
            {
                tiers.Add(LoadBalancingPolicyFactory.Create(strategy, [.. tier]));
            }
        }
        return [.. tiers];
    }

    private static UpstreamModel CompileUpstream(GatewayConfig config, UpstreamConfig u, UpstreamModel? old)
    {
        var protocol = u.Protocol switch
        {
            "h2c" or "grpc" => UpstreamProtocol.Http2,
            _ => UpstreamProtocol.Http1,
        };
        var anyTls = false;
        var verify = true;
        var servers = new ServerModel[u.Servers.Count];
        for (var i = 0; i < servers.Length; i++)
        {
            var s = u.Servers[i];
            anyTls |= s.Tls;
            if (s.Tls && !s.TlsVerify)
            {
                verify = false;
            }
            // Keep the live state of a server that is still in the group, so health and in-flight counts survive.
            ServerState? state = null;
            if (old is not null)
            {
                foreach (var os in old.Servers)
                {
                    if (os.Host == s.Host && os.Port == s.Port)
                    {
                        state = os.State;
                        break;
                    }
                }
            }
            servers[i] = new ServerModel(s, i, state);
            var breakerState = servers[i].State;
            if (u.CircuitBreaker is { Enabled: true } breakerConfig)
            {
                var breakerOptions = CircuitBreakerOptions.From(breakerConfig);
                if (breakerState.Breaker?.Options != breakerOptions)
                {
                    breakerState.Breaker = new CircuitBreaker(breakerOptions, TimeProvider.System);
                }
            }
            else
            {
                breakerState.Breaker = null;
            }
        }

        var options = new UpstreamClientOptions
        {
            Protocol = protocol,
            ConnectTimeout = TimeSpan.FromMilliseconds(u.ConnectTimeoutMs),
            MaxConnectionsPerServer = config.Performance.ConnectionPoolSize > 0 ? config.Performance.ConnectionPoolSize : int.MaxValue,
            AnyTls = anyTls,
            VerifyTls = verify,
        };
        var client = old is not null && old.Client.Options == options ? old.Client : new UpstreamClient(options);

        return new UpstreamModel
        {
            Name = u.Name,
            Config = u,
            Protocol = protocol,
            Servers = servers,
            Tiers = BuildTiers(u.LoadBalanceStrategy, servers, config.Server.Zone),
            ConnectTimeout = options.ConnectTimeout,
            ReadTimeout = TimeSpan.FromMilliseconds(u.ReadTimeoutMs),
            MaxRetries = u.MaxRetries,
            RetryOnStatus = BuildStatusSet(u.RetryOnStatus),
            PassiveMaxFails = (u.HealthCheck ?? config.HealthCheck)?.UnhealthyThreshold ?? 3,
            RetryBudget = old?.RetryBudget ?? new RetryBudget(new RetryBudgetOptions(), TimeProvider.System),
            Client = client,
        };
    }
}
