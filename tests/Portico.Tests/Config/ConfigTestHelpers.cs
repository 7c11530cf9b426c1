using Portico.Config;

namespace Portico.Tests.Config;

/// <summary>Loading and asserting helpers shared by the config tests.</summary>
internal static class ConfigTestHelpers
{
    /// <summary>Loads YAML with an injected environment, so tests never mutate the process's variables.</summary>
    public static ConfigLoadResult Load(string yaml, IReadOnlyDictionary<string, string>? environment = null) =>
        ConfigLoader.Load(yaml, "<test>", name => environment is not null && environment.TryGetValue(name, out var v) ? v : null, baseDirectory: null);

    /// <summary>The 1-based line of the first line of <paramref name="yaml"/> that contains <paramref name="marker"/>.</summary>
    public static int LineOf(string yaml, string marker)
    {
        var lines = yaml.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            if (lines[i].Contains(marker, StringComparison.Ordinal))
            {
                return i + 1;
            }
        }

        throw new ArgumentException($"marker '{marker}' not in the YAML", nameof(marker));
    }

    /// <summary>Asserts an error at exactly <paramref name="path"/> on <paramref name="line"/>; returns it.</summary>
    public static ConfigError AssertError(ConfigLoadResult result, string path, int line, string? messageContains = null) =>
        AssertIn(result.Errors, "error", result, path, line, messageContains);

    /// <summary>Asserts a warning at exactly <paramref name="path"/> on <paramref name="line"/>; returns it.</summary>
    public static ConfigError AssertWarning(ConfigLoadResult result, string path, int line, string? messageContains = null) =>
        AssertIn(result.Warnings, "warning", result, path, line, messageContains);

    /// <summary>Asserts that the YAML loads without errors, printing them when it does not.</summary>
    public static GatewayConfig AssertValid(ConfigLoadResult result)
    {
        Assert.True(result.IsValid, "expected no errors, got:\n" + result);
        return result.Config!;
    }

    private static ConfigError AssertIn(
        IReadOnlyList<ConfigError> list, string kind, ConfigLoadResult result, string path, int line, string? messageContains)
    {
        var match = list.FirstOrDefault(e => e.Path == path && e.Line == line
            && (messageContains is null || e.Message.Contains(messageContains, StringComparison.Ordinal)));
        Assert.True(match is not null,
            $"expected {kind} at '{path}' line {line}{(messageContains is null ? "" : $" containing '{messageContains}'")}, got:\n{result}");
        Assert.False(result.IsValid && kind == "error");
        return match!;
    }
}
