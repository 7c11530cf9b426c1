using System.Text.Json;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Protocols;

/// <summary>
/// TLS on both sides of the real gateway: the HTTPS listener (ALPN h2/http/1.1, TLS 1.2 and 1.3 only) probed with
/// curl and openssl s_client, and TLS upstream connections to a Kestrel HTTPS server with a self-signed
/// certificate, with and without verification.
/// </summary>
public sealed class TlsTests : IClassFixture<TlsTests.Fixture>
{
    private readonly Fixture _fixture;

    public TlsTests(Fixture fixture)
    {
        _fixture = fixture;
    }

    [Fact(Timeout = 60_000)]
    public async Task TlsListener_CurlAsksForHttp2_NegotiatesH2ByAlpn()
    {
        var (version, status, body) = await CurlAsync("-k", "--http2", $"https://127.0.0.1:{_fixture.TlsPort}/alpn/h2");

        Assert.Equal(200, status);
        Assert.Equal("2", version);
        Assert.Equal("2 portico", body.GetProperty("via").GetString());
    }

    [Fact(Timeout = 60_000)]
    public async Task TlsListener_CurlAsksForHttp11_UsesHttp11()
    {
        var (version, status, body) = await CurlAsync("-k", "--http1.1", $"https://127.0.0.1:{_fixture.TlsPort}/alpn/h1");

        Assert.Equal(200, status);
        Assert.Equal("1.1", version);
        Assert.Equal("1.1 portico", body.GetProperty("via").GetString());
    }

    [Fact(Timeout = 60_000)]
    public async Task TlsListener_Request_UpstreamSeesXForwardedProtoHttps()
    {
        var (_, tlsStatus, overTls) = await CurlAsync("-k", "--http2", $"https://127.0.0.1:{_fixture.TlsPort}/proto");
        var (_, plainStatus, overPlain) = await CurlAsync("--http1.1", $"http://127.0.0.1:{_fixture.PlainPort}/proto");

        Assert.Equal(200, tlsStatus);
        Assert.Equal("https", overTls.GetProperty("x_forwarded_proto").GetString());
        Assert.Equal("127.0.0.1", overTls.GetProperty("x_forwarded_for").GetString());
        // The contrast: the same route over the cleartext port says http.
        Assert.Equal(200, plainStatus);
        Assert.Equal("http", overPlain.GetProperty("x_forwarded_proto").GetString());
    }

    [Theory(Timeout = 60_000)]
    [InlineData("-tls1_2", "TLSv1.2")]
    [InlineData("-tls1_3", "TLSv1.3")]
    public async Task TlsListener_OpenSslWithAlpnH2_HandshakeSucceeds(string versionFlag, string expectedVersion)
    {
        var result = await ExternalTool.RunAsync("openssl",
            ["s_client", "-connect", $"127.0.0.1:{_fixture.TlsPort}", "-servername", "localhost", "-alpn", "h2", versionFlag],
            TimeSpan.FromSeconds(20), stdin: "");

        var output = result.StdOut + result.StdErr;
        Assert.True(result.ExitCode == 0, $"s_client failed:\n{result}\n{_fixture.Describe()}");
        Assert.Contains($"New, {expectedVersion}, Cipher is ", output);
        Assert.Contains("ALPN protocol: h2", output);
        Assert.Contains("subject=CN = localhost", output);
    }

    [Fact(Timeout = 60_000)]
    public async Task TlsListener_OpenSslTls11_HandshakeRejectedByServer()
    {
        // SECLEVEL=0 lets this OpenSSL 3 client offer TLS 1.1 at all (Debian's default floor is TLS 1.2), so a
        // failure is the server's refusal: alert 70, protocol_version (RFC 8446 §6.2), sent by the gateway.
        var result = await ExternalTool.RunAsync("openssl",
            ["s_client", "-connect", $"127.0.0.1:{_fixture.TlsPort}", "-servername", "localhost", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
            TimeSpan.FromSeconds(20), stdin: "");

        var output = result.StdOut + result.StdErr;
        Assert.NotEqual(0, result.ExitCode);
        Assert.True(output.Contains("alert protocol version", StringComparison.Ordinal), $"expected the server's protocol_version alert:\n{result}\n{_fixture.Describe()}");
        Assert.DoesNotContain("New, TLSv1.1", output);
    }

    [Fact(Timeout = 60_000)]
    public async Task TlsUpstream_VerifyOffWithSelfSignedServer_Proxied()
    {
        var before = _fixture.TlsUpstream.Requests;

        var (_, status, body) = await CurlAsync("--http1.1", $"http://127.0.0.1:{_fixture.PlainPort}/to-tls-noverify/thing?q=1");

        Assert.Equal(200, status);
        // Kestrel reports the scheme of the connection it accepted: the gateway really spoke TLS to it.
        Assert.Equal("https", body.GetProperty("scheme").GetString());
        Assert.Equal("/to-tls-noverify/thing?q=1", body.GetProperty("path").GetString());
        Assert.Equal(before + 1, _fixture.TlsUpstream.Requests);
    }

    [Fact(Timeout = 60_000)]
    public async Task TlsUpstream_VerifyOnWithSelfSignedServer_Returns502()
    {
        var before = _fixture.TlsUpstream.Requests;

        var result = await ExternalTool.RunAsync("curl",
            ["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", $"http://127.0.0.1:{_fixture.PlainPort}/to-tls-verify/thing"],
            TimeSpan.FromSeconds(30));

        Assert.True(result.ExitCode == 0, $"curl failed:\n{result}\n{_fixture.Describe()}");
        Assert.Equal("502", result.StdOut.Trim());
        // The handshake failed, so no request reached the upstream's handler.
        Assert.Equal(before, _fixture.TlsUpstream.Requests);
    }

    /// <summary>Runs curl; returns the HTTP version it used, the status and the upstream's JSON description.</summary>
    private async Task<(string Version, int Status, JsonElement Body)> CurlAsync(params string[] args)
    {
        var all = new List<string> { "-sS", "--max-time", "20", "-w", "\n%{http_version} %{http_code}" };
        all.AddRange(args);
        var result = await ExternalTool.RunAsync("curl", all, TimeSpan.FromSeconds(30));
        Assert.True(result.ExitCode == 0, $"curl failed:\n{result}\n{_fixture.Describe()}");
        var lines = result.StdOut.Split('\n');
        var summary = lines[^1].Split(' ');
        var body = string.Join('\n', lines[..^1]);
        var status = int.Parse(summary[1], System.Globalization.CultureInfo.InvariantCulture);
        var json = status == 200 ? JsonDocument.Parse(body).RootElement : default;
        return (summary[0], status, json);
    }

    /// <summary>A certificate, a plain and an HTTPS upstream, and one gateway with a TLS listener for the class.</summary>
    public sealed class Fixture : IAsyncLifetime
    {
        public TestCertificate Certificate { get; private set; } = null!;

        public TestUpstream PlainUpstream { get; private set; } = null!;

        public TlsTestUpstream TlsUpstream { get; private set; } = null!;

        public GatewayProcess Gateway { get; private set; } = null!;

        public int PlainPort { get; private set; }

        public int TlsPort { get; private set; }

        /// <summary>The gateway's state and output, for failure messages.</summary>
        public string Describe() => $"gateway {(Gateway.HasExited ? $"exited with {Gateway.ExitCode}" : "running")}:\n{Gateway.Output}";

        public async Task InitializeAsync()
        {
            Certificate = await TestCertificate.CreateAsync();
            PlainUpstream = await TestUpstream.StartAsync(ProtocolTestKit.DescribeRequestAsync);
            TlsUpstream = await TlsTestUpstream.StartAsync(ProtocolTestKit.DescribeRequestAsync, Certificate);
            PlainPort = Ports.GetFree();
            TlsPort = Ports.GetFree();
            // max_retries 0 on the verifying group: a TLS failure is retryable, and one attempt is what is tested.
            Gateway = await GatewayProcess.StartAsync($"""
                server:
                  listen_address: "127.0.0.1"
                  listen_port: {PlainPort}
                admin:
                  enabled: false
                tls:
                  enabled: true
                  cert_path: "{Certificate.CertPath}"
                  key_path: "{Certificate.KeyPath}"
                  listen_address: "127.0.0.1"
                  listen_port: {TlsPort}
                upstreams:
                  - name: plain
                    servers: ["{PlainUpstream.Address}"]
                  - name: tls-noverify
                    servers:
                      - host: "127.0.0.1"
                        port: {TlsUpstream.Port}
                        tls: true
                        tls_verify: false
                  - name: tls-verify
                    max_retries: 0
                    servers:
                      - host: "127.0.0.1"
                        port: {TlsUpstream.Port}
                        tls: true
                        tls_verify: true
                routes:
                  - path: "/to-tls-noverify/*"
                    upstream: tls-noverify
                  - path: "/to-tls-verify/*"
                    upstream: tls-verify
                  - path: "/*"
                    upstream: plain
                """, TlsPort);
            await Gateway.WaitForPortAsync(PlainPort, TimeSpan.FromSeconds(10));
        }

        public async Task DisposeAsync()
        {
            if (Gateway is not null)
            {
                await Gateway.DisposeAsync();
            }
            if (TlsUpstream is not null)
            {
                await TlsUpstream.DisposeAsync();
            }
            if (PlainUpstream is not null)
            {
                await PlainUpstream.DisposeAsync();
            }
            Certificate?.Dispose();
        }
    }
}
