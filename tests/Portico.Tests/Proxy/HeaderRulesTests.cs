using Microsoft.Extensions.Primitives;
using Portico.Proxy;

namespace Portico.Tests.Proxy;

public sealed class HeaderRulesTests
{
    [Theory]
    [InlineData("Connection")]
    [InlineData("connection")]
    [InlineData("Keep-Alive")]
    [InlineData("Proxy-Connection")]
    [InlineData("Proxy-Authenticate")]
    [InlineData("Proxy-Authorization")]
    [InlineData("TE")]
    [InlineData("te")]
    [InlineData("Trailer")]
    [InlineData("Transfer-Encoding")]
    [InlineData("Upgrade")]
    [InlineData("HTTP2-Settings")]
    public void IsHopByHop_HopByHopHeaders_True(string name) => Assert.True(HeaderRules.IsHopByHop(name));

    [Theory]
    [InlineData("Content-Length")]
    [InlineData("Host")]
    [InlineData("Trailers")]
    [InlineData("X-Upgrade")]
    [InlineData("Connections")]
    [InlineData("Authorization")]
    [InlineData("")]
    public void IsHopByHop_EndToEndHeaders_False(string name) => Assert.False(HeaderRules.IsHopByHop(name));

    [Theory]
    [InlineData("keep-alive", false)]
    [InlineData("close", false)]
    [InlineData("Upgrade", false)]
    [InlineData("keep-alive, Upgrade", false)]
    [InlineData("X-Secret", true)]
    [InlineData("keep-alive, X-Secret", true)]
    [InlineData(" , ,keep-alive", false)]
    public void HasCustomConnectionTokens_DetectsNamedHeaders(string value, bool expected) =>
        Assert.Equal(expected, HeaderRules.HasCustomConnectionTokens(new StringValues(value)));

    [Fact]
    public void ConnectionNames_MatchesTokensAcrossValuesCaseInsensitively()
    {
        var connection = new StringValues(["keep-alive, x-one", "X-Two"]);
        Assert.True(HeaderRules.ConnectionNames(connection, "X-One"));
        Assert.True(HeaderRules.ConnectionNames(connection, "x-two"));
        Assert.False(HeaderRules.ConnectionNames(connection, "X-Three"));
        Assert.False(HeaderRules.ConnectionNames(connection, "x-on"));
    }

    [Theory]
    [InlineData("trailers", true)]
    [InlineData(" Trailers ", true)]
    [InlineData("trailers, deflate", false)]
    [InlineData("gzip", false)]
    public void IsTrailersOnlyTe_OnlyExactTrailers(string value, bool expected) =>
        Assert.Equal(expected, HeaderRules.IsTrailersOnlyTe(new StringValues(value)));

    [Theory]
    [InlineData("abc-123", true)]
    [InlineData("550e8400-e29b-41d4-a716-446655440000", true)]
    [InlineData("01ARZ3NDEKTSV4RRFFQ69G5FAV", true)]
    [InlineData("a/b+c=", true)]
    [InlineData("", false)]
    [InlineData("has space", false)]
    [InlineData("new\nline", false)]
    [InlineData("quote\"", false)]
    public void IsValidRequestId_AcceptsCommonFormatsOnly(string id, bool expected) =>
        Assert.Equal(expected, HeaderRules.IsValidRequestId(id));

    [Fact]
    public void IsValidRequestId_RejectsOverlong()
    {
        Assert.True(HeaderRules.IsValidRequestId(new string('a', 128)));
        Assert.False(HeaderRules.IsValidRequestId(new string('a', 129)));
    }

    [Fact]
    public void NewRequestId_Is32HexAndUnique()
    {
        var a = HeaderRules.NewRequestId();
        var b = HeaderRules.NewRequestId();
        Assert.Equal(32, a.Length);
        Assert.Matches("^[0-9a-f]{32}$", a);
        Assert.NotEqual(a, b);
        Assert.True(HeaderRules.IsValidRequestId(a));
    }

    [Fact]
    public void WriteNewRequestId_WritesTheSameFormAsBytes()
    {
        var bytes = new byte[HeaderRules.GeneratedIdLength + 2];
        HeaderRules.WriteNewRequestId(bytes);
        var id = System.Text.Encoding.ASCII.GetString(bytes, 0, HeaderRules.GeneratedIdLength);
        Assert.Matches("^[0-9a-f]{32}$", id);
        Assert.Equal(7, Guid.ParseExact(id, "N").Version);
        Assert.Equal(0, bytes[^1]); // nothing past the id
        var again = new byte[HeaderRules.GeneratedIdLength];
        HeaderRules.WriteNewRequestId(again);
        Assert.NotEqual(id, System.Text.Encoding.ASCII.GetString(again));
    }

    [Fact]
    public void NewRequestId_IsUuidV7WithTheCurrentTimeAndNoRepeats()
    {
        var before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        string? previous = null;
        for (var i = 0; i < 100_000; i++)
        {
            var id = HeaderRules.NewRequestId();
            Assert.True(seen.Add(id), $"repeated id {id} after {i} ids");
            Assert.Equal('7', id[12]);
            Assert.Contains(id[16], "89ab");
            // The leading 48 bits are milliseconds: never behind the previous id's.
            Assert.True(previous is null || string.CompareOrdinal(id[..12], previous[..12]) >= 0, $"{id} sorts before {previous}");
            previous = id;
        }
        var after = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var first = Convert.ToInt64(seen.Min(StringComparer.Ordinal)![..12], 16);
        Assert.InRange(first, before, after);
        // The same layout .NET gives a v7 Guid: it parses as one.
        Assert.Equal(7, Guid.ParseExact(previous!, "N").Version);
    }
}

public sealed class ProxyErrorTests
{
    [Theory]
    [InlineData(ProxyErrorKind.ConnectRefused, 502)]
    [InlineData(ProxyErrorKind.TlsHandshakeFailed, 502)]
    [InlineData(ProxyErrorKind.UpstreamProtocolError, 502)]
    [InlineData(ProxyErrorKind.ConnectTimeout, 504)]
    [InlineData(ProxyErrorKind.UpstreamTimeout, 504)]
    [InlineData(ProxyErrorKind.NoHealthyServer, 503)]
    [InlineData(ProxyErrorKind.NoRoute, 404)]
    [InlineData(ProxyErrorKind.DownstreamClosed, 0)]
    [InlineData(ProxyErrorKind.Internal, 500)]
    public void StatusCode_MapsKinds(ProxyErrorKind kind, int status) =>
        Assert.Equal(status, new ProxyError(kind, ProxyErrorSource.Upstream, false, "m").StatusCode);

    [Fact]
    public void Reject_UsesExplicitStatus()
    {
        var error = ProxyError.Reject(401, "no");
        Assert.Equal(401, error.StatusCode);
        Assert.False(error.Retryable);
    }

    [Fact]
    public void ErrorBody_IsJsonWithRequestId()
    {
        var body = System.Text.Encoding.UTF8.GetString(ErrorResponse.Format(502, "upstream_connect_failed", "could not \"connect\"", "id-1"));
        using var doc = System.Text.Json.JsonDocument.Parse(body);
        Assert.Equal("upstream_connect_failed", doc.RootElement.GetProperty("error").GetString());
        Assert.Equal(502, doc.RootElement.GetProperty("status").GetInt32());
        Assert.Equal("could not \"connect\"", doc.RootElement.GetProperty("message").GetString());
        Assert.Equal("id-1", doc.RootElement.GetProperty("request_id").GetString());
    }
}
