using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Message framing through the real gateway: Expect: 100-continue, responses without a body (HEAD, 204, 304),
/// HTTP/2 trailers, and a client that gives up cancelling the upstream request.
/// </summary>
public sealed class MessageFramingTests : IClassFixture<ProxyFixture>
{
    private readonly ProxyFixture _fixture;

    public MessageFramingTests(ProxyFixture fixture)
    {
        _fixture = fixture;
        fixture.Main.Map("/expect/accept", static async context =>
        {
            var length = 0L;
            var buffer = new byte[16 * 1024];
            int read;
            while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
            {
                length += read;
            }
            await context.Response.WriteAsync($"received {length}", context.RequestAborted);
        });
        fixture.Main.Map("/expect/deny", static context =>
        {
            // Answers without reading the body: the client must get this status instead of waiting for 100.
            context.Response.StatusCode = int.Parse(context.Request.Query["status"]!, System.Globalization.CultureInfo.InvariantCulture);
            return Task.CompletedTask;
        });
        fixture.Main.Map("/framing/head", static context =>
        {
            context.Response.Headers["X-Kept"] = "yes";
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = 12345;
            return Task.CompletedTask;
        });
        fixture.Main.Map("/framing/204", static context =>
        {
            context.Response.StatusCode = StatusCodes.Status204NoContent;
            context.Response.Headers["X-Kept"] = "yes";
            return Task.CompletedTask;
        });
        fixture.Main.Map("/framing/304", static context =>
        {
            context.Response.StatusCode = StatusCodes.Status304NotModified;
            context.Response.Headers.ETag = "\"v1\"";
            context.Response.Headers.CacheControl = "max-age=60";
            context.Response.Headers["X-Kept"] = "yes";
            return Task.CompletedTask;
        });
        fixture.H2.Map("/h2/trailers", static async context =>
        {
            await context.Response.WriteAsync("body-with-trailers", context.RequestAborted);
            context.Response.AppendTrailer("x-checksum", "abc");
        });
    }

    [Fact]
    public async Task ExpectContinue_UpstreamReadsBody_ClientGets100Then200()
    {
        var body = new string('b', 100_000);

        var response = await Curl.RunAsync(
            ["--max-time", "10", "-H", "Expect: 100-continue", "-H", "Content-Type: text/plain", "--data-binary", body, _fixture.Url("/expect/accept")],
            TimeSpan.FromSeconds(20));

        Assert.True(response.Status == 200, response.ToString());
        Assert.True(response.Heads.Count >= 2 && response.Heads[0].Status == 100, "no 100 Continue before the final response:\n" + response);
        Assert.Equal("received 100000", response.Body);
    }

    [Theory]
    [InlineData(401)]
    [InlineData(417)]
    public async Task ExpectContinue_UpstreamAnswersWithoutReading_ClientGetsThatStatus(int status)
    {
        var path = $"/expect/deny?status={status}";
        var body = new string('d', 1_000_000);
        var file = Path.Combine(Path.GetTempPath(), $"portico-expect-{Guid.NewGuid():N}.txt");
        await File.WriteAllTextAsync(file, body);
        try
        {
            var clock = Stopwatch.StartNew();
            var response = await Curl.RunAsync(
                ["--max-time", "10", "-H", "Expect: 100-continue", "--data-binary", "@" + file, _fixture.Url(path)],
                TimeSpan.FromSeconds(20));
            clock.Stop();

            Assert.True(response.ExitCode == 0, response.ToString());
            Assert.Equal(status, response.Status);
            Assert.DoesNotContain(response.Heads, h => h.Status == 100);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
            Assert.NotNull(_fixture.Main.Last("/expect/deny"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData(401)]
    [InlineData(417)]
    public async Task ExpectContinue_FinalAnswerBeforeBody_NextRequestNotSwallowedAsBody(int status)
    {
        // Large enough that neither the gateway's HTTP client nor curl sends it after an error answer (SocketsHttpHandler
        // still sends bodies of up to 1 KiB).
        const int bodyLength = 100_000;
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);

        await connection.SendAsync($"POST /expect/deny?status={status} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: {bodyLength}\r\n\r\n");
        var first = await connection.ReadResponseAsync();
        if (first?.Status == 100)
        {
            // The gateway asked for the body after all: then the client owes it.
            await connection.SendAsync(new string('b', bodyLength));
            first = await connection.ReadResponseAsync();
        }
        Assert.True(first?.Status == status, $"expected {status}, got:\n{first}");
        if (first.Header("Connection") == "close")
        {
            // RFC 9110 §10.1.1: the server said it will not read the body; a client opens a new connection.
            return;
        }

        // Kept open: then the next request (sent as curl does after a 417, without the unsent body) must be read as
        // a request, not as that body.
        await connection.SendAsync("GET /framing/after-expect HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        RawResponse? second = null;
        try
        {
            second = await connection.ReadResponseAsync(timeout: TimeSpan.FromSeconds(5));
        }
        catch (TimeoutException)
        {
            Assert.Fail("the connection stayed open without Connection: close, and the next request on it got no answer: the gateway read it as the unsent body");
        }
        Assert.True(second?.Status == 200, $"second response:\n{second}");
    }

    [Fact]
    public async Task Head_ContentLengthKept_NoBodyOnTheWire()
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);

        await connection.SendAsync("HEAD /framing/head HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        var head = await connection.ReadResponseAsync(forHead: true);
        // Any body byte after the HEAD response would be read as the start of the next response.
        await connection.SendAsync("GET /framing/next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        var next = await connection.ReadResponseAsync();

        Assert.NotNull(head);
        Assert.Equal(200, head.Status);
        Assert.Equal("12345", head.Header("Content-Length"));
        Assert.Equal("yes", head.Header("X-Kept"));
        Assert.Null(head.Header("Transfer-Encoding"));
        Assert.NotNull(next);
        Assert.True(next.Status == 200, next.ToString());
        Assert.Equal("main GET /framing/next", next.BodyText);
        Assert.Equal("HEAD", _fixture.Main.Last("/framing/head")!.Method);
    }

    [Fact]
    public async Task Head_ThroughCurl_ContentLengthKept()
    {
        var response = await Curl.RunAsync("--max-time", "10", "-I", _fixture.Url("/framing/head"));

        // curl -I writes the head to its output too, so the body file is not checked here; the raw test above proves
        // that no body bytes follow.
        Assert.True(response.ExitCode == 0 && response.Status == 200, response.ToString());
        Assert.Equal("12345", response.Header("Content-Length"));
    }

    [Theory]
    [InlineData("/framing/204", 204)]
    [InlineData("/framing/304", 304)]
    public async Task BodylessStatus_HeadersKept_NoBodyOnTheWire(string path, int status)
    {
        await using var connection = await RawHttpConnection.ConnectAsync(_fixture.Port);

        await connection.SendAsync($"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: \"v1\"\r\n\r\n");
        var response = await connection.ReadResponseAsync();
        await connection.SendAsync("GET /framing/next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        var next = await connection.ReadResponseAsync();

        Assert.NotNull(response);
        Assert.True(response.Status == status, response.ToString());
        Assert.Equal("yes", response.Header("X-Kept"));
        Assert.Null(response.Header("Transfer-Encoding"));
        if (status == 304)
        {
            Assert.Equal("\"v1\"", response.Header("ETag"));
            Assert.Equal("max-age=60", response.Header("Cache-Control"));
        }
        else
        {
            Assert.Null(response.Header("Content-Length"));
        }
        Assert.NotNull(next);
        Assert.True(next.Status == 200, "stray bytes after the bodyless response:\n" + next);
        Assert.Equal("main GET /framing/next", next.BodyText);
    }

    [Fact]
    public async Task Trailers_Http2UpstreamToHttp2Client_TrailerArrives()
    {
        using var client = new HttpClient
        {
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(10),
        };

        using var response = await client.GetAsync(_fixture.Url("/h2/trailers"));
        var body = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal("body-with-trailers", body);
        Assert.True(response.TrailingHeaders.TryGetValues("x-checksum", out var values), "no x-checksum trailer");
        Assert.Equal(["abc"], values);
        Assert.Equal("HTTP/2", _fixture.H2.Last("/h2/trailers")!.Protocol);
    }

    [Fact]
    public async Task Trailers_CurlHttp2PriorKnowledge_TrailerArrives()
    {
        var response = await Curl.RunAsync("--max-time", "10", "--http2-prior-knowledge", "-v", _fixture.Url("/h2/trailers"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("HTTP/2", response.Final.Version);
        Assert.Equal("body-with-trailers", response.Body);
        // curl's header dump puts trailer fields after the head's fields.
        Assert.True(response.Header("x-checksum") == "abc", response.ToString());
    }

    [Fact]
    public async Task ClientAbort_HttpClientGivesUp_UpstreamRequestCancelled()
    {
        var slow = MapSlowUpstream("/abort/httpclient");
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var giveUp = new CancellationTokenSource();

        var request = client.GetAsync(_fixture.Url("/abort/httpclient"), giveUp.Token);
        await slow.Arrived.Task.WaitAsync(TimeSpan.FromSeconds(10));
        // The client gives up 1 s after the upstream started working on the request (a 1 s client timeout that
        // cannot fire before the request got there, however slow a cold gateway is).
        giveUp.CancelAfter(TimeSpan.FromSeconds(1));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request);
        var abortedAt = Stopwatch.GetTimestamp();
        var cancelledAt = await slow.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.True(Stopwatch.GetElapsedTime(abortedAt, cancelledAt) < TimeSpan.FromSeconds(5),
            $"the upstream saw the cancellation {Stopwatch.GetElapsedTime(abortedAt, cancelledAt)} after the client gave up");
    }

    [Fact]
    public async Task ClientAbort_CurlMaxTime_UpstreamRequestCancelled()
    {
        var slow = MapSlowUpstream("/abort/curl");
        // Warm-up: curl's 1 s budget must be spent waiting on the upstream, not on a cold gateway's first request.
        var warm = await Curl.RunAsync("--max-time", "10", _fixture.Url("/abort/warm-up"));
        Assert.True(warm.Status == 200, warm.ToString());

        var response = await Curl.RunAsync("--max-time", "1", _fixture.Url("/abort/curl"));
        var abortedAt = Stopwatch.GetTimestamp();

        Assert.Equal(28, response.ExitCode); // curl: operation timed out
        Assert.True(slow.Arrived.Task.IsCompleted, "the request did not reach the upstream within curl's 1 s");
        var cancelledAt = await slow.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(Stopwatch.GetElapsedTime(abortedAt, cancelledAt) < TimeSpan.FromSeconds(5),
            $"the upstream saw the cancellation {Stopwatch.GetElapsedTime(abortedAt, cancelledAt)} after the client gave up");
    }

    private sealed record SlowUpstream(TaskCompletionSource Arrived, TaskCompletionSource<long> Cancelled);

    /// <summary>
    /// Maps an upstream handler that signals its arrival, then waits 30 s on RequestAborted; Cancelled completes with
    /// the <see cref="Stopwatch"/> timestamp of the cancellation (or fails when the wait ran out uncancelled).
    /// </summary>
    private SlowUpstream MapSlowUpstream(string path)
    {
        var slow = new SlowUpstream(new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously),
            new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously));
        _fixture.Main.Map(path, async context =>
        {
            slow.Arrived.TrySetResult();
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(30), context.RequestAborted);
                slow.Cancelled.TrySetException(new InvalidOperationException("the upstream request was never cancelled"));
            }
            catch (OperationCanceledException)
            {
                slow.Cancelled.TrySetResult(Stopwatch.GetTimestamp());
            }
        });
        return slow;
    }
}
