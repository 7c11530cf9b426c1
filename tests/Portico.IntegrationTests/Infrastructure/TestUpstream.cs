using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A real upstream HTTP server (Kestrel on 127.0.0.1, a real socket and port) whose behaviour the test writes as a
/// request delegate. HTTP/1.1 by default; <c>http2Only</c> gives a cleartext HTTP/2 (h2c prior knowledge) server.
/// </summary>
public sealed class TestUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestUpstream(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }

    public string Address => $"127.0.0.1:{Port}";

    /// <summary>Number of requests this upstream has received.</summary>
    public int Requests => _requests;

    private int _requests;

    public static async Task<TestUpstream> StartAsync(RequestDelegate handler, bool http2Only = false, int port = 0)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, port, l => l.Protocols = http2Only ? HttpProtocols.Http2 : HttpProtocols.Http1);
        });
        var app = builder.Build();
        TestUpstream? self = null;
        app.Run(async context =>
        {
            Interlocked.Increment(ref self!._requests);
            await handler(context);
        });
        await app.StartAsync();
        var bound = new Uri(app.Urls.First()).Port;
        self = new TestUpstream(app, bound);
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(TimeSpan.FromSeconds(1) is var t ? new CancellationTokenSource(t).Token : default);
        await _app.DisposeAsync();
    }
}
