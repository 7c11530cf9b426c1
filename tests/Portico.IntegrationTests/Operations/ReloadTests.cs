using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>SIGHUP reload on the real gateway: a good file is swapped in, a bad one is rejected and the old one keeps serving.</summary>
public sealed class ReloadTests
{
    private static string Config(int port, int upstreamPort) => $"""
        server:
          listen_address: "127.0.0.1"
          listen_port: {port}
        admin:
          enabled: false
        upstreams:
          backend:
            servers: ["127.0.0.1:{upstreamPort}"]
        """;

    [Fact]
    public async Task Sighup_ValidFile_SwapsUpstream_BadFile_KeepsServing()
    {
        await using var a = await TestUpstream.StartAsync(c => c.Response.WriteAsync("A"));
        await using var b = await TestUpstream.StartAsync(c => c.Response.WriteAsync("B"));
        var port = Ports.GetFree();
        await using var gateway = await GatewayProcess.StartAsync(Config(port, a.Port), port);
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var url = $"http://127.0.0.1:{port}/";
        Assert.Equal("A", await client.GetStringAsync(url));

        await gateway.WriteConfigAsync(Config(port, b.Port));
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("generation 2", TimeSpan.FromSeconds(10));
        Assert.Equal("B", await client.GetStringAsync(url));

        await gateway.WriteConfigAsync(Config(port, b.Port) + "\nnonsense_key: 1\n");
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.WaitForOutputAsync("rejected", TimeSpan.FromSeconds(10));
        Assert.True(gateway.Output.Contains("nonsense_key", StringComparison.Ordinal), gateway.Output);
        Assert.Equal("B", await client.GetStringAsync(url));
        Assert.False(gateway.HasExited);
    }
}
