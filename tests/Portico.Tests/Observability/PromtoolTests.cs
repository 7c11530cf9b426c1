using System.Diagnostics;
using Portico.Observability;
using Portico.Upstreams;
using static Portico.Tests.Observability.MetricsTestHelpers;

namespace Portico.Tests.Observability;

/// <summary>A fact that runs only where Prometheus' promtool is installed (Debian package <c>prometheus</c>).</summary>
public sealed class PromtoolFactAttribute : FactAttribute
{
    public PromtoolFactAttribute()
    {
        if (PromtoolTests.Promtool is null)
        {
            Skip = "promtool is not installed: install Debian's 'prometheus' package (scripts/install-deps.sh does) to check the exposition format";
        }
    }
}

public sealed class PromtoolTests
{
    /// <summary>promtool's path, or null when it is not on PATH.</summary>
    public static readonly string? Promtool = FindOnPath("promtool");

    [PromtoolFact]
    public async Task Scrape_EveryFamilyPopulated_PassesPromtoolCheckMetrics()
    {
        var snapshot = Snapshot();
        var metrics = new GatewayMetrics();
        metrics.Bind(snapshot);
        var api = snapshot.Routes.Routes.Single(r => r.Name == "api");
        var hello = snapshot.Routes.Routes.Single(r => r.Name == "hello");
        metrics.RecordRequest(Session("GET", 200, attempts: 2, upstreamStatus: 200, upstreamHeaderTime: TimeSpan.FromMilliseconds(4),
            requestBytes: 5, responseBytes: 1000), api, api.Upstream, TimeSpan.FromMilliseconds(6));
        metrics.RecordRequest(Session("POST", 502, attempts: 1), api, api.Upstream, TimeSpan.FromSeconds(12));
        metrics.RecordRequest(Session("GET", 200, responseBytes: 2), hello, null, TimeSpan.FromMicroseconds(80));
        metrics.RecordRequest(Session("PROPFIND", 404), null, null, TimeSpan.FromMicroseconds(50));
        metrics.RecordConnectError(snapshot.PeerFor(api.Upstream!, api.Upstream!.Servers[1]));
        metrics.RecordRateLimitHit();
        metrics.ConnectionOpened();
        api.Upstream.Client.ConnectionCounter!.Inc();
        snapshot.Upstreams["web"].Servers[0].State.SetHealthy(false);
        var breaker = api.Upstream.Servers[0].State.Breaker!;
        for (var i = 0; i < 200 && breaker.State != CircuitState.Open; i++)
        {
            if (breaker.TryAcquire())
            {
                breaker.OnFailure();
            }
        }
        // A label value with every character that needs escaping.
        metrics.UpstreamConnectErrors.WithLabels("odd \"name\"", "back\\slash\nnewline").Inc();

        var scrape = Scrape(metrics, snapshot);

        foreach (var family in new[]
        {
            "requests_total", "request_duration_seconds", "request_body_bytes_total", "response_body_bytes_total",
            "connections_active", "connections_total", "rate_limit_hits_total", "upstream_latency_seconds",
            "upstream_requests_total", "upstream_connections_created_total", "upstream_retries_total",
            "upstream_connect_errors_total", "upstream_health_status", "circuit_breaker_state",
        })
        {
            Assert.Contains($"\n# TYPE pingora_{family} ", scrape, StringComparison.Ordinal);
        }
        Assert.Contains("pingora_circuit_breaker_state{upstream=\"api\",server=\"127.0.0.1:3001\"} 1\n", scrape, StringComparison.Ordinal);
        Assert.Contains("\n# TYPE process_resident_memory_bytes gauge\n", scrape, StringComparison.Ordinal);

        var (exitCode, output) = await RunPromtoolAsync(scrape);
        Assert.True(exitCode == 0 && output.Trim().Length == 0, $"promtool check metrics: exit {exitCode}\n{output}\n--- scrape ---\n{scrape}");
    }

    [PromtoolFact]
    public async Task Promtool_BrokenExposition_IsRejected()
    {
        // Guards the test above: promtool really reads stdin and fails on a bad line.
        var (exitCode, _) = await RunPromtoolAsync("# TYPE x counter\nx{a=\"unterminated} 1\n");

        Assert.NotEqual(0, exitCode);
    }

    private static async Task<(int ExitCode, string Output)> RunPromtoolAsync(string input)
    {
        var psi = new ProcessStartInfo(Promtool!)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("check");
        psi.ArgumentList.Add("metrics");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardInput.WriteAsync(input);
        process.StandardInput.Close();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    private static string? FindOnPath(string name)
    {
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(directory, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}
