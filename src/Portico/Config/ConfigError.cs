namespace Portico.Config;

/// <summary>
/// One problem found while loading or validating a config file: where it is (YAML path, line, column) and what is
/// wrong. Used for both errors (the file is rejected) and warnings (the file loads; the operator should look).
/// </summary>
/// <param name="Path">
/// The YAML path of the offending value: keys joined by <c>.</c>, list items as <c>[i]</c>, e.g.
/// <c>upstreams[0].servers[1].port</c>; upstreams written in the map form use their name as a key, e.g.
/// <c>upstreams.oauth-service.servers[0]</c>. Empty when the problem concerns the whole document.
/// </param>
/// <param name="Line">1-based line in the source; 0 when unknown (for example a config built in code).</param>
/// <param name="Column">1-based column in the source; 0 when unknown.</param>
/// <param name="Message">What is wrong and, where there is one, how to fix it.</param>
public sealed record ConfigError(string Path, int Line, int Column, string Message)
{
    /// <summary>Formats as <c>line 12, col 5: routes[2].upstream: unknown upstream 'foo' (known: a, b)</c>.</summary>
    /// <remarks>The location and the path are left out when they are unknown or empty.</remarks>
    public override string ToString()
    {
        var location = Line > 0 ? $"line {Line}, col {Column}: " : "";
        var path = Path.Length > 0 ? Path + ": " : "";
        return location + path + Message;
    }
}
