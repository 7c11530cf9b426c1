using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Operations;

/// <summary>`portico echo`, the sample upstream of the quick start.</summary>
public sealed class EchoServerTests
{
    [Fact]
    public async Task Echo_AnswersJsonAndStopsOnSigterm()
    {
        var port = Ports.GetFree();
        await using var echo = GatewayProcess.Start(["echo", "--listen", $"127.0.0.1:{port}", "--name", "demo"]);
        await echo.WaitForPortAsync(port, TimeSpan.FromSeconds(30));
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var body = await client.GetStringAsync($"http://127.0.0.1:{port}/some/path?q=1");
        Assert.Contains("\"service\":\"demo\"", body, StringComparison.Ordinal);
        Assert.Contains("\"path\":\"/some/path\"", body, StringComparison.Ordinal);

        // Regression: echo once ignored SIGTERM (the host swallowed it), leaving the quick start's upstream running.
        echo.Signal(GatewayProcess.SIGTERM);
        Assert.True(await echo.WaitForExitAsync(TimeSpan.FromSeconds(10)), "echo did not exit on SIGTERM:\n" + echo.Output);
        Assert.Equal(0, echo.ExitCode);
    }
}
