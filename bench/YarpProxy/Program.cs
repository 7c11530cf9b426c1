// A minimal YARP reverse proxy for bench/run.sh: one route (every path) to one cluster with one destination,
// HTTP/1.1 keep-alive to the origin, logging off. It is a comparison peer, not a product: see bench/README.md.
//
//   yarp-proxy <http1 address> <h2c address> <origin url>
//   yarp-proxy 127.0.0.1:8081 127.0.0.1:8082 http://127.0.0.1:8080/
using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;

if (args.Length != 3)
{
    Console.Error.WriteLine("usage: yarp-proxy <http1 host:port> <h2c host:port> <origin url>");
    return 2;
}

var http1 = IPEndPoint.Parse(args[0]);
var h2c = IPEndPoint.Parse(args[1]);
var origin = args[2];

// Args are not handed to the builder: configuration comes from this file only, so nothing in the environment
// (ASPNETCORE_URLS, appsettings) changes what is measured.
var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(kestrel =>
{
    // 75 s, as nginx keepalive_timeout and Portico's idle_timeout_seconds (Kestrel's own default is 130 s).
    kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(75);
    kestrel.Listen(http1, listen => listen.Protocols = HttpProtocols.Http1);
    // Kestrel does not offer h2c upgrade or prior knowledge on an Http1AndHttp2 cleartext endpoint (that needs
    // ALPN), so HTTP/2 without TLS gets a port of its own that speaks only HTTP/2.
    kestrel.Listen(h2c, listen => listen.Protocols = HttpProtocols.Http2);
});

builder.Services.AddReverseProxy().LoadFromMemory(
    [
        new RouteConfig
        {
            RouteId = "all",
            ClusterId = "origin",
            Match = new RouteMatch { Path = "{**catch-all}" },
        },
    ],
    [
        new ClusterConfig
        {
            ClusterId = "origin",
            Destinations = new Dictionary<string, DestinationConfig>
            {
                ["origin1"] = new DestinationConfig { Address = origin },
            },
            // HTTP/1.1 to the origin, as nginx, HAProxy and Portico do (YARP's default asks for HTTP/2 first).
            HttpRequest = new ForwarderRequestConfig
            {
                Version = HttpVersion.Version11,
                VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
            },
        },
    ]);

var app = builder.Build();
app.MapReverseProxy();
app.Run();
return 0;
