using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Protocols;

/// <summary>Shared pieces of the protocol tests: an upstream that describes what it received, temp dirs, JSON.</summary>
internal static class ProtocolTestKit
{
    /// <summary>
    /// Upstream handler answering with a JSON description of the request as the upstream saw it: protocol, method,
    /// path and query, the forwarding headers, and the body's length and SHA-256.
    /// </summary>
    public static async Task DescribeRequestAsync(HttpContext context)
    {
        var request = context.Request;
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long length = 0;
        int read;
        while ((read = await request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
        {
            sha.AppendData(buffer, 0, read);
            length += read;
        }
        var description = new Dictionary<string, object?>
        {
            ["protocol"] = request.Protocol,
            ["method"] = request.Method,
            ["path"] = request.Path.Value + request.QueryString.Value,
            ["scheme"] = request.Scheme,
            ["x_forwarded_for"] = request.Headers["X-Forwarded-For"].ToString(),
            ["x_forwarded_proto"] = request.Headers["X-Forwarded-Proto"].ToString(),
            ["via"] = request.Headers["Via"].ToString(),
            ["body_length"] = length,
            ["body_sha256"] = Convert.ToHexStringLower(sha.GetHashAndReset()),
        };
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(JsonSerializer.Serialize(description), context.RequestAborted);
    }

    /// <summary>Parses the last non-empty line of a tool's stdout as JSON (the scripts print one object).</summary>
    public static JsonElement LastJsonLine(ExternalTool.Result result)
    {
        var lines = result.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(result.ExitCode == 0 && lines.Length > 0, $"the client script failed:\n{result}");
        return JsonDocument.Parse(lines[^1]).RootElement;
    }

    /// <summary>A fresh directory under the temp path, for scripts and generated code.</summary>
    public static string CreateTempDirectory(string prefix)
    {
        var path = Path.Combine(Path.GetTempPath(), $"portico-{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }

    public static void DeleteDirectory(string? path)
    {
        if (path is null)
        {
            return;
        }
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
