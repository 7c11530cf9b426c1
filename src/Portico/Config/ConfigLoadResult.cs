using System.Text;

namespace Portico.Config;

/// <summary>
/// The outcome of loading a config file: the config when it is valid, and every error and warning found. Loading
/// never throws for a bad file; check <see cref="IsValid"/>.
/// </summary>
public sealed class ConfigLoadResult
{
    /// <summary>The loaded config; null whenever <see cref="Errors"/> is not empty, so a bad file is never used.</summary>
    public GatewayConfig? Config { get; init; }

    /// <summary>Every problem that rejects the file, in document order (line, then column).</summary>
    public IReadOnlyList<ConfigError> Errors { get; init; } = [];

    /// <summary>Problems that do not reject the file (a certificate file not found yet, a key with no effect), in document order.</summary>
    public IReadOnlyList<ConfigError> Warnings { get; init; } = [];

    /// <summary>The file path, or the name given to <see cref="ConfigLoader.LoadYaml"/>; used when printing.</summary>
    public string SourceName { get; init; } = "<inline>";

    /// <summary>Where each YAML path was found; lets later stages (the route compiler) report with lines too.</summary>
    internal ConfigSourceMap SourceMap { get; init; } = new();

    /// <summary>True when the file loaded without errors (warnings allowed).</summary>
    public bool IsValid => Errors.Count == 0 && Config != null;

    /// <summary>One line per error, then per warning, each prefixed with the source name, as a CLI prints them.</summary>
    public override string ToString()
    {
        var text = new StringBuilder();
        foreach (var error in Errors)
        {
            text.Append(SourceName).Append(": error: ").Append(error).AppendLine();
        }

        foreach (var warning in Warnings)
        {
            text.Append(SourceName).Append(": warning: ").Append(warning).AppendLine();
        }

        return text.ToString();
    }
}

/// <summary>
/// Where each YAML path of a loaded file was found, so semantic errors found after binding still carry a line and
/// column. Filled by the binder, read by <see cref="ConfigValidator"/>.
/// </summary>
internal sealed class ConfigSourceMap
{
    private readonly Dictionary<string, (int Line, int Column)> _locations = new(StringComparer.Ordinal);
    private readonly Dictionary<object, string> _recordPaths = new(ReferenceEqualityComparer.Instance);

    /// <summary>Records where <paramref name="path"/> is; the first location recorded for a path wins.</summary>
    public void Add(string path, int line, int column) => _locations.TryAdd(path, (line, column));

    /// <summary>True when the key at <paramref name="path"/> was written in the file.</summary>
    public bool Contains(string path) => _locations.ContainsKey(path);

    /// <summary>
    /// The location of <paramref name="path"/>, or of its nearest written ancestor when the key itself was not
    /// written (a required key that is missing is reported at its parent); (0, 0) when nothing is known.
    /// </summary>
    public (int Line, int Column) Locate(string path)
    {
        var current = path;
        while (current.Length > 0)
        {
            if (_locations.TryGetValue(current, out var location))
            {
                return location;
            }

            var cut = Math.Max(current.LastIndexOf('.'), current.LastIndexOf('['));
            current = cut > 0 ? current[..cut] : "";
        }

        return _locations.TryGetValue("", out var root) ? root : (0, 0);
    }

    /// <summary>Remembers the YAML path of a bound record (by reference, not by record equality).</summary>
    public void SetPath(object record, string path) => _recordPaths[record] = path;

    /// <summary>
    /// The YAML path a record was bound from, or <paramref name="fallback"/>. Needed because an upstream written in
    /// the map form lives at <c>upstreams.NAME</c>, not at <c>upstreams[i]</c>.
    /// </summary>
    public string PathOf(object record, string fallback) =>
        _recordPaths.TryGetValue(record, out var path) ? path : fallback;
}
