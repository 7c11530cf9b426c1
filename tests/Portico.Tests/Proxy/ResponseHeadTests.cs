using System.Text;
using Portico.Proxy;
using Portico.Proxy.Http1;

namespace Portico.Tests.Proxy;

/// <summary>The own HTTP/1.1 client's response-head parser: framing, reuse and the malformed heads it must refuse.</summary>
public sealed class ResponseHeadTests
{
    private static ResponseHead Parse(string head, bool requestWasHead = false)
    {
        var bytes = Encoding.Latin1.GetBytes(head);
        var end = ResponseHead.FindEnd(bytes);
        Assert.Equal(bytes.Length, end);
        var error = ResponseHead.TryParse(bytes, requestWasHead, out var parsed);
        Assert.Null(error);
        return parsed;
    }

    private static string? Error(string head)
    {
        var bytes = Encoding.Latin1.GetBytes(head);
        return ResponseHead.TryParse(bytes, false, out _);
    }

    [Fact]
    public void ContentLength_KeepAlive()
    {
        var head = Parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nServer: x\r\n\r\n");
        Assert.Equal(200, head.Status);
        Assert.Equal(BodyFraming.ContentLength, head.Framing);
        Assert.Equal(100, head.ContentLength);
        Assert.True(head.KeepAlive);
        Assert.Equal(17, head.HeadersStart);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false)]
    public void Chunked_WinsOverContentLength_AndBothMeansNoReuse(string text, bool keepAlive)
    {
        var head = Parse(text);
        Assert.Equal(BodyFraming.Chunked, head.Framing);
        Assert.Equal(keepAlive, head.KeepAlive);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n")]
    public void CloseDelimitedOrClose_NotReused(string text)
    {
        Assert.False(Parse(text).KeepAlive);
    }

    [Theory]
    [InlineData("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false)]
    [InlineData("HTTP/1.1 304 Not Modified\r\n\r\n", false)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true)]
    public void NoBody_ForHeadAnd204And304(string text, bool requestWasHead)
    {
        var head = Parse(text, requestWasHead);
        Assert.Equal(BodyFraming.None, head.Framing);
        Assert.True(head.KeepAlive);
    }

    [Theory]
    [InlineData("HTTX/1.1 200 OK\r\n\r\n")]
    [InlineData("HTTP/2.0 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 20 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 099 Odd\r\n\r\n")]
    [InlineData("HTTP/1.1 200OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nServer : x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n folded: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nno-colon\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nNa(me: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX{y}: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nN\u00e4me: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-Name-Longer-Than-Sixteen-Bytes/: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-Name-Longer-Than-Sixteen-Bytes\u007f: x\r\n\r\n")]
    public void Malformed_IsRefused(string text)
    {
        Assert.NotNull(Error(text));
    }

    [Theory]
    [InlineData("X-Y")]
    [InlineData("!#$%&'*+-.^_`|~")]
    [InlineData("X-Name-Longer-Than-Sixteen-Bytes-With-Every-Symbol-!#$%&'*+-.^_`|~")]
    public void EveryTokenCharacter_IsAcceptedInAName(string name)
    {
        Assert.Equal(7, Parse($"HTTP/1.1 200 OK\r\n{name}: v\r\nContent-Length: 7\r\n\r\n").ContentLength);
    }

    [Fact]
    public void EqualContentLengthRepeats_AreOneValue()
    {
        Assert.Equal(5, Parse("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").ContentLength);
    }

    [Fact]
    public void StatusLineWithoutReason_AndBareLf_AreAccepted()
    {
        var head = Parse("HTTP/1.1 404\nContent-Length: 0\n\n");
        Assert.Equal(404, head.Status);
        Assert.Equal(0, head.ContentLength);
    }

    [Fact]
    public void ConnectionTokens_AndGrpcStatus_AreNoticed()
    {
        var head = Parse("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Drop\r\ngrpc-status: 0\r\nContent-Length: 0\r\n\r\n");
        Assert.True(head.ConnectionNamesHeaders);
        Assert.True(head.HasGrpcStatus);
        Assert.True(head.KeepAlive);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nA: b\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nA: b\r\n\r")]
    [InlineData("HTTP/1.1 200 OK")]
    public void FindEnd_WaitsForTheEmptyLine(string partial)
    {
        Assert.Equal(-1, ResponseHead.FindEnd(Encoding.Latin1.GetBytes(partial)));
    }

    [Fact]
    public void FindEnd_StopsAtTheFirstEmptyLine_BodyFollows()
    {
        var bytes = Encoding.Latin1.GetBytes("HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody\r\n\r\n");
        Assert.Equal(25, ResponseHead.FindEnd(bytes));
    }

    [Fact]
    public void KnownNames_FitOneBitMask_AndCoverEveryHopByHopName()
    {
        // CopyResponseHead tracks a response's known names in a 64-bit mask, and treats unknown names as end-to-end.
        Assert.InRange(HeaderStrings.Count, 1, 64);
        foreach (var name in new[] { "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "HTTP2-Settings" })
        {
            Assert.True(HeaderRules.IsHopByHop(name));
            Assert.True(HeaderStrings.IsHopByHop(HeaderStrings.Find(Encoding.ASCII.GetBytes(name.ToLowerInvariant()))), name);
        }
        Assert.False(HeaderStrings.IsHopByHop(HeaderStrings.Find("Server"u8)));
        Assert.Equal(-1, HeaderStrings.Find("X-Custom"u8));
    }

    [Theory]
    [InlineData("1a", 26)]
    [InlineData("FF;name=value", 255)]
    [InlineData("0", 0)]
    [InlineData("10 ", 16)]
    public void ChunkSize_Parses(string line, long expected)
    {
        Assert.True(HttpForwarder.TryParseChunkSize(Encoding.Latin1.GetBytes(line), out var size));
        Assert.Equal(expected, size);
    }

    [Theory]
    [InlineData("")]
    [InlineData("xyz")]
    [InlineData("-1")]
    [InlineData("1234567890abcdef0")]
    public void ChunkSize_Refuses(string line)
    {
        Assert.False(HttpForwarder.TryParseChunkSize(Encoding.Latin1.GetBytes(line), out _));
    }
}
