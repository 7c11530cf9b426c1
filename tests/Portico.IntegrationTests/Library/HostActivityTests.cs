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
/// all (nothing allocated for it, and no unexported parent for Portico's own span). Requests with a body are served by
/// Kestrel's HTTP/1.1 implementation (and so by ASP.NET's hosting); bodiless ones by Portico's own server, which has no
/// hosting layer at all.
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

    private static async Task<string> CurrentActivityAsync(ILoggerFactory loggerFactory, bool withBody)
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var app = new CurrentActivityApp(UpstreamPeer.Create("127.0.0.1", upstream.Port));
        var port = Ports.GetFree();
        await using var host = ProxyHost.Build(app, [new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port)], loggerFactory);
        await host.StartAsync();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        using var response = withBody
            ? await client.PostAsync($"http://127.0.0.1:{port}/", new StringContent("body"))
            : await client.GetAsync($"http://127.0.0.1:{port}/");
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        await host.StopAsync();
        return Assert.Single(app.Seen);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PorticoLogging_NoHostingActivityPerRequest(bool withBody)
    {
        using var factory = PorticoLogging.CreateFactory(new LoggingConfig { Level = "warn" });
        Assert.Equal("none", await CurrentActivityAsync(factory, withBody));
    }

    [Fact]
    public async Task PlainLoggerFactory_HostingStartsAnActivityPerKestrelRequest()
    {
        // The control: what the filter prevents, on a request Kestrel serves. Warning level, as Portico's "Microsoft" default.
        using var factory = LoggerFactory.Create(builder => builder.SetMinimumLevel(LogLevel.Warning).AddSimpleConsole());
        Assert.Equal("Microsoft.AspNetCore.Hosting.HttpRequestIn", await CurrentActivityAsync(factory, withBody: true));
    }

    [Fact]
    public async Task PlainLoggerFactory_OwnServerStartsNoHostingActivity()
    {
        // Portico's own HTTP/1.1 server has no hosting layer: nothing to switch off.
        using var factory = LoggerFactory.Create(builder => builder.SetMinimumLevel(LogLevel.Warning).AddSimpleConsole());
        Assert.Equal("none", await CurrentActivityAsync(factory, withBody: false));
    }
}
