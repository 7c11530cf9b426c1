using System.Text;
using System.Text.Json;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Observability;

/// <summary>
/// deploy/grafana-dashboard.json: every query is valid PromQL (checked by promtool, where installed as in CI) and
/// names only metric families Portico exports.
/// </summary>
public sealed class GrafanaDashboardTests
{
    private static readonly string[] Families =
    [
        "pingora_requests_total", "pingora_request_duration_seconds_bucket", "pingora_connections_active", "pingora_connections_total",
        "pingora_request_body_bytes_total", "pingora_response_body_bytes_total", "pingora_upstream_latency_seconds_bucket",
        "pingora_upstream_connections_created_total", "pingora_upstream_requests_total", "pingora_upstream_retries_total",
        "pingora_upstream_connect_errors_total", "pingora_rate_limit_hits_total", "pingora_upstream_health_status",
        "pingora_circuit_breaker_state", "process_resident_memory_bytes", "process_cpu_seconds_total",
    ];

    [Fact]
    public async Task Dashboard_EveryQueryIsValidPromQl_OnExportedFamilies()
    {
        var path = Path.Combine(RepositoryRoot.Path, "deploy", "grafana-dashboard.json");
        using var document = JsonDocument.Parse(await File.ReadAllTextAsync(path));
        var expressions = new List<string>();
        foreach (var panel in document.RootElement.GetProperty("panels").EnumerateArray())
        {
            foreach (var target in panel.GetProperty("targets").EnumerateArray())
            {
                expressions.Add(target.GetProperty("expr").GetString()!);
            }
        }
        Assert.True(expressions.Count >= 14, $"only {expressions.Count} queries");

        foreach (var expression in expressions)
        {
            var names = System.Text.RegularExpressions.Regex.Matches(expression, "\\b(pingora_[a-z_]+|process_[a-z_]+)\\b");
            Assert.NotEmpty(names);
            foreach (System.Text.RegularExpressions.Match name in names)
            {
                Assert.True(Families.Contains(name.Value), $"'{name.Value}' in `{expression}` is not a family Portico exports");
            }
        }

        if (!File.Exists("/usr/bin/promtool"))
        {
            return;
        }
        // promtool checks PromQL inside a rules file; dashboard variables become match-all regexes.
        var rules = new StringBuilder("groups:\n  - name: dashboard\n    rules:\n");
        for (var i = 0; i < expressions.Count; i++)
        {
            var expr = expressions[i].Replace("$route", ".*", StringComparison.Ordinal).Replace("$upstream", ".*", StringComparison.Ordinal);
            rules.Append($"      - record: dashboard:query_{i}\n        expr: {JsonSerializer.Serialize(expr)}\n");
        }
        var file = Path.Combine(Path.GetTempPath(), $"portico-dashboard-{Guid.NewGuid():N}.yml");
        await File.WriteAllTextAsync(file, rules.ToString());
        try
        {
            var check = await ExternalTool.RunAsync("/usr/bin/promtool", ["check", "rules", file], TimeSpan.FromSeconds(60));
            Assert.True(check.ExitCode == 0, $"promtool check rules:\n{check}\n{rules}");
        }
        finally
        {
            File.Delete(file);
        }
    }
}
