using System.Net;
using Microsoft.AspNetCore.Http;
using Portico.Gateway;
using Portico.Proxy;

namespace Portico.Tests.Gateway;

/// <summary>A GET / session run through the gateway's request filter, ready for SelectUpstreamAsync.</summary>
internal static class GatewayTestSession
{
    public static async Task<(ProxySession Session, GatewayContext Context)> StartAsync(GatewayApp app, string clientIp = "127.0.0.1")
    {
        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Parse(clientIp);
        http.Request.Method = "GET";
        http.Request.Path = "/";
        var session = new ProxySession(http, "id");
        var ctx = app.NewContext(session);
        Assert.False(await app.RequestFilterAsync(session, ctx));
        return (session, ctx);
    }
}
