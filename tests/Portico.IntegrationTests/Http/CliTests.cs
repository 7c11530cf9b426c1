using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>The real `portico` executable's verbs: validate, version, start with a config path, log level control.</summary>
public sealed class CliTests
{
    private const string InvalidYaml = """
        server:
          bind_address: "127.0.0.1:1"
          listen_portt: 8080
        admin:
          enabled: false
        upstreams:
          backend:
            servers: ["127.0.0.1:3001"]
        routes:
          - path: "/*"
            upstream: "missing"
        """;

    [Fact]
    public async Task Validate_ValidFile_ExitsZero()
    {
        var path = await WriteTempAsync($"""
            server:
              bind_address: "127.0.0.1:{Ports.GetFree()}"
            upstreams:
              backend:
                servers: ["127.0.0.1:3001"]
            routes:
              - path: "/*"
                upstream: backend
            """);
        try
        {
            var result = await RunPorticoAsync("validate", path);

            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("OK", result.StdOut);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Validate_UnknownKeyAndUnknownUpstream_ExitsNonZeroWithBothErrors()
    {
        var path = await WriteTempAsync(InvalidYaml);
        try
        {
            var result = await RunPorticoAsync("validate", path);

            Assert.True(result.ExitCode != 0, result.ToString());
            var lines = result.StdErr.Split('\n');
            Assert.True(lines.Any(l => l.Contains("line 3,", StringComparison.Ordinal) && l.Contains("server.listen_portt", StringComparison.Ordinal)),
                "no error for the unknown key at line 3:\n" + result);
            Assert.True(lines.Any(l => l.Contains("line 11,", StringComparison.Ordinal) && l.Contains("routes[0].upstream", StringComparison.Ordinal) && l.Contains("missing", StringComparison.Ordinal)),
                "no error for the unknown upstream at line 11:\n" + result);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("config/production.yaml")]
    [InlineData("config/default.yaml")]
    public async Task Validate_ShippedConfig_ExitsZero(string relativePath)
    {
        var result = await RunPorticoAsync("validate", Path.Combine(RepositoryRoot.Path, relativePath));

        Assert.True(result.ExitCode == 0, result.ToString());
    }

    [Fact]
    public async Task Version_PrintsPortico010()
    {
        var result = await RunPorticoAsync("version");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("portico 0.1.0", result.StdOut.Trim());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Start_ConfigOptionOrArgument_Listens(bool useOption)
    {
        await using var upstream = await RecordingUpstream.StartAsync("cli");
        var port = Ports.GetFree();
        var path = await WriteTempAsync(MinimalYaml(port, upstream.Address));
        await using var gateway = GatewayProcess.Start(useOption ? ["--config", path] : [path], path);

        await gateway.WaitForPortAsync(port, TimeSpan.FromSeconds(30));
        var response = await Curl.RunAsync("--max-time", "10", $"http://127.0.0.1:{port}/cli");

        Assert.True(response.Status == 200, response + "\n" + gateway.Output);
        Assert.Equal("cli GET /cli", response.Body);
    }

    [Fact]
    public async Task Start_InvalidConfig_ExitsNonZeroWithErrors()
    {
        var path = await WriteTempAsync(InvalidYaml);
        await using var gateway = GatewayProcess.Start([path], path);

        Assert.True(await gateway.WaitForExitAsync(TimeSpan.FromSeconds(30)), "portico kept running on an invalid config:\n" + gateway.Output);
        Assert.NotEqual(0, gateway.ExitCode);
        // Output is collected asynchronously; the process has exited, so it is complete once the reader drains.
        await gateway.WaitForOutputAsync("routes[0].upstream", TimeSpan.FromSeconds(5));
        Assert.Contains("server.listen_portt", gateway.Output);
        Assert.Contains("line 3", gateway.Output);
        Assert.Contains("line 11", gateway.Output);
    }

    [Fact]
    public async Task RuntimeConfig_TiersUpWithoutTheCallCountingDelay()
    {
        // Without it the JIT waits for 100 ms free of new tier-0 methods before it starts promoting hot methods, which
        // under steady load takes 45-60 s (docs/operations.md); the setting lives in portico.runtimeconfig.json.
        var path = Path.ChangeExtension(GatewayProcess.PorticoDll, ".runtimeconfig.json");
        using var json = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(path));
        var properties = json.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties");
        Assert.Equal(0, properties.GetProperty("System.Runtime.TieredCompilation.CallCountingDelayMs").GetInt32());
        Assert.False(properties.GetProperty("System.GC.Server").GetBoolean());
    }

    [Theory]
    [InlineData(null, "inline")]
    [InlineData("0", "thread pool")]
    public async Task Start_SocketCompletions_InlineUnlessTheOperatorSaysOtherwise(string? setting, string expected)
    {
        // Inline socket completions are Portico's default (SocketEngine); DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0
        // keeps the runtime's thread-pool hand-off. Either way requests are proxied.
        await using var upstream = await RecordingUpstream.StartAsync("sock");
        var port = Ports.GetFree();
        var env = setting is null ? null : new Dictionary<string, string> { ["DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS"] = setting };
        await using var gateway = await GatewayProcess.StartAsync(MinimalYaml(port, upstream.Address), port, env);

        await gateway.WaitForOutputAsync($"socket completions {expected}", TimeSpan.FromSeconds(10));
        var response = await Curl.RunAsync("--max-time", "10", $"http://127.0.0.1:{port}/s");
        Assert.True(response.Status == 200, response + "\n" + gateway.Output);
    }

    [Theory]
    [InlineData("debug", true)]
    [InlineData("info", false)]
    public async Task PorticoLog_Debug_EnablesDebugOutput(string level, bool expectDebug)
    {
        // A retry (first server refuses) is logged at debug level: it shows whether debug output is on.
        await using var upstream = await RecordingUpstream.StartAsync("log");
        var port = Ports.GetFree();
        var yaml = $"""
            server:
              bind_address: "127.0.0.1:{port}"
              graceful_timeout_seconds: 1
            admin:
              enabled: false
            upstreams:
              half-dead:
                servers: ["127.0.0.1:{Ports.GetFree()}", "{upstream.Address}"]
            """;
        await using var gateway = await GatewayProcess.StartAsync(yaml, port, new Dictionary<string, string> { ["PORTICO_LOG"] = level });
        var requestId = "log-test-" + Guid.NewGuid().ToString("N");

        // Two requests: round robin sends one of them to the refusing server first.
        for (var i = 0; i < 2; i++)
        {
            var response = await Curl.RunAsync("--max-time", "10", "-H", $"X-Request-ID: {requestId}-{i}", $"http://127.0.0.1:{port}/x");
            Assert.True(response.Status == 200, response + "\n" + gateway.Output);
        }
        // The access log line of the last request comes after any debug line of both requests.
        await gateway.WaitForOutputAsync($"{requestId}-1", TimeSpan.FromSeconds(10));

        var debugLines = gateway.Output.Split('\n').Where(l => l.Contains("dbug:", StringComparison.Ordinal)).ToArray();
        if (expectDebug)
        {
            Assert.Contains(debugLines, l => l.Contains("retrying", StringComparison.Ordinal) && l.Contains(requestId, StringComparison.Ordinal));
        }
        else
        {
            Assert.True(debugLines.Length == 0, "debug output at level info:\n" + gateway.Output);
        }
    }

    private static string MinimalYaml(int port, string upstream) => $"""
        server:
          bind_address: "127.0.0.1:{port}"
          graceful_timeout_seconds: 1
        admin:
          enabled: false
        upstreams:
          backend:
            servers: ["{upstream}"]
        """;

    private static async Task<string> WriteTempAsync(string yaml)
    {
        var path = Path.Combine(Path.GetTempPath(), $"portico-cli-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, yaml);
        return path;
    }

    private static Task<ExternalTool.Result> RunPorticoAsync(params string[] args) =>
        ExternalTool.RunAsync("dotnet", [GatewayProcess.PorticoDll, .. args], TimeSpan.FromSeconds(60));
}
