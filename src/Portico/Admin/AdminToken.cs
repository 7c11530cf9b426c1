using System.Security.Cryptography;
using System.Text;
using Portico.Config;

namespace Portico.Admin;

/// <summary>The outcome of checking a request's credentials against the admin token.</summary>
internal enum AdminAuthResult
{
    /// <summary>The bearer token matches.</summary>
    Allowed,

    /// <summary>No <c>Authorization: Bearer</c> credentials: 401 with <c>WWW-Authenticate: Bearer</c>.</summary>
    Missing,

    /// <summary>A bearer token that does not match: 403.</summary>
    Wrong,

    /// <summary>Neither <c>admin.token</c> nor <c>PORTICO_ADMIN_TOKEN</c> is set: the API is closed (403).</summary>
    NotConfigured,
}

/// <summary>
/// The admin API's bearer token: <c>PORTICO_ADMIN_TOKEN</c> when set and not empty, else <c>admin.token</c> of the
/// current config (so a reload can rotate it). With neither, the API refuses every request: an admin plane that
/// answers anyone who can reach it is how gateways get taken over, so there is no "open" mode.
/// </summary>
/// <remarks>
/// The environment wins over the file, as <c>PORTICO_LOG</c> does over <c>logging.level</c>: the secret can then be
/// kept out of a config file that is shared or checked in, and set by the service manager (a systemd credential, a
/// Kubernetes secret). It is read once, when the admin listener starts; a process's environment does not change.
/// </remarks>
internal sealed class AdminToken(string? environmentValue)
{
    /// <summary>The environment variable that holds the token.</summary>
    public const string EnvironmentVariable = "PORTICO_ADMIN_TOKEN";

    private readonly string? _environment = string.IsNullOrEmpty(environmentValue) ? null : environmentValue;

    /// <summary>Reads <see cref="EnvironmentVariable"/> from this process.</summary>
    public static AdminToken FromEnvironment() => new(Environment.GetEnvironmentVariable(EnvironmentVariable));

    /// <summary>The token in force for <paramref name="config"/>; null when none is configured.</summary>
    public string? Resolve(AdminConfig config) => _environment ?? (string.IsNullOrEmpty(config.Token) ? null : config.Token);

    /// <summary>Checks an <c>Authorization</c> header value against the token in force for <paramref name="config"/>.</summary>
    public AdminAuthResult Check(AdminConfig config, string? authorization)
    {
        var expected = Resolve(config);
        if (expected is null)
        {
            return AdminAuthResult.NotConfigured;
        }
        if (!TryGetBearer(authorization, out var presented))
        {
            return AdminAuthResult.Missing;
        }
        return FixedTimeEquals(expected, presented) ? AdminAuthResult.Allowed : AdminAuthResult.Wrong;
    }

    /// <summary>The credentials of <c>Bearer &lt;token&gt;</c> (scheme case-insensitive, RFC 9110 §11.1).</summary>
    internal static bool TryGetBearer(string? authorization, out string token)
    {
        token = "";
        if (authorization is null)
        {
            return false;
        }
        var value = authorization.AsSpan().Trim();
        if (value.Length <= 7 || !value[..7].Equals("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        var credentials = value[7..].Trim();
        if (credentials.IsEmpty)
        {
            return false;
        }
        token = credentials.ToString();
        return true;
    }

    /// <summary>
    /// Compares in time that does not depend on where the strings differ, nor on their lengths: both are hashed
    /// first. <see cref="CryptographicOperations.FixedTimeEquals"/> alone returns early when the lengths differ, which
    /// would tell an attacker the token's length.
    /// </summary>
    internal static bool FixedTimeEquals(string expected, string presented)
    {
        Span<byte> a = stackalloc byte[SHA256.HashSizeInBytes];
        Span<byte> b = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(expected), a);
        SHA256.HashData(Encoding.UTF8.GetBytes(presented), b);
        return CryptographicOperations.FixedTimeEquals(a, b);
    }
}
