using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Request and response bodies through the real gateway: large bodies both ways (Content-Length and chunked),
/// chunked responses when the upstream sends no length, and streaming without buffering.
/// </summary>
public sealed class BodyStreamingTests : IClassFixture<ProxyFixture>
{
    private const int LargeSize = 50 * 1024 * 1024;
    private static readonly Lazy<byte[]> Large = new(() =>
    {
        var bytes = new byte[LargeSize];
        new Random(20261122).NextBytes(bytes);
        return bytes;
    });
    private static readonly Lazy<string> LargeHash = new(() => Convert.ToHexStringLower(SHA256.HashData(Large.Value)));

    private readonly ProxyFixture _fixture;

    public BodyStreamingTests(ProxyFixture fixture)
    {
        _fixture = fixture;
        fixture.Main.Map("/bodies/upload", CountAndHashAsync);
        fixture.Main.Map("/bodies/download", static async context =>
        {
            context.Response.ContentLength = LargeSize;
            var bytes = Large.Value;
            for (var offset = 0; offset < bytes.Length; offset += 64 * 1024)
            {
                await context.Response.Body.WriteAsync(bytes.AsMemory(offset, Math.Min(64 * 1024, bytes.Length - offset)), context.RequestAborted);
            }
        });
        fixture.Main.Map("/bodies/nolength", static async context =>
        {
            // Two flushed writes and no Content-Length: the upstream itself answers chunked.
            await context.Response.WriteAsync("hello ", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            await context.Response.WriteAsync("world", context.RequestAborted);
        });
    }

    [Fact]
    public async Task Upload_50MBWithContentLength_StreamedWholeToUpstream()
    {
        var file = await WriteLargeFileAsync();
        try
        {
            // "Expect:" (empty) stops curl adding Expect: 100-continue to a large body; that is tested elsewhere.
            var response = await Curl.RunAsync(
                ["--max-time", "60", "-H", "Expect:", "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + file, _fixture.Url("/bodies/upload/cl")],
                TimeSpan.FromSeconds(90));

            Assert.True(response.Status == 200, response.ToString());
            Assert.Equal($"{LargeSize} {LargeHash.Value}", response.Body);
            var seen = _fixture.Main.Last("/bodies/upload/cl")!;
            Assert.Equal(LargeSize.ToString(CultureInfo.InvariantCulture), seen.Header("Content-Length"));
            Assert.Null(seen.Header("Transfer-Encoding"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Upload_50MBChunked_UpstreamSeesChunkedAndWholeBody()
    {
        var file = await WriteLargeFileAsync();
        try
        {
            var response = await Curl.RunAsync(
                ["--max-time", "60", "-H", "Expect:", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file, _fixture.Url("/bodies/upload/chunked")],
                TimeSpan.FromSeconds(90));

            Assert.True(response.Status == 200, response.ToString());
            Assert.Equal($"{LargeSize} {LargeHash.Value}", response.Body);
            var seen = _fixture.Main.Last("/bodies/upload/chunked")!;
            Assert.Equal("chunked", seen.Header("Transfer-Encoding"));
            Assert.Null(seen.Header("Content-Length"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Download_50MB_ArrivesWholeWithContentLength()
    {
        var file = Path.Combine(Path.GetTempPath(), $"portico-download-{Guid.NewGuid():N}.bin");
        try
        {
            var response = await Curl.RunAsync(["--max-time", "60", _fixture.Url("/bodies/download")], TimeSpan.FromSeconds(90), outputPath: file);

            Assert.True(response.Status == 200, response.ToString());
            Assert.Equal(LargeSize.ToString(CultureInfo.InvariantCulture), response.Header("Content-Length"));
            Assert.Equal(LargeSize, new FileInfo(file).Length);
            await using var stream = File.OpenRead(file);
            Assert.Equal(LargeHash.Value, Convert.ToHexStringLower(await SHA256.HashDataAsync(stream)));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Response_WithoutContentLength_ArrivesChunkedOnHttp11()
    {
        var response = await Curl.RunAsync("--max-time", "10", "--http1.1", _fixture.Url("/bodies/nolength"));

        Assert.True(response.Status == 200, response.ToString());
        Assert.Equal("HTTP/1.1", response.Final.Version);
        Assert.Equal("chunked", response.Header("Transfer-Encoding"));
        Assert.Null(response.Header("Content-Length"));
        Assert.Equal("hello world", response.Body);
    }

    [Fact]
    public async Task Response_Streamed_FirstChunkArrivesBeforeSecondIsWritten()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var secondWrittenAfterRelease = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _fixture.Main.Map("/bodies/stream", async context =>
        {
            await context.Response.WriteAsync("first\n", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            // Waits for the test to have read the first chunk; gives up after 10 s so a buffering proxy fails the
            // test instead of hanging it.
            var released = await Task.WhenAny(release.Task, Task.Delay(TimeSpan.FromSeconds(10))) == release.Task;
            secondWrittenAfterRelease.TrySetResult(released);
            await context.Response.WriteAsync("second\n", context.RequestAborted);
        });
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };

        using var response = await client.GetAsync(_fixture.Url("/bodies/stream"), HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        var first = await ReadAtLeastAsync(body, "first\n".Length, TimeSpan.FromSeconds(8));
        release.SetResult();
        var rest = await ReadToEndAsync(body, TimeSpan.FromSeconds(10));

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("first\n", first);
        Assert.True(await secondWrittenAfterRelease.Task.WaitAsync(TimeSpan.FromSeconds(10)), "the upstream wrote the second chunk before the client had the first: the gateway buffered");
        Assert.Equal("second\n", rest);
    }

    [Fact]
    public async Task Response_WithContentLength_HeadersLeaveBeforeTheBodyAndChunksAreNotHeld()
    {
        // A sized body is read without the zero-byte wait that open-ended bodies get; the headers must still leave
        // as soon as the body is not ready, and a first chunk must not wait for the rest.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var released = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _fixture.Main.Map("/bodies/sized-slow", async context =>
        {
            context.Response.ContentLength = "first\nsecond\n".Length;
            await context.Response.Body.FlushAsync(context.RequestAborted);
            var gotHeaders = await Task.WhenAny(release.Task, Task.Delay(TimeSpan.FromSeconds(10))) == release.Task;
            await context.Response.WriteAsync("first\n", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            await Task.Delay(300, context.RequestAborted);
            released.TrySetResult(gotHeaders);
            await context.Response.WriteAsync("second\n", context.RequestAborted);
        });
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };

        // Headers first: the upstream writes no body byte until the client has them.
        using var response = await client.GetAsync(_fixture.Url("/bodies/sized-slow"), HttpCompletionOption.ResponseHeadersRead)
            .WaitAsync(TimeSpan.FromSeconds(8));
        release.SetResult();
        await using var body = await response.Content.ReadAsStreamAsync();
        var first = await ReadAtLeastAsync(body, "first\n".Length, TimeSpan.FromSeconds(8));
        var secondAlreadyWritten = released.Task.IsCompleted;
        var rest = await ReadToEndAsync(body, TimeSpan.FromSeconds(10));

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(13, response.Content.Headers.ContentLength);
        Assert.True(await released.Task.WaitAsync(TimeSpan.FromSeconds(10)), "the headers reached the client only with the body");
        Assert.Equal("first\n", first);
        Assert.False(secondAlreadyWritten, "the first chunk reached the client only after the second was written: the gateway held it");
        Assert.Equal("second\n", rest);
    }

    private static async Task CountAndHashAsync(HttpContext context)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long count = 0;
        int read;
        while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
        {
            hash.AppendData(buffer, 0, read);
            count += read;
        }
        await context.Response.WriteAsync($"{count} {Convert.ToHexStringLower(hash.GetHashAndReset())}", context.RequestAborted);
    }

    private static async Task<string> WriteLargeFileAsync()
    {
        var path = Path.Combine(Path.GetTempPath(), $"portico-upload-{Guid.NewGuid():N}.bin");
        await File.WriteAllBytesAsync(path, Large.Value);
        return path;
    }

    private static async Task<string> ReadAtLeastAsync(Stream stream, int count, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var buffer = new byte[count];
        try
        {
            await stream.ReadExactlyAsync(buffer, cts.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"the first chunk did not arrive within {timeout}: the gateway holds back streamed responses");
        }
        return Encoding.UTF8.GetString(buffer);
    }

    private static async Task<string> ReadToEndAsync(Stream stream, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync(cts.Token);
    }
}
