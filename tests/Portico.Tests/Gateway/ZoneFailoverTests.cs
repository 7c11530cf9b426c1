using Microsoft.Extensions.Logging.Abstractions;
using Portico.Config;
using Portico.Gateway;

namespace Portico.Tests.Gateway;

public sealed class ZoneFailoverTests
{
    private const string Yaml = """
        server:
          zone: eu-1
        upstreams:
          - name: u
            servers:
              - {host: 10.0.0.1, port: 80, zone: eu-1}
              - {host: 10.0.0.2, port: 80, zone: eu-1}
              - {host: 10.0.0.3, port: 80, zone: us-1}
              - {host: 10.0.0.4, port: 80, zone: eu-1, backup: true}
        """;

    private static (GatewayApp App, GatewaySnapshot Snapshot) Build(string yaml = Yaml)
    {
        var result = ConfigLoader.LoadYaml(yaml);
        Assert.True(result.IsValid, result.ToString());
        var snapshot = GatewayCompiler.Compile(result.Config!);
        return (new GatewayApp(snapshot, NullLoggerFactory.Instance), snapshot);
    }

    private static async Task<string?> Pick(GatewayApp app)
    {
        var (session, ctx) = await GatewayTestSession.StartAsync(app);
        return (await app.SelectUpstreamAsync(session, ctx))?.Server.Host;
    }

    private static async Task<HashSet<string?>> Picks(GatewayApp app, int n = 12)
    {
        var set = new HashSet<string?>();
        for (var i = 0; i < n; i++)
        {
            set.Add(await Pick(app));
        }
        return set;
    }

    [Fact]
    public void Tiers_LocalZoneThenOtherZonesThenBackups()
    {
        var (_, snapshot) = Build();
        var tiers = snapshot.Upstreams["u"].Tiers;
        Assert.Equal(3, tiers.Length);
        Assert.Equal(["10.0.0.1", "10.0.0.2"], tiers[0].Servers.Select(s => s.Host));
        Assert.Equal(["10.0.0.3"], tiers[1].Servers.Select(s => s.Host));
        Assert.Equal(["10.0.0.4"], tiers[2].Servers.Select(s => s.Host));
    }

    [Fact]
    public void Tiers_NoNodeZone_AllNonBackupServersAreLocal()
    {
        var (_, snapshot) = Build(Yaml.Replace("  zone: eu-1\nupstreams", "  listen_port: 8080\nupstreams", StringComparison.Ordinal));
        var tiers = snapshot.Upstreams["u"].Tiers;
        Assert.Equal(2, tiers.Length);
        Assert.Equal(3, tiers[0].Servers.Length);
    }

    [Fact]
    public async Task Select_PrefersLocal_FailsOverToOtherZoneThenBackup_AndMovesBack()
    {
        var (app, snapshot) = Build();
        var servers = snapshot.Upstreams["u"].Servers;
        Assert.Equal(["10.0.0.1", "10.0.0.2"], (await Picks(app)).Order());

        servers[0].State.SetHealthy(false);
        servers[1].State.SetHealthy(false);
        Assert.Equal(["10.0.0.3"], await Picks(app));

        servers[2].State.SetHealthy(false);
        Assert.Equal(["10.0.0.4"], await Picks(app));

        servers[3].State.SetHealthy(false);
        Assert.Equal([null], await Picks(app));

        servers[1].State.SetHealthy(true);
        Assert.Equal(["10.0.0.2"], await Picks(app));
    }

    [Fact]
    public async Task Select_RetryAfterFailureOnOnlyLocalServer_GoesToNextTier()
    {
        var (app, snapshot) = Build();
        snapshot.Upstreams["u"].Servers[1].State.SetHealthy(false);
        var (session, ctx) = await GatewayTestSession.StartAsync(app);
        var first = await app.SelectUpstreamAsync(session, ctx);
        Assert.Equal("10.0.0.1", first!.Server.Host);
        session.Peer = first; // the attempt on the only local server failed
        var retry = await app.SelectUpstreamAsync(session, ctx);
        Assert.Equal("10.0.0.3", retry!.Server.Host);
    }
}
