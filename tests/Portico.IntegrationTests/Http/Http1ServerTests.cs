using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Portico's own HTTP/1.1 server (src/Portico/Server) on the real gateway, written byte for byte on raw sockets:
/// keep-alive and close rules, pipelining, the hand-over of a connection to Kestrel at a request it does not take
/// (a body, an upgrade, a malformed or oversized head), response framing (Content-Length, chunked, HTTP/1.0 close),
/// and the timeouts it enforces itself.
/// </summary>
public sealed class Http1ServerTests : IClassFixture<ProxyFixture>
{
    private readonly ProxyFixture _fixture;

    public Http1ServerTests(ProxyFixture fixture)
    {
        _fixture = fixture;
        fixture.Main.Map("/own/echo", static async context =>
        {
            var body = await new StreamReader(context.Request.Body).ReadToEndAsync(context.RequestAborted);
            var answer = Encoding.UTF8.GetBytes($"{context.Request.Method} {context.Request.Path}{context.Request.QueryString} body={body}");
            context.Response.ContentLength = answer.Length;
            await context.Response.Body.WriteAsync(answer, context.RequestAborted);
        });
        fixture.Main.Map("/own/chunked", static async context =>
        {
            // No Content-Length: Kestrel sends this chunked to the gateway, in two chunks.
            await context.Response.WriteAsync("first,", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            await context.Response.WriteAsync("second", context.RequestAborted);
        });
        fixture.Main.Map("/own/empty", static context =>
        {
            context.Response.StatusCode = StatusCodes.Status202Accepted;
            return Task.CompletedTask;
        });
    }

    [Fact]
    public async Task PipelinedRequests_AnsweredInOrder_OnOneConnection()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        var requests = new StringBuilder();
        for (var i = 0; i < 5; i++)
        {
            requests.Append($"GET /own/echo?n={i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        }
        await connection.SendAsync(requests.ToString());

        for (var i = 0; i < 5; i++)
        {
            var response = await connection.ReadResponseAsync();
            Assert.True(response?.Status == 200, response?.ToString());
            Assert.Equal($"GET /own/echo?n={i} body=", response!.BodyText);
            Assert.NotNull(response.Header("X-Request-ID"));
            Assert.NotNull(response.Header("Date"));
        }
    }

    [Fact]
    public async Task RequestWithBody_AfterBodilessOnes_IsServedOnTheSameConnection()
    {
        // The first request is the own server's; the POST is handed to Kestrel with the connection, unread; the GET
        // after it is Kestrel's too. All three must be answered whole, in order, on one connection.
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync("GET /own/echo?step=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        var first = await connection.ReadResponseAsync();
        Assert.Equal("GET /own/echo?step=1 body=", first?.BodyText);

        await connection.SendAsync("POST /own/echo?step=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
            + "GET /own/echo?step=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        var second = await connection.ReadResponseAsync();
        var third = await connection.ReadResponseAsync();

        Assert.Equal("POST /own/echo?step=2 body=hello", second?.BodyText);
        Assert.Equal("GET /own/echo?step=3 body=", third?.BodyText);
    }

    [Fact]
    public async Task ConnectionClose_AnsweredWithCloseAndClosed()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync("GET /own/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");

        var response = await connection.ReadResponseAsync();

        Assert.True(response?.Status == 200, response?.ToString());
        Assert.Equal("close", response!.Header("Connection"));
        Assert.True(await connection.IsClosedByServerAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Http10_KeepAliveAsked_KeptOpen_ElseClosed()
    {
        await using (var connection = await RawHttpConnection.ConnectAsync(_fixture.Port))
        {
            await connection.SendAsync("GET /own/echo?v=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            var response = await connection.ReadResponseAsync();
            Assert.True(response?.Status == 200, response?.ToString());
            Assert.Equal("keep-alive", response!.Header("Connection"));
            Assert.StartsWith("HTTP/1.1 200", response.HeadText, StringComparison.Ordinal);

            await connection.SendAsync("GET /own/echo?v=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            Assert.Equal("GET /own/echo?v=2 body=", (await connection.ReadResponseAsync())?.BodyText);
        }

        await using var plain = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await plain.SendAsync("GET /own/echo?v=3 HTTP/1.0\r\n\r\n");
        var last = await plain.ReadResponseAsync();
        Assert.Equal("GET /own/echo?v=3 body=", last?.BodyText);
        Assert.Equal("close", last!.Header("Connection"));
        Assert.True(await plain.IsClosedByServerAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task UpstreamChunkedAnswer_ReframedChunkedForHttp11_AndUntilCloseForHttp10()
    {
        await using (var connection = await RawHttpConnection.ConnectAsync(_fixture.Port))
        {
            await connection.SendAsync("GET /own/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            var response = await connection.ReadResponseAsync();
            Assert.True(response?.Status == 200, response?.ToString());
            Assert.Equal("chunked", response!.Header("Transfer-Encoding"));
            Assert.Null(response.Header("Content-Length"));
            Assert.Equal("first,second", response.BodyText);
            // The connection is still usable: the last chunk ended the message.
            await connection.SendAsync("GET /own/echo?after=chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            Assert.Equal("GET /own/echo?after=chunked body=", (await connection.ReadResponseAsync())?.BodyText);
        }

        await using var old = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await old.SendAsync("GET /own/chunked HTTP/1.0\r\n\r\n");
        var http10 = await old.ReadResponseAsync();
        Assert.True(http10?.Status == 200, http10?.ToString());
        Assert.Null(http10!.Header("Transfer-Encoding"));
        Assert.Equal("first,second", http10.BodyText);
    }

    [Fact]
    public async Task EmptyUpstreamAnswer_HasContentLengthZero_AndHeadAnswerHasNoBody()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync("GET /own/empty HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nHEAD /own/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

        var empty = await connection.ReadResponseAsync();
        Assert.True(empty?.Status == 202, empty?.ToString());
        Assert.Equal("0", empty!.Header("Content-Length"));
        var head = await connection.ReadResponseAsync(forHead: true);
        Assert.True(head?.Status == 200, head?.ToString());
        // Nothing after the HEAD answer's head: another request still works.
        await connection.SendAsync("GET /own/echo?after=head HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        Assert.Equal("GET /own/echo?after=head body=", (await connection.ReadResponseAsync())?.BodyText);
    }

    [Theory]
    [InlineData("GET /own/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n", 400)]
    [InlineData("GET /own/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n folded: x\r\n\r\n", 400)]
    [InlineData("GET /own/echo HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET /own/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)]
    [InlineData("GET /own/echo HTTP/1.7\r\nHost: 127.0.0.1\r\n\r\n", 505)]
    public async Task MalformedHead_RefusedAsKestrelRefusesIt(string request, int status)
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync(request);

        var response = await connection.ReadResponseAsync();

        Assert.True(response?.Status == status, $"expected {status}, got:\n{response}");
    }

    [Fact]
    public async Task OversizedHead_Answered431()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync($"GET /own/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {new string('a', 40 * 1024)}\r\n\r\n");

        var response = await connection.ReadResponseAsync();

        Assert.True(response?.Status == 431, response?.ToString());
    }

    [Fact]
    public async Task DotSegmentsAndPercentEncoding_RoutedOnTheNormalisedPath()
    {
        // Left to Kestrel, which decodes and removes dot segments before routing, as before.
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync("GET /x/../own/%65cho HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

        var response = await connection.ReadResponseAsync();

        Assert.True(response?.Status == 200, response?.ToString());
        Assert.Equal("GET /own/echo body=", response!.BodyText);
    }

    [Fact]
    public async Task ConnectionNamingACustomHeaderAndKeepAlive_HeaderNotForwarded()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync("GET /own/echo?named HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Public: 2\r\n\r\n");

        var response = await connection.ReadResponseAsync();

        Assert.True(response?.Status == 200, response?.ToString());
        var seen = _fixture.Main.Last("/own/echo")!;
        Assert.Null(seen.Header("X-Secret"));
        Assert.Equal("2", seen.Header("X-Public"));
        Assert.Null(seen.Header("Connection"));
    }

    [Fact]
    public async Task ClientGoneBeforeTheAnswer_NextConnectionsServed()
    {
        for (var i = 0; i < 20; i++)
        {
            using var client = new TcpClient();
            await client.ConnectAsync("127.0.0.1", _fixture.Port);
            await client.GetStream().WriteAsync(Encoding.ASCII.GetBytes("GET /own/echo?gone HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
            client.Client.Close(0);
        }
        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url("/own/echo?after=gone"));
        Assert.True(response.Status == 200, response.ToString());
    }
}

/// <summary>The own server's timeouts (each test starts a gateway with short ones: a timeout test must wait them out).</summary>
public sealed class Http1ServerTimeoutTests
{
    private static async Task<(GatewayProcess Gateway, TestUpstream Upstream, int Port)> StartAsync(string serverExtra, IDictionary<string, string>? env = null)
    {
        var upstream = await TestUpstream.StartAsync(static c => c.Response.WriteAsync("ok"));
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
            {serverExtra}
            admin:
              enabled: false
            logging:
              level: info
            upstreams:
              main:
                servers: ["{upstream.Address}"]
            routes:
              - path: "/*"
                upstream: main
            """;
        var gateway = await GatewayProcess.StartAsync(yaml, port, env);
        return (gateway, upstream, port);
    }

    [Fact]
    public async Task IdleKeepAliveConnection_ClosedAfterIdleTimeout()
    {
        var (gateway, upstream, port) = await StartAsync("  idle_timeout_seconds: 1");
        await using var _ = gateway;
        await using var __ = upstream;
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        Assert.Equal("ok", (await connection.ReadResponseAsync())?.BodyText);

        // 1 s of idle time, checked by a once-a-second heartbeat: closed within about 2 s, and well before 6.
        Assert.True(await connection.IsClosedByServerAsync(TimeSpan.FromSeconds(6)), "the idle connection stayed open");
    }

    [Fact]
    public async Task SlowRequestHead_Answered408AndClosed()
    {
        var (gateway, upstream, port) = await StartAsync("  request_headers_timeout_seconds: 1");
        await using var _ = gateway;
        await using var __ = upstream;
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");

        var response = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(6));

        Assert.True(response?.Status == 408, response?.ToString());
        Assert.True(await connection.IsClosedByServerAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task KestrelOnly_WhenTurnedOff_StillServes()
    {
        var (gateway, upstream, port) = await StartAsync("", new Dictionary<string, string> { ["PORTICO_HTTP1_SERVER"] = "kestrel" });
        await using var _ = gateway;
        await using var __ = upstream;
        for (var i = 0; i < 50 && !gateway.Output.Contains("HTTP/1.1 server", StringComparison.Ordinal); i++)
        {
            await Task.Delay(100);
        }
        Assert.Contains("HTTP/1.1 server kestrel", gateway.Output, StringComparison.Ordinal);
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        Assert.Equal("ok", (await connection.ReadResponseAsync())?.BodyText);
    }
}
