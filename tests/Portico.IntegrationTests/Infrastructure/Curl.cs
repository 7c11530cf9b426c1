using System.Globalization;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// Runs the real curl client and parses what it received: every response head (1xx included, as curl's
/// <c>-D</c> dumps them), the final status, the body, and curl's stderr (with <c>-v</c>, the wire conversation).
/// </summary>
public static class Curl
{
    /// <summary>
    /// Runs <c>curl -sS -D headers -o body -w %{http_code} ARGS</c> with a time limit (curl's own
    /// <c>--max-time</c> is the caller's to add). When <paramref name="outputPath"/> is given the body goes there
    /// and <see cref="CurlResponse.Body"/> is empty (for bodies too large to hold as a string).
    /// </summary>
    public static async Task<CurlResponse> RunAsync(IEnumerable<string> args, TimeSpan? timeout = null, string? outputPath = null)
    {
        var headerPath = Path.Combine(Path.GetTempPath(), $"portico-curl-{Guid.NewGuid():N}.headers");
        var bodyPath = outputPath ?? Path.Combine(Path.GetTempPath(), $"portico-curl-{Guid.NewGuid():N}.body");
        try
        {
            var all = new List<string> { "-sS", "-D", headerPath, "-o", bodyPath, "-w", "%{http_code}" };
            all.AddRange(args);
            var result = await ExternalTool.RunAsync("curl", all, timeout ?? TimeSpan.FromSeconds(60));
            var heads = File.Exists(headerPath) ? ParseHeads(await File.ReadAllTextAsync(headerPath)) : [];
            var body = outputPath is null && File.Exists(bodyPath) ? await File.ReadAllTextAsync(bodyPath) : "";
            _ = int.TryParse(result.StdOut.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var status);
            return new CurlResponse(result.ExitCode, status, heads, body, result.StdErr);
        }
        finally
        {
            TryDelete(headerPath);
            if (outputPath is null)
            {
                TryDelete(bodyPath);
            }
        }
    }

    /// <summary>Shorthand for <see cref="RunAsync(IEnumerable{string}, TimeSpan?, string?)"/>.</summary>
    public static Task<CurlResponse> RunAsync(params string[] args) => RunAsync(args, null, null);

    /// <summary>Splits curl's header dump into response heads (status line + fields); trailers end up in the last head.</summary>
    internal static IReadOnlyList<ResponseHead> ParseHeads(string dump)
    {
        var heads = new List<ResponseHead>();
        ResponseHead? current = null;
        foreach (var rawLine in dump.Split('\n'))
        {
            var line = rawLine.TrimEnd('\r');
            if (line.StartsWith("HTTP/", StringComparison.Ordinal))
            {
                var parts = line.Split(' ', 3);
                var status = parts.Length > 1 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : 0;
                current = new ResponseHead(parts[0], status, []);
                heads.Add(current);
                continue;
            }
            var colon = line.IndexOf(':');
            if (current is not null && colon > 0)
            {
                current.Fields.Add(new KeyValuePair<string, string>(line[..colon].Trim(), line[(colon + 1)..].Trim()));
            }
        }
        return heads;
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>One response head: the version, the status and the header fields in order.</summary>
public sealed record ResponseHead(string Version, int Status, List<KeyValuePair<string, string>> Fields)
{
    /// <summary>The first value of the header, or null.</summary>
    public string? Header(string name)
    {
        foreach (var (key, value) in Fields)
        {
            if (key.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }
        return null;
    }

    public bool Has(string name) => Header(name) is not null;
}

/// <summary>What curl received.</summary>
public sealed record CurlResponse(int ExitCode, int Status, IReadOnlyList<ResponseHead> Heads, string Body, string StdErr)
{
    /// <summary>The final (non-1xx) response head; fails when curl received none.</summary>
    public ResponseHead Final
    {
        get
        {
            for (var i = Heads.Count - 1; i >= 0; i--)
            {
                if (Heads[i].Status >= 200)
                {
                    return Heads[i];
                }
            }
            throw new InvalidOperationException($"curl received no final response:\n{this}");
        }
    }

    /// <summary>A header of the final response, or null.</summary>
    public string? Header(string name) => Final.Header(name);

    public override string ToString() =>
        $"curl exit {ExitCode}, status {Status}\nheads: {string.Join(" | ", Heads.Select(h => $"{h.Version} {h.Status} " + string.Join(", ", h.Fields.Select(f => $"{f.Key}: {f.Value}"))))}\nbody: {(Body.Length > 500 ? Body[..500] + "..." : Body)}\nstderr:\n{StdErr}";
}
