using System.Text.RegularExpressions;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Header semantics through the real gateway: hop-by-hop headers dropped both ways (RFC 9110 §7.6.1),
/// X-Forwarded-*, Via and Host, and X-Request-ID accepted, replaced or generated.
/// </summary>
public sealed partial class HeaderForwardingTests : IClassFixture<ProxyFixture>
{
    private readonly ProxyFixture _fixture;

    public HeaderForwardingTests(ProxyFixture fixture)
    {
        _fixture = fixture;
        fixture.Main.Map("/headers/hop", static context =>
        {
            context.Response.Headers.Connection = "X-Up";
            context.Response.Headers["X-Up"] = "1";
            context.Response.Headers["Keep-Alive"] = "timeout=5, max=100";
            context.Response.Headers["X-Visible"] = "1";
            return Task.CompletedTask;
        });
    }

    [GeneratedRegex("^[0-9a-f]{32}$")]
    private static partial Regex GeneratedId();

    [Fact]
    public async Task HopByHop_RequestHeaders_NotForwarded()
    {
        var response = await Curl.RunAsync(
            "--max-time", "10",
            "-H", "Connection: X-Secret, X-Other",
            "-H", "X-Secret: 1",
            "-H", "X-Other: 2",
            "-H", "Keep-Alive: timeout=5",
            "-H", "Proxy-Connection: keep-alive",
            "-H", "TE: trailers, deflate",
            "-H", "Upgrade: foo",
            "-H", "Proxy-Authorization: x",
            "-H", "X-End-To-End: kept",
            _fixture.Url("/headers/hop/request"));

        Assert.True(response.Status == 200, response.ToString());
        var seen = _fixture.Main.Last("/headers/hop/request")!;
        var leaked = new[] { "X-Secret", "X-Other", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade", "Proxy-Authorization" }
            .Where(name => seen.Header(name) is not null)
            .Select(name => $"{name}: {seen.Header(name)}")
            .ToArray();
        Assert.True(leaked.Length == 0, "the upstream received hop-by-hop headers: " + string.Join("; ", leaked));
        // The gateway's own connection to the upstream may say keep-alive; it must not carry the client's tokens.
        Assert.DoesNotContain("X-Secret", seen.Header("Connection") ?? "", StringComparison.OrdinalIgnoreCase);
        Assert.Equal("kept", seen.Header("X-End-To-End"));
    }

    /// <summary>
    /// Kestrel replaces a Connection value that mixes a custom token with keep-alive/close/upgrade by that one token
    /// before the app runs (HttpHeaders.ParseConnection), so the custom name would be lost; Portico's own HTTP/1.1 server
    /// keeps the raw value, so the header it names is dropped.
    /// </summary>
    [Fact]
    public async Task HopByHop_HeaderNamedByConnectionWithKeepAlive_NotForwarded()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "Connection: X-Secret, keep-alive", "-H", "X-Secret: 1", _fixture.Url("/headers/hop/named-ka"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Null(_fixture.Main.Last("/headers/hop/named-ka")!.Header("X-Secret"));
    }

    [Fact]
    public async Task Upgrade_H2cOfferFromCurl_IsDeclinedAndServedAsHttp11()
    {
        // `curl --http2 http://...` offers "Upgrade: h2c"; only WebSocket upgrades are tunnelled, so the offer must
        // not reach the upstream and the answer is ordinary HTTP/1.1.
        var response = await Curl.RunAsync("--max-time", "10", "--http2", _fixture.Url("/headers/h2c-offer"));

        Assert.True(response.Status == 200, response.ToString());
        var seen = _fixture.Main.Last("/headers/h2c-offer")!;
        Assert.Null(seen.Header("Upgrade"));
        Assert.Null(seen.Header("HTTP2-Settings"));
    }

    [Fact]
    public async Task HopByHop_HeaderNamedByConnectionAlone_NotForwarded()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "Connection: X-Secret", "-H", "X-Secret: 1", _fixture.Url("/headers/hop/named"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Null(_fixture.Main.Last("/headers/hop/named")!.Header("X-Secret"));
    }

    [Fact]
    public async Task HopByHop_TeTrailersExactly_Forwarded()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "TE: trailers", _fixture.Url("/headers/hop/te"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("trailers", _fixture.Main.Last("/headers/hop/te")!.Header("TE"));
    }

    [Fact]
    public async Task HopByHop_ResponseHeadersNamedByConnection_NotReturned()
    {
        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url("/headers/hop"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Null(response.Header("X-Up"));
        Assert.Null(response.Header("Keep-Alive"));
        Assert.DoesNotContain("X-Up", response.Header("Connection") ?? "", StringComparison.OrdinalIgnoreCase);
        Assert.Equal("1", response.Header("X-Visible"));
    }

    [Fact]
    public async Task Forwarded_HeadersSetAndHostPreserved()
    {
        var response = await Curl.RunAsync(
            "--max-time", "10",
            "-H", "X-Forwarded-For: 1.2.3.4",
            "-H", "X-Forwarded-Proto: https",
            "-H", "X-Forwarded-Host: evil.example",
            _fixture.Url("/headers/forwarded"));

        Assert.True(response.Status == 200, response.ToString());
        var seen = _fixture.Main.Last("/headers/forwarded")!;
        var host = $"127.0.0.1:{_fixture.Port}";
        Assert.Equal("1.2.3.4, 127.0.0.1", seen.Header("X-Forwarded-For"));
        Assert.Equal("http", seen.Header("X-Forwarded-Proto"));
        Assert.Equal(host, seen.Header("X-Forwarded-Host"));
        Assert.Equal(host, seen.Header("Host"));
        Assert.Equal("1.1 portico", seen.Header("Via"));
    }

    [Fact]
    public async Task Forwarded_CustomHost_PreservedUpstream()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-H", "Host: api.example.test", _fixture.Url("/headers/host"));

        Assert.True(response.Status == 200, response.ToString());
        var seen = _fixture.Main.Last("/headers/host")!;
        Assert.Equal("api.example.test", seen.Header("Host"));
        Assert.Equal("api.example.test", seen.Header("X-Forwarded-Host"));
        Assert.Equal("127.0.0.1", seen.Header("X-Forwarded-For"));
    }

    [Fact]
    public async Task RequestId_WellFormed_PassedUpstreamAndReturned()
    {
        const string id = "client-id_123.abc:XYZ";

        var response = await Curl.RunAsync("--max-time", "10", "-H", "X-Request-ID: " + id, _fixture.Url("/headers/id/good"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal(id, response.Header("X-Request-ID"));
        Assert.Equal(id, _fixture.Main.Last("/headers/id/good")!.Header("X-Request-ID"));
    }

    [Theory]
    [InlineData("spaces", "bad id with spaces")]
    [InlineData("long", "")]
    public async Task RequestId_Malformed_ReplacedByGeneratedId(string name, string incoming)
    {
        if (incoming.Length == 0)
        {
            incoming = new string('a', 200);
        }
        var path = "/headers/id/bad-" + name;

        var response = await Curl.RunAsync("--max-time", "10", "-H", "X-Request-ID: " + incoming, _fixture.Url(path));

        Assert.True(response.Status == 200, response.ToString());
        var returned = response.Header("X-Request-ID");
        Assert.NotNull(returned);
        Assert.Matches(GeneratedId(), returned);
        Assert.Equal(returned, _fixture.Main.Last(path)!.Header("X-Request-ID"));
    }

    [Fact]
    public async Task RequestId_Absent_GeneratedSameBothWays()
    {
        var response = await Curl.RunAsync("--max-time", "10", _fixture.Url("/headers/id/none"));

        Assert.True(response.Status == 200, response.ToString());
        var returned = response.Header("X-Request-ID");
        Assert.NotNull(returned);
        Assert.Matches(GeneratedId(), returned);
        Assert.Equal(returned, _fixture.Main.Last("/headers/id/none")!.Header("X-Request-ID"));
    }

    [Fact]
    public async Task RequestId_TwoRequests_GetDifferentIds()
    {
        var first = await Curl.RunAsync("--max-time", "10", _fixture.Url("/headers/id/first"));
        var second = await Curl.RunAsync("--max-time", "10", _fixture.Url("/headers/id/second"));

        Assert.NotEqual(first.Header("X-Request-ID"), second.Header("X-Request-ID"));
    }
}
