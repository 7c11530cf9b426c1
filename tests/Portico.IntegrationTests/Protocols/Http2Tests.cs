using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Protocols;

/// <summary>
/// Cleartext HTTP/2 through the real gateway: h2c prior knowledge downstream with nghttp2's own clients (nghttp,
/// h2load), and the version translation both ways, HTTP/1.1 client to an h2c upstream and h2c client to an
/// HTTP/1.1 upstream, with request bodies.
/// </summary>
public sealed partial class Http2Tests : IClassFixture<Http2Tests.Fixture>
{
    private readonly Fixture _fixture;

    public Http2Tests(Fixture fixture)
    {
        _fixture = fixture;
    }

    [Fact(Timeout = 60_000)]
    public async Task H2cPriorKnowledge_Nghttp_Gets200AndUpstreamSeesRequest()
    {
        var before = _fixture.Http1Upstream.Requests;

        var result = await ExternalTool.RunAsync("nghttp", ["-v", "-t", "20", $"http://127.0.0.1:{_fixture.GatewayPort}/nghttp/check?x=1"], TimeSpan.FromSeconds(30));

        Assert.True(result.ExitCode == 0, $"nghttp failed:\n{result}\ngateway:\n{_fixture.Gateway.Output}");
        // nghttp speaks HTTP/2 from the first byte (the connection preface), never HTTP/1.1 Upgrade.
        Assert.Contains("recv SETTINGS frame", result.StdOut);
        Assert.Contains(":status: 200", result.StdOut);
        // nghttp prints the body after the frame log: the upstream's description of the request it received.
        var json = result.StdOut[result.StdOut.IndexOf("{\"protocol\"", StringComparison.Ordinal)..];
        var body = JsonDocument.Parse(json[..(json.IndexOf('}') + 1)]).RootElement;
        Assert.Equal("/nghttp/check?x=1", body.GetProperty("path").GetString());
        Assert.Equal("2 portico", body.GetProperty("via").GetString());
        Assert.Equal("http", body.GetProperty("x_forwarded_proto").GetString());
        Assert.Equal(before + 1, _fixture.Http1Upstream.Requests);
    }

    [Fact(Timeout = 120_000)]
    public async Task H2cPriorKnowledge_H2load2000Requests_AllSucceed()
    {
        var before = _fixture.Http1Upstream.Requests;

        // 10 connections x 10 concurrent streams: exercises HTTP/2 multiplexing downstream and the upstream pool.
        var result = await ExternalTool.RunAsync("h2load", ["-n", "2000", "-c", "10", "-m", "10", $"http://127.0.0.1:{_fixture.GatewayPort}/load"], TimeSpan.FromSeconds(100));

        Assert.True(result.ExitCode == 0, $"h2load failed:\n{result}\ngateway (exited: {_fixture.Gateway.HasExited}):\n{_fixture.Gateway.Output}");
        var requests = RequestsLine().Match(result.StdOut);
        Assert.True(requests.Success, $"no requests line in h2load output:\n{result}");
        Assert.Equal("2000", requests.Groups["total"].Value);
        Assert.Equal("2000", requests.Groups["succeeded"].Value);
        Assert.Equal("0", requests.Groups["failed"].Value);
        Assert.Equal("0", requests.Groups["errored"].Value);
        Assert.Equal("0", requests.Groups["timeout"].Value);
        Assert.Matches(@"status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx", result.StdOut);
        // h2load reports the protocol it negotiated; "h2c" proves no HTTP/1.1 fallback.
        Assert.Contains("Application protocol: h2c", result.StdOut);
        Assert.Equal(before + 2000, _fixture.Http1Upstream.Requests);
    }

    [Fact(Timeout = 60_000)]
    public async Task H2cUpstream_Http11ClientWithBody_ProxiedOverHttp2()
    {
        var (version, body) = await PostAsync("--http1.1", "/h2up/upload");

        Assert.Equal("1.1", version);
        Assert.Equal("HTTP/2", body.GetProperty("protocol").GetString());
        Assert.Equal("POST", body.GetProperty("method").GetString());
        Assert.Equal("/h2up/upload", body.GetProperty("path").GetString());
        Assert.Equal(_fixture.Payload.Length, body.GetProperty("body_length").GetInt64());
        Assert.Equal(_fixture.PayloadSha256, body.GetProperty("body_sha256").GetString());
    }

    [Fact(Timeout = 60_000)]
    public async Task Http11Upstream_H2cClientWithBody_ProxiedOverHttp11()
    {
        var (version, body) = await PostAsync("--http2-prior-knowledge", "/h1up/upload");

        Assert.Equal("2", version);
        Assert.Equal("HTTP/1.1", body.GetProperty("protocol").GetString());
        Assert.Equal("POST", body.GetProperty("method").GetString());
        Assert.Equal("/h1up/upload", body.GetProperty("path").GetString());
        Assert.Equal(_fixture.Payload.Length, body.GetProperty("body_length").GetInt64());
        Assert.Equal(_fixture.PayloadSha256, body.GetProperty("body_sha256").GetString());
    }

    [Fact(Timeout = 60_000)]
    public async Task H2cUpstream_H2cClient_ProxiedOverHttp2()
    {
        var (version, body) = await PostAsync("--http2-prior-knowledge", "/h2up/both");

        Assert.Equal("2", version);
        Assert.Equal("HTTP/2", body.GetProperty("protocol").GetString());
        Assert.Equal(_fixture.PayloadSha256, body.GetProperty("body_sha256").GetString());
    }

    /// <summary>POSTs the fixture's payload with curl; returns the HTTP version curl used and the upstream's JSON.</summary>
    private async Task<(string Version, JsonElement Body)> PostAsync(string versionFlag, string path)
    {
        var result = await ExternalTool.RunAsync("curl",
            ["-sS", "--max-time", "20", versionFlag, "-H", "Content-Type: application/octet-stream", "--data-binary", $"@{_fixture.PayloadPath}",
             "-w", "\n%{http_version} %{http_code}", $"http://127.0.0.1:{_fixture.GatewayPort}{path}"],
            TimeSpan.FromSeconds(30));
        Assert.True(result.ExitCode == 0, $"curl failed:\n{result}\ngateway (exited: {_fixture.Gateway.HasExited}):\n{_fixture.Gateway.Output}");
        var lines = result.StdOut.Split('\n');
        var summary = lines[^1].Split(' ');
        Assert.True(summary[1] == "200", $"expected 200:\n{result}\ngateway:\n{_fixture.Gateway.Output}");
        return (summary[0], JsonDocument.Parse(string.Join('\n', lines[..^1])).RootElement);
    }

    [GeneratedRegex(@"requests: (?<total>\d+) total, \d+ started, \d+ done, (?<succeeded>\d+) succeeded, (?<failed>\d+) failed, (?<errored>\d+) errored, (?<timeout>\d+) timeout")]
    private static partial Regex RequestsLine();

    /// <summary>An HTTP/1.1 and an h2c upstream behind one gateway, and a 256 KiB request body, for the class.</summary>
    public sealed class Fixture : IAsyncLifetime
    {
        private string? _directory;

        public TestUpstream Http1Upstream { get; private set; } = null!;

        public TestUpstream Http2Upstream { get; private set; } = null!;

        public GatewayProcess Gateway { get; private set; } = null!;

        public int GatewayPort { get; private set; }

        /// <summary>Random bytes: larger than the HTTP/2 initial window (64 KiB) so flow control is exercised.</summary>
        public byte[] Payload { get; } = RandomNumberGenerator.GetBytes(256 * 1024);

        public string PayloadSha256 => Convert.ToHexStringLower(SHA256.HashData(Payload));

        public string PayloadPath => Path.Combine(_directory!, "payload.bin");

        public async Task InitializeAsync()
        {
            _directory = ProtocolTestKit.CreateTempDirectory("h2");
            await File.WriteAllBytesAsync(PayloadPath, Payload);
            Http1Upstream = await TestUpstream.StartAsync(ProtocolTestKit.DescribeRequestAsync);
            Http2Upstream = await TestUpstream.StartAsync(ProtocolTestKit.DescribeRequestAsync, http2Only: true);
            GatewayPort = Ports.GetFree();
            Gateway = await GatewayProcess.StartAsync($"""
                server:
                  listen_address: "127.0.0.1"
                  listen_port: {GatewayPort}
                admin:
                  enabled: false
                logging:
                  level: warn
                upstreams:
                  - name: h1
                    servers: ["{Http1Upstream.Address}"]
                  - name: h2
                    protocol: h2c
                    servers: ["{Http2Upstream.Address}"]
                routes:
                  - path: "/h2up/*"
                    upstream: h2
                  - path: "/*"
                    upstream: h1
                """, GatewayPort);
        }

        public async Task DisposeAsync()
        {
            if (Gateway is not null)
            {
                await Gateway.DisposeAsync();
            }
            if (Http2Upstream is not null)
            {
                await Http2Upstream.DisposeAsync();
            }
            if (Http1Upstream is not null)
            {
                await Http1Upstream.DisposeAsync();
            }
            ProtocolTestKit.DeleteDirectory(_directory);
        }
    }
}
