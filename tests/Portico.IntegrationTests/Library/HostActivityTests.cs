using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Portico.Config;
using Portico.Hosting;
using Portico.IntegrationTests.Infrastructure;
using Portico.Logging;
using Portico.Proxy;

namespace Portico.IntegrationTests.Library;

/// <summary>
/// ASP.NET Core's hosting starts an Activity for every request whenever its diagnostics logger is enabled at any
/// level. Portico's logger factory switches that category off, so with tracing off a request carries no Activity at
/// all (nothing allocated for it, and no unexported parent for Portico's own span).
/// </summary>
public sealed class HostActivityTests
{
    private sealed class CurrentActivityApp(UpstreamPeer peer) : ProxyApp<object?>
    {
        public readonly ConcurrentQueue<string> Seen = new();

        public override object? NewContext(ProxySession session)
        {
            Seen.Enqueue(Activity.Current?.OperationName ?? "none");
            return null;
        }

        public override ValueTask<UpstreamPeer?> SelectUpstreamAsync(ProxySession session, object? ctx) => ValueTask.FromResult<UpstreamPeer?>(peer);
    }

    private static async Task<string> CurrentActivityAsync(ILoggerFactory loggerFactory)
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var app = new CurrentActivityApp(UpstreamPeer.Create("127.0.0.1", upstream.Port));
        var port = Ports.GetFree();
        await using var host = ProxyHost.Build(app, [new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port)], loggerFactory);
        await host.StartAsync();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        Assert.Equal("ok", await client.GetStringAsync($"http://127.0.0.1:{port}/"));
        await host.StopAsync();
        return Assert.Single(app.Seen);
    }

    [Fact]
    public async Task PorticoLogging_NoHostingActivityPerRequest()
    {
        using var factory = PorticoLogging.CreateFactory(new LoggingConfig { Level = "warn" });
        Assert.Equal("none", await CurrentActivityAsync(factory));
    }

    [Fact]
    public async Task PlainLoggerFactory_HostingStartsAnActivityPerRequest()
    {
        // The control: what the filter prevents. Warning level, as Portico's "Microsoft" default.
        using var factory = LoggerFactory.Create(builder => builder.SetMinimumLevel(LogLevel.Warning).AddSimpleConsole());
        Assert.Equal("Microsoft.AspNetCore.Hosting.HttpRequestIn", await CurrentActivityAsync(factory));
    }
}
