using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// One real gateway per test class, in front of two recording upstreams: <c>/h2/*</c> goes to a cleartext HTTP/2
/// upstream (<c>protocol: h2c</c>), everything else to an HTTP/1.1 one. Tests register their upstream behaviour
/// with <see cref="RecordingUpstream.Map"/> under a path prefix of their own.
/// </summary>
public sealed class ProxyFixture : IAsyncLifetime
{
    public GatewayProcess Gateway { get; private set; } = null!;

    /// <summary>The HTTP/1.1 upstream behind <c>/*</c>.</summary>
    public RecordingUpstream Main { get; private set; } = null!;

    /// <summary>The h2c upstream behind <c>/h2/*</c>.</summary>
    public RecordingUpstream H2 { get; private set; } = null!;

    public int Port { get; private set; }

    public string BaseUrl => $"http://127.0.0.1:{Port}";

    public string Url(string pathAndQuery) => BaseUrl + pathAndQuery;

    public async Task InitializeAsync()
    {
        Main = await RecordingUpstream.StartAsync("main");
        H2 = await RecordingUpstream.StartAsync("h2", http2Only: true);
        Port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{Port}"
              graceful_timeout_seconds: 2
            admin:
              enabled: false
            upstreams:
              main:
                servers: ["{Main.Address}"]
              h2:
                protocol: h2c
                servers: ["{H2.Address}"]
            routes:
              - path: "/h2/*"
                upstream: h2
              - path: "/*"
                upstream: main
            """;
        Gateway = await GatewayProcess.StartAsync(yaml, Port);
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        await Main.DisposeAsync();
        await H2.DisposeAsync();
    }
}
