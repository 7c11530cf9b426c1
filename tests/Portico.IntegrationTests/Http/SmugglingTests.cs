using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Ambiguous and malformed HTTP/1.1 input written byte for byte on a raw socket: the gateway must answer 4xx and
/// forward nothing. "Nothing forwarded" is checked by sending a well-formed barrier request afterwards on a new
/// connection: the upstream must have received exactly that one request.
/// </summary>
public sealed class SmugglingTests : IClassFixture<ProxyFixture>
{
    private readonly ProxyFixture _fixture;
    private int _recordedBeforeAttack;

    public SmugglingTests(ProxyFixture fixture)
    {
        _fixture = fixture;
    }

    [Fact]
    public async Task ContentLengthAndChunked_Rejected400_NotForwarded()
    {
        // RFC 9112 §6.1/§6.3: with both, a front end using one and a back end using the other disagree on where the
        // request ends; "GPOST" is what a back end reading by Content-Length would take as the next request.
        const string request =
            "POST /smuggle/clte HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n" +
            "0\r\n\r\nGPOST /smuggle/hidden HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

        var (response, closed) = await SendAndReadAsync(request);

        Assert.True(response?.Status == 400, $"expected 400, got:\n{response}\nthe upstream received: {DescribeReceived()}");
        Assert.True(closed, "the connection stayed open after an ambiguous request (RFC 9112 §6.3: the server MUST close it)");
        await AssertNothingForwardedAsync("/smuggle/clte");
    }

    [Theory]
    [InlineData("chunked, identity")]
    [InlineData("gzip")]
    [InlineData("xchunked")]
    public async Task TransferEncodingNotEndingInChunked_Rejected_NotForwarded(string transferEncoding)
    {
        var request = $"POST /smuggle/te HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: {transferEncoding}\r\n\r\n0\r\n\r\n";

        var (response, _) = await SendAndReadAsync(request);

        Assert.True(response is { Status: >= 400 and < 500 }, $"expected 4xx, got:\n{response}");
        await AssertNothingForwardedAsync("/smuggle/te");
    }

    [Fact]
    public async Task ConflictingContentLengths_Rejected400_NotForwarded()
    {
        const string request = "POST /smuggle/clcl HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nContent-Length: 10\r\n\r\nabcdefghij";

        var (response, _) = await SendAndReadAsync(request);

        Assert.True(response?.Status == 400, $"expected 400, got:\n{response}");
        await AssertNothingForwardedAsync("/smuggle/clcl");
    }

    [Fact]
    public async Task MalformedHeaderLine_Rejected400_NotForwarded()
    {
        const string request = "GET /smuggle/badheader HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n";

        var (response, _) = await SendAndReadAsync(request);

        Assert.True(response?.Status == 400, $"expected 400, got:\n{response}");
        await AssertNothingForwardedAsync("/smuggle/badheader");
    }

    [Fact]
    public async Task HeaderBlockOf40KB_Rejected431_NotForwarded()
    {
        var filler = new string('x', 4000);
        var headers = string.Concat(Enumerable.Range(0, 10).Select(i => $"X-Filler-{i}: {filler}\r\n"));
        var request = $"GET /smuggle/bigheaders HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n";

        var (response, _) = await SendAndReadAsync(request);

        Assert.True(response?.Status == 431, $"expected 431, got:\n{response}");
        await AssertNothingForwardedAsync("/smuggle/bigheaders");
    }

    [Fact]
    public async Task RequestLineOverLimit_Rejected4xx_NotForwarded()
    {
        var request = $"GET /smuggle/longline/{new string('a', 20_000)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

        var (response, _) = await SendAndReadAsync(request);

        // Kestrel answers 414 for a request line over MaxRequestLineSize.
        Assert.True(response is { Status: >= 400 and < 500 }, $"expected 4xx, got:\n{response}");
        await AssertNothingForwardedAsync("/smuggle/longline");
    }

    private async Task<(RawResponse? Response, bool Closed)> SendAndReadAsync(string request)
    {
        _recordedBeforeAttack = _fixture.Main.Requests;
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync(request);
        var response = await connection.ReadResponseAsync();
        var closed = await connection.IsClosedByServerAsync(TimeSpan.FromSeconds(5));
        return (response, closed);
    }

    /// <summary>
    /// Sends a well-formed barrier request and checks the upstream received it and nothing else since
    /// <paramref name="attackPath"/> was sent (neither the attack nor a request hidden in its body).
    /// </summary>
    private async Task AssertNothingForwardedAsync(string attackPath)
    {
        var barrierPath = "/smuggle/barrier/" + Guid.NewGuid().ToString("N");
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);
        await connection.SendAsync($"GET {barrierPath} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        var barrier = await connection.ReadResponseAsync();
        Assert.True(barrier?.Status == 200, $"barrier request failed:\n{barrier}");

        var received = _fixture.Main.Recorded.Skip(_recordedBeforeAttack).ToArray();
        Assert.True(received.Length == 1 && received[0].Path == barrierPath, $"after the attack on {attackPath} the upstream received: {DescribeReceived()}");
    }

    private string DescribeReceived() => string.Join(", ", _fixture.Main.Recorded.Skip(_recordedBeforeAttack)
        .Select(r => r.Method + " " + r.RawTarget + " (" + string.Join("; ", r.Headers.Select(h => h.Key + ": " + h.Value)) + ")"));
}
