using Microsoft.Extensions.Logging.Abstractions;
using Portico.Config;
using Portico.Gateway;

namespace Portico.Tests.Gateway;

public sealed class GatewayAppTests
{
    private static GatewayApp App(string strategy)
    {
        var servers = string.Join(", ", Enumerable.Range(1, 8).Select(i => $"\"10.0.0.{i}:80\""));
        var result = ConfigLoader.LoadYaml($"upstreams:\n  - name: u\n    load_balance_strategy: {strategy}\n    servers: [{servers}]\n");
        Assert.True(result.IsValid, result.ToString());
        return new GatewayApp(GatewayCompiler.Compile(result.Config!), NullLoggerFactory.Instance);
    }

    private static async Task<string> SelectFor(GatewayApp app, string clientIp)
    {
        var (session, ctx) = await GatewayTestSession.StartAsync(app, clientIp);
        var peer = await app.SelectUpstreamAsync(session, ctx);
        return peer!.Server.Authority;
    }

    [Fact]
    public async Task SelectUpstream_IpHash_SpreadsClientsAndKeepsEachOnOneServer()
    {
        // Regression: the gateway once passed no hash key to ip_hash, so every client landed on one server.
        var app = App("ip_hash");
        var chosen = new HashSet<string>();
        for (var i = 1; i <= 64; i++)
        {
            var ip = $"192.168.{i}.{i * 3 % 250}";
            var first = await SelectFor(app, ip);
            Assert.Equal(first, await SelectFor(app, ip));
            chosen.Add(first);
        }
        Assert.True(chosen.Count >= 5, $"64 clients went to only {chosen.Count} of 8 servers");
    }

    [Fact]
    public async Task SelectUpstream_RoundRobin_IgnoresClient()
    {
        var app = App("round_robin");
        var chosen = new HashSet<string>();
        for (var i = 0; i < 8; i++)
        {
            chosen.Add(await SelectFor(app, "192.168.0.1"));
        }
        Assert.Equal(8, chosen.Count);
    }
}
