using Portico.Config;
using Portico.Gateway;

namespace Portico.Tests.Gateway;

public sealed class GatewayCompilerTests
{
    private static GatewayConfig Load(string yaml)
    {
        var result = ConfigLoader.LoadYaml(yaml);
        Assert.True(result.IsValid, result.ToString());
        return result.Config!;
    }

    private const string TwoUpstreams = """
        upstreams:
          api:
            servers: ["127.0.0.1:3001", "127.0.0.1:3002"]
          web:
            servers: ["127.0.0.1:3003"]
        routes:
          - path: "/api/*"
            upstream: api
          - path: "/*"
            upstream: web
        """;

    [Fact]
    public void Compile_LinksRoutesToUpstreamsAndPeers()
    {
        var snapshot = GatewayCompiler.Compile(Load(TwoUpstreams));
        Assert.Equal(1, snapshot.Generation);
        Assert.Null(snapshot.DefaultUpstream);
        var api = snapshot.Upstreams["api"];
        Assert.Same(api, snapshot.Routes.Routes.First(r => r.UpstreamName == "api").Upstream);
        var peer = snapshot.PeerFor(api, api.Servers[1]);
        Assert.Equal("http://127.0.0.1:3002", peer.BaseAddress);
        Assert.Same(api.Client, peer.Client);
        Assert.Same(peer, snapshot.PeerFor(api, api.Servers[1]));
    }

    [Fact]
    public void Compile_NoRoutesOneUpstream_IsDefault()
    {
        var snapshot = GatewayCompiler.Compile(Load("upstreams:\n  only:\n    servers: [\"127.0.0.1:3001\"]\n"));
        Assert.Same(snapshot.Upstreams["only"], snapshot.DefaultUpstream);
    }

    [Fact]
    public void Recompile_UnchangedUpstream_KeepsPoolAndServerState()
    {
        var first = GatewayCompiler.Compile(Load(TwoUpstreams));
        var api = first.Upstreams["api"];
        api.Servers[0].State.SetHealthy(false);
        api.Servers[1].State.OnRequestStart();

        var changed = TwoUpstreams.Replace("\"127.0.0.1:3003\"", "\"127.0.0.1:3004\"", StringComparison.Ordinal);
        var second = GatewayCompiler.Compile(Load(changed), first);

        Assert.Equal(2, second.Generation);
        var api2 = second.Upstreams["api"];
        Assert.NotSame(api, api2);
        Assert.Same(api.Client, api2.Client);
        Assert.Same(api.Servers[0].State, api2.Servers[0].State);
        Assert.False(api2.Servers[0].State.IsHealthy);
        Assert.Equal(1, api2.Servers[1].State.InFlight);
        // web's only server changed address: new state, same pool settings so the pool is reused too.
        Assert.NotSame(first.Upstreams["web"].Servers[0].State, second.Upstreams["web"].Servers[0].State);
    }

    [Fact]
    public void Recompile_ChangedPoolSettings_NewPoolAndOldOneDisposedWhenUnused()
    {
        var first = GatewayCompiler.Compile(Load(TwoUpstreams));
        var changed = TwoUpstreams.Replace("  web:\n", "  web:\n    connect_timeout_ms: 250\n", StringComparison.Ordinal);
        var second = GatewayCompiler.Compile(Load(changed), first);
        Assert.NotSame(first.Upstreams["web"].Client, second.Upstreams["web"].Client);
        Assert.Equal(TimeSpan.FromMilliseconds(250), second.Upstreams["web"].Client.Options.ConnectTimeout);
        GatewayCompiler.DisposeUnused(first, second);
        Assert.Throws<ObjectDisposedException>(() => first.Upstreams["web"].Client.Invoker.Send(new HttpRequestMessage(HttpMethod.Get, "http://127.0.0.1:1/"), default));
    }

    [Fact]
    public void Compile_ProtocolsMapToHttpVersions()
    {
        var snapshot = GatewayCompiler.Compile(Load("""
            upstreams:
              - name: g
                protocol: grpc
                servers: [{host: 127.0.0.1, port: 50051}]
              - name: h
                protocol: h2c
                servers: [{host: 127.0.0.1, port: 8081}]
              - name: s
                servers: [{host: 127.0.0.1, port: 8443, tls: true}]
            """));
        Assert.Equal(System.Net.HttpVersion.Version20, snapshot.PeerFor(snapshot.Upstreams["g"], snapshot.Upstreams["g"].Servers[0]).Version);
        Assert.Equal(System.Net.HttpVersion.Version20, snapshot.PeerFor(snapshot.Upstreams["h"], snapshot.Upstreams["h"].Servers[0]).Version);
        var s = snapshot.Upstreams["s"];
        Assert.Equal(System.Net.HttpVersion.Version11, snapshot.PeerFor(s, s.Servers[0]).Version);
        Assert.Equal("https://127.0.0.1:8443", snapshot.PeerFor(s, s.Servers[0]).BaseAddress);
    }
}
