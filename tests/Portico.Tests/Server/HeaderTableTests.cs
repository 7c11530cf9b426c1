using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using Portico.Proxy.Http1;
using Portico.Server;

namespace Portico.Tests.Server;

public sealed class RequestHeadersTests
{
    private static RequestHeaders Parse(RequestHeaders headers, string text)
    {
        var head = Encoding.Latin1.GetBytes(text);
        headers.Reset(head);
        Assert.True(RequestHeadParser.TryParse(head, headers, new RequestHeadLimits(8192, 32 * 1024, 100), out _));
        return headers;
    }

    [Fact]
    public void Lookup_CaseInsensitive_KnownAndUnknown_RepeatedNamesCombined()
    {
        var headers = Parse(new RequestHeaders(), "GET / HTTP/1.1\r\nHost: h\r\nX-Tag: a\r\nx-tag: b\r\nAccept: text/html\r\n\r\n");

        Assert.Equal("h", headers["HOST"]);
        Assert.Equal(new StringValues(["a", "b"]), headers["X-TAG"]);
        Assert.Equal("text/html", ((IHeaderDictionary)headers).Accept);
        Assert.True(headers.ContainsKey("x-Tag"));
        Assert.False(headers.ContainsKey("Cookie"));
        Assert.False(headers.ContainsKey("X-Other"));
        Assert.Equal(StringValues.Empty, headers["Cookie"]);
        Assert.Equal(3, headers.Count);
        Assert.Equal(["Host", "X-Tag", "Accept"], headers.Keys);
    }

    [Fact]
    public void SetAndRemove_ReplaceEveryLineOfTheName_AndClearRawFlag()
    {
        var headers = Parse(new RequestHeaders(), "GET / HTTP/1.1\r\nHost: h\r\nX-Tag: a\r\nX-Tag: b\r\nX-Keep: k\r\n\r\n");

        headers["x-tag"] = "c";
        Assert.True(headers.Remove("X-Keep"));
        headers["X-New"] = "n";
        headers["Authorization"] = "Bearer t";

        Assert.Equal("c", headers["X-Tag"]);
        Assert.False(headers.ContainsKey("X-Keep"));
        Assert.Equal("n", headers["x-new"]);
        Assert.Equal("Bearer t", ((IHeaderDictionary)headers).Authorization);
        var raw = 0;
        for (var i = 0; i < headers.EntryCount; i++)
        {
            ref var entry = ref headers.EntryAt(i);
            if (!entry.Removed && entry.Raw)
            {
                raw++;
            }
        }
        Assert.Equal(1, raw); // only Host is still the line as received
        headers["X-Gone"] = StringValues.Empty;
        Assert.False(headers.ContainsKey("X-Gone"));
    }

    [Fact]
    public void KnownValues_ReusedAcrossRequestsOfTheSameTable()
    {
        var headers = new RequestHeaders();
        Parse(headers, "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: agent/1.0\r\nX-Request-ID: one\r\n\r\n");
        var agent = ((IHeaderDictionary)headers).UserAgent.ToString();
        var id = headers["X-Request-ID"].ToString();
        headers.Release();

        Parse(headers, "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: agent/1.0\r\nX-Request-ID: one\r\n\r\n");

        Assert.Same(agent, ((IHeaderDictionary)headers).UserAgent.ToString());
        Assert.NotSame(id, headers["X-Request-ID"].ToString());
        Assert.Equal(id, headers["X-Request-ID"].ToString());
    }

    [Fact]
    public void SingleValue_OneLine_ElseNull_AndFollowsPhaseChanges()
    {
        var headers = Parse(new RequestHeaders(), "GET / HTTP/1.1\r\nHost: h.example\r\nVia: a\r\nVia: b\r\n\r\n");

        Assert.Equal("h.example", headers.SingleValue(RequestHeaderNames.Host));
        Assert.Null(headers.SingleValue(RequestHeaderNames.Via));          // two lines: the caller joins them
        Assert.Null(headers.SingleValue(RequestHeaderNames.XRequestId));   // absent
        headers["Host"] = "changed.example";
        Assert.Equal("changed.example", headers.SingleValue(RequestHeaderNames.Host));
        headers.Remove("Host");
        Assert.Null(headers.SingleValue(RequestHeaderNames.Host));
    }

    [Fact]
    public void ContentLength_ParsedFromHeader()
    {
        var headers = Parse(new RequestHeaders(), "DELETE / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");

        Assert.Equal(0, headers.ContentLength);
        headers.ContentLength = null;
        Assert.Null(headers.ContentLength);
        Assert.False(headers.ContainsKey("Content-Length"));
    }
}

public sealed class ResponseHeadersTests
{
    [Fact]
    public void SetGetRemove_AndContentLengthAsNumber()
    {
        var headers = new ResponseHeaders();
        headers["Content-Type"] = "text/plain";
        headers["X-A"] = new StringValues(["1", "2"]);
        headers["Content-Length"] = "12";

        Assert.Equal("text/plain", ((IHeaderDictionary)headers).ContentType);
        Assert.Equal(new StringValues(["1", "2"]), headers["x-a"]);
        Assert.Equal(12, headers.ContentLength);
        Assert.Equal("12", headers["content-length"]);
        Assert.Equal(3, headers.Count);
        Assert.True(headers.Remove("x-a"));
        Assert.False(headers.ContainsKey("X-A"));
        headers.Clear();
        Assert.Empty(headers);
    }

    [Fact]
    public void SetKnown_ReplacesWhatWasSet_ReadableByName()
    {
        var headers = new ResponseHeaders();
        headers.SetKnown(HeaderStrings.XRequestId, "first");
        Assert.Equal("first", headers["x-request-id"]);

        headers["X-Other"] = "o";
        headers.SetKnown(HeaderStrings.XRequestId, "second");

        Assert.Equal("second", headers["X-Request-ID"]);
        Assert.Equal(2, headers.Count);
        Assert.Equal(["X-Other", "X-Request-ID"], headers.Keys);
        headers.MakeReadOnly();
        Assert.Throws<InvalidOperationException>(() => headers.SetKnown(HeaderStrings.XRequestId, "third"));
    }

    [Theory]
    [InlineData("a\rb")]
    [InlineData("a\nb")]
    [InlineData("a\u0000b")]
    [InlineData("caf\u00e9")]
    public void InvalidValue_ThrowsAsKestrel(string value)
    {
        var headers = new ResponseHeaders();

        Assert.Throws<InvalidOperationException>(() => headers["X-Bad"] = value);
        Assert.Throws<InvalidOperationException>(() => headers["Bad Name"] = "ok");
    }

    [Fact]
    public void RawLines_ReadAsStrings_AndOutliveTheCallersBuffer()
    {
        var source = Encoding.ASCII.GetBytes("Server: origin\r\nX-Custom:  v1 \r\n");
        var headers = new ResponseHeaders();
        headers.AttachSource(source);
        headers.AddRaw(HeaderStrings.Find("Server"u8), 0, 14, 6, 8, 6);
        headers.AddRaw(-1, 16, 14, 8, 27, 2);

        Assert.Equal("v1", headers["x-custom"]);
        Array.Clear(source);

        Assert.Equal("origin", headers["Server"]);
        Assert.Equal("v1", headers["X-Custom"]);
    }

    [Fact]
    public void SetKnownAscii_IsARawLine_KeptWhenTheUpstreamHeadIsAttached_ReplacedBySetKnown()
    {
        var headers = new ResponseHeaders();
        headers.SetKnownAscii(HeaderStrings.XRequestId, "0123abcd"u8);
        // An upstream head attached after it goes behind it: both lines stay readable.
        var head = Encoding.ASCII.GetBytes("Server: origin\r\n");
        var offset = headers.AttachSource(head);
        Assert.Equal("X-Request-ID: 0123abcd".Length, offset);
        headers.AddRaw(HeaderStrings.Find("Server"u8), offset, 14, 6, offset + 8, 6);

        ref var id = ref headers.EntryAt(0);
        Assert.True(id.Raw);
        Assert.Equal("X-Request-ID: 0123abcd", Encoding.ASCII.GetString(headers.Source.Slice(id.LineStart, id.LineLength)));
        Assert.Equal("origin", headers["Server"]);
        Assert.Equal("0123abcd", headers["x-request-id"]);

        headers.SetKnown(HeaderStrings.XRequestId, "other");
        Assert.Equal("other", headers["X-Request-ID"]);
        Assert.Equal(2, headers.Count);

        // A long head grows the source without losing the line before it.
        headers.Reset();
        headers.SetKnownAscii(HeaderStrings.XRequestId, "feed"u8);
        var big = Encoding.ASCII.GetBytes("X-Big: " + new string('b', 3000));
        offset = headers.AttachSource(big);
        headers.AddRaw(-1, offset, big.Length, 5, offset + 7, 3000);
        Assert.Equal("feed", headers["X-Request-ID"]);
        Assert.Equal(3000, headers["X-Big"].ToString().Length);
        headers.MakeReadOnly();
        Assert.Throws<InvalidOperationException>(() => headers.SetKnownAscii(HeaderStrings.XRequestId, "x"u8));
    }

    [Fact]
    public void RawLine_WithControlCharacter_Throws()
    {
        var source = Encoding.Latin1.GetBytes("X-Bad: a\u0001b");
        var headers = new ResponseHeaders();
        headers.AttachSource(source);

        Assert.Throws<InvalidOperationException>(() => headers.AddRaw(-1, 0, source.Length, 5, 7, 3));
    }

    [Fact]
    public void AfterStart_ChangesThrow()
    {
        var headers = new ResponseHeaders();
        headers.MakeReadOnly();

        Assert.Throws<InvalidOperationException>(() => headers["X-A"] = "1");
        Assert.Throws<InvalidOperationException>(() => headers.ContentLength = 1);
    }
}
