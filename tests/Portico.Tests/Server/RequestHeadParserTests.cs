using System.Text;
using Portico.Server;

namespace Portico.Tests.Server;

public sealed class RequestHeadParserTests
{
    private static readonly RequestHeadLimits Limits = new(8192, 32 * 1024, 100);

    private static (bool Ok, RequestLine Line, RequestHeaders Headers, byte[] Head) Parse(string text, RequestHeadLimits? limits = null)
    {
        var head = Encoding.Latin1.GetBytes(text);
        var headers = new RequestHeaders();
        headers.Reset(head);
        var ok = RequestHeadParser.TryParse(head, headers, limits ?? Limits, out var line);
        return (ok, line, headers, head);
    }

    [Fact]
    public void TryParse_PlainGet_GivesLineAndHeaders()
    {
        var (ok, line, headers, head) = Parse("GET /api/items?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nAccept:  */* \r\nX-Custom: a\r\n\r\n");

        Assert.True(ok);
        Assert.Equal("GET", RequestHeadParser.Method(head.AsSpan(0, line.MethodLength)));
        Assert.Equal("/api/items?x=1&y=%20", Encoding.ASCII.GetString(head, line.TargetStart, line.TargetLength));
        Assert.Equal("/api/items".Length, line.PathLength);
        Assert.Equal(1, line.Minor);
        Assert.True(line.KeepAlive);
        Assert.False(line.ConnectionNamesHeaders);
        Assert.Equal("example.com:8080", headers["Host"]);
        Assert.Equal("*/*", headers["accept"]);
        Assert.Equal("a", headers["x-custom"]);
    }

    [Theory]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n")]
    [InlineData("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nName : x\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX: caf\u00e9\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX: a\u0001b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\nHost: a\n\n")]
    [InlineData("GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET /./b HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")]
    [InlineData("GET / HTTP/2.0\r\nHost: a\r\n\r\n")]
    [InlineData("GET / http/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("G@T / HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET /?q=<x> HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")]
    public void TryParse_RequestForKestrel_ReturnsFalse(string request)
    {
        Assert.False(Parse(request).Ok);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", false)]
    [InlineData("GET / HTTP/1.0\r\n\r\n", false)]
    [InlineData("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true)]
    [InlineData("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true)]
    public void TryParse_KeepAlive_FollowsVersionAndConnection(string request, bool keepAlive)
    {
        var (ok, line, _, _) = Parse(request);

        Assert.True(ok);
        Assert.Equal(keepAlive, line.KeepAlive);
    }

    [Fact]
    public void TryParse_ConnectionNamesCustomHeader_Flagged()
    {
        var (ok, line, _, _) = Parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n\r\n");

        Assert.True(ok);
        Assert.True(line.ConnectionNamesHeaders);
        Assert.True(line.KeepAlive);
    }

    [Fact]
    public void TryParse_ContentLengthZero_Taken()
    {
        Assert.True(Parse("DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").Ok);
    }

    [Fact]
    public void TryParse_Limits_AreKestrels()
    {
        var longLine = "GET /" + new string('a', 100) + " HTTP/1.1\r\nHost: a\r\n\r\n";
        Assert.False(Parse(longLine, new RequestHeadLimits(50, 32 * 1024, 100)).Ok);
        Assert.False(Parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", new RequestHeadLimits(8192, 32 * 1024, 2)).Ok);
        Assert.False(Parse("GET / HTTP/1.1\r\nHost: a\r\nA: " + new string('x', 100) + "\r\n\r\n", new RequestHeadLimits(8192, 64, 100)).Ok);
    }

    [Fact]
    public void TryParse_TrailingBytesAfterEmptyLine_ReturnsFalse()
    {
        // The caller passes exactly the head; anything else is a framing bug, not a request.
        Assert.False(Parse("GET / HTTP/1.1\r\nHost: a\r\n\r\nextra").Ok);
    }
}
