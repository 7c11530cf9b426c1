using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// Like <see cref="TestUpstream"/> but serving HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on 127.0.0.1 with the given PEM
/// certificate, for tests of the gateway's TLS upstream connections (<c>tls: true</c>, <c>tls_verify</c>).
/// </summary>
public sealed class TlsTestUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _requests;

    private TlsTestUpstream(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }

    /// <summary>Number of requests that reached the handler (a failed TLS handshake never does).</summary>
    public int Requests => _requests;

    public static async Task<TlsTestUpstream> StartAsync(RequestDelegate handler, TestCertificate certificate)
    {
        // Kestrel on Linux wants a certificate whose key is not ephemeral; a PKCS#12 round trip gives that.
        using var pem = X509Certificate2.CreateFromPemFile(certificate.CertPath, certificate.KeyPath);
        var serverCertificate = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, 0, l =>
            {
                l.Protocols = HttpProtocols.Http1AndHttp2;
                l.UseHttps(serverCertificate);
            });
        });
        var app = builder.Build();
        TlsTestUpstream? self = null;
        app.Run(async context =>
        {
            Interlocked.Increment(ref self!._requests);
            await handler(context);
        });
        await app.StartAsync();
        self = new TlsTestUpstream(app, new Uri(app.Urls.First()).Port);
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
    }
}
