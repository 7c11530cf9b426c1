using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Portico.Config;
using Portico.Proxy;

namespace Portico.Auth;

/// <summary>
/// Bearer-token check for routes with <c>auth_required: true</c>: a JWT signed with the configured shared secret
/// (HS256/384/512), with exp/nbf always checked and iss/aud when configured. On success the identity goes
/// upstream as X-User-Id and X-User-Roles; the same headers from the client are always removed first, so a
/// client cannot claim an identity. Failures answer 401 with a WWW-Authenticate challenge (RFC 6750 §3).
/// </summary>
internal sealed class JwtAuthenticator
{
    internal const string UserIdHeader = "X-User-Id";
    internal const string RolesHeader = "X-User-Roles";

    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };
    private readonly TokenValidationParameters? _parameters;

    public JwtAuthenticator(AuthConfig config)
    {
        // auth.mode: none switches checking off on purpose (validation warns for each auth_required route).
        Disabled = config.Mode == "none";
        if (Disabled || string.IsNullOrEmpty(config.JwtSecret))
        {
            return;
        }
        _parameters = new TokenValidationParameters
        {
            IssuerSigningKey = new SymmetricSecurityKey(Encoding.UTF8.GetBytes(config.JwtSecret)),
            ValidAlgorithms = [config.JwtAlgorithm],
            ValidateIssuer = config.Issuer is not null,
            ValidIssuer = config.Issuer,
            ValidateAudience = config.Audience is not null,
            ValidAudience = config.Audience,
            ValidateLifetime = true,
            RequireExpirationTime = true,
            ClockSkew = TimeSpan.FromSeconds(30),
        };
    }

    /// <summary>Removes identity headers a client may have sent. Call for every request.</summary>
    public static void StripIdentityHeaders(HttpRequest request)
    {
        request.Headers.Remove(UserIdHeader);
        request.Headers.Remove(RolesHeader);
    }

    /// <summary>True when auth.mode is none: auth_required routes are not checked.</summary>
    public bool Disabled { get; }

    /// <summary>Validates the bearer token; returns null on success, else the reason for the challenge.</summary>
    public async ValueTask<string?> AuthenticateAsync(ProxySession session)
    {
        if (Disabled)
        {
            return null;
        }
        if (_parameters is null)
        {
            return "authentication is not configured";
        }
        var authorization = session.Request.Headers.Authorization;
        if (authorization.Count != 1 || authorization[0] is not { } value || !value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return "missing bearer token";
        }
        var token = value.AsSpan(7).Trim().ToString();
        var result = await _handler.ValidateTokenAsync(token, _parameters);
        if (!result.IsValid)
        {
            return "invalid token";
        }
        var headers = session.Request.Headers;
        if (result.Claims.TryGetValue("sub", out var sub) && sub is not null)
        {
            headers[UserIdHeader] = sub.ToString();
        }
        if (result.Claims.TryGetValue("roles", out var roles) && roles is not null)
        {
            headers[RolesHeader] = roles switch
            {
                string s => s,
                IEnumerable<object> list => string.Join(",", list),
                _ => roles.ToString(),
            };
        }
        return null;
    }

    /// <summary>Writes 401 with a Bearer challenge and a JSON body.</summary>
    public static async Task WriteChallengeAsync(ProxySession session, string reason)
    {
        var challenge = reason == "missing bearer token"
            ? "Bearer realm=\"portico\""
            : "Bearer realm=\"portico\", error=\"invalid_token\"";
        session.ResponseBodyBytes = await ErrorResponse.WriteAsync(session.HttpContext, StatusCodes.Status401Unauthorized, "unauthorized", reason,
            session.RequestId, new KeyValuePair<string, string>("WWW-Authenticate", challenge));
    }
}
