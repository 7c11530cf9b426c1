using Microsoft.AspNetCore.Http;

namespace Portico.Routing;

/// <summary>
/// The compiled routes of one config snapshot, ordered so that the most specific route that matches a request wins,
/// whatever the order of the config. Built once per config load; <see cref="Match"/> is lock-free and allocation-free.
/// </summary>
/// <remarks>
/// <para><b>Path patterns</b> (case-sensitive, as nginx; the path is compared as ASP.NET decoded it):</para>
/// <list type="bullet">
/// <item><c>/*</c> matches every path.</item>
/// <item>
/// A trailing <c>/*</c> matches zero or more segments: <c>/oauth/*</c> matches <c>/oauth</c>, <c>/oauth/</c> and
/// <c>/oauth/x/y</c>, but not <c>/oauthx</c>.
/// </item>
/// <item>
/// A pattern without <c>*</c> is a segment-aware prefix: <c>/api/v1</c> matches <c>/api/v1</c> and
/// <c>/api/v1/x</c>, but not <c>/api/v1x</c>. It may seem closer to nginx to match any string prefix, but operators
/// who write <c>/api/v1</c> do not mean <c>/api/v1beta</c>.
/// </item>
/// <item>
/// A pattern ending in <c>/</c> is a plain prefix: <c>/static/</c> matches every path that starts with
/// <c>/static/</c> (and not <c>/static</c>), as nginx <c>location /static/</c>.
/// </item>
/// <item>
/// A <c>*</c> segment elsewhere matches exactly one non-empty segment: <c>/api/*/users</c> matches
/// <c>/api/7/users</c> and, as any pattern not ending in <c>/</c>, <c>/api/7/users/42</c>, but not
/// <c>/api//users</c>. A <c>*</c> must be a whole segment; <see cref="Build"/> rejects <c>/api*</c>.
/// </item>
/// </list>
/// <para>
/// <b>Host</b>: none matches any host. An exact host is compared case-insensitively with the request host stripped
/// of its port (<c>example.com:8080</c>, <c>[::1]:8080</c>) and of a trailing dot. <c>*.example.com</c> matches one
/// or more labels before <c>.example.com</c>, not <c>example.com</c> itself.
/// </para>
/// <para><b>Methods</b>: none matches any method; otherwise the request method must be one of them (ordinal).</para>
/// <para>
/// <b>Headers</b>: every listed header must be present (name case-insensitive) with exactly the value (ordinal);
/// when a header is repeated, one of its values must match.
/// </para>
/// <para><b>Specificity</b>: routes are tried in this order, the first match wins:</para>
/// <list type="number">
/// <item>exact host, then wildcard host (a longer one first, as nginx), then no host;</item>
/// <item>more literal characters in the path pattern before its first <c>*</c> (all of it when there is none);</item>
/// <item>at equal length, a pattern without <c>*</c> before one with it;</item>
/// <item>a route with methods before one without;</item>
/// <item>more header matches first;</item>
/// <item>config order (<see cref="RouteModel.Order"/>).</item>
/// </list>
/// </remarks>
public sealed class RouteTable
{
    private readonly CompiledRoute[] _compiled;

    private RouteTable(CompiledRoute[] compiled, RouteModel[] routes)
    {
        _compiled = compiled;
        Routes = routes;
    }

    /// <summary>The routes in the order <see cref="Match"/> tries them (most specific first).</summary>
    public IReadOnlyList<RouteModel> Routes { get; }

    /// <summary>Compiles and orders <paramref name="routes"/>. Called when a config snapshot is built.</summary>
    /// <exception cref="ArgumentException">A path pattern is invalid (see <see cref="TryValidatePattern"/>).</exception>
    public static RouteTable Build(IReadOnlyList<RouteModel> routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        var compiled = new CompiledRoute[routes.Count];
        for (var i = 0; i < routes.Count; i++)
        {
            compiled[i] = CompiledRoute.Create(routes[i]);
        }

        // A stable order is not needed: Order breaks every tie, and list position breaks equal Orders.
        var positions = new int[compiled.Length];
        for (var i = 0; i < positions.Length; i++)
        {
            positions[i] = i;
        }

        Array.Sort(positions, (x, y) =>
        {
            var bySpecificity = CompiledRoute.CompareSpecificity(compiled[x], compiled[y]);
            return bySpecificity != 0 ? bySpecificity : x.CompareTo(y);
        });

        var ordered = new CompiledRoute[compiled.Length];
        var orderedRoutes = new RouteModel[compiled.Length];
        for (var i = 0; i < positions.Length; i++)
        {
            ordered[i] = compiled[positions[i]];
            orderedRoutes[i] = ordered[i].Route;
        }

        return new RouteTable(ordered, orderedRoutes);
    }

    /// <summary>
    /// Whether <paramref name="pattern"/> is a valid path pattern: it starts with <c>/</c> and every <c>*</c> is a
    /// whole segment. For config validation, which reports every bad route before <see cref="Build"/> runs.
    /// </summary>
    public static bool TryValidatePattern(string pattern, out string? error)
    {
        if (string.IsNullOrEmpty(pattern) || pattern[0] != '/')
        {
            error = $"path pattern '{pattern}' must start with '/'.";
            return false;
        }

        for (var i = 0; i < pattern.Length; i++)
        {
            if (pattern[i] == '*' && (pattern[i - 1] != '/' || (i + 1 < pattern.Length && pattern[i + 1] != '/')))
            {
                error = $"path pattern '{pattern}': '*' must be a whole segment, as in '/api/*/users' or '/api/*'.";
                return false;
            }
        }

        error = null;
        return true;
    }

    /// <summary>
    /// The most specific route matching the request, or null when none does.
    /// </summary>
    /// <param name="host">The request's Host (with or without a port); empty matches only routes without a host.</param>
    /// <param name="method">The request method, upper case.</param>
    /// <param name="path">The request path (<c>HttpRequest.Path</c>), starting with <c>/</c>.</param>
    /// <param name="headers">The request headers.</param>
    public RouteModel? Match(string host, string method, string path, IHeaderDictionary headers)
    {
        var requestHost = NormalizeRequestHost(host);
        foreach (var route in _compiled)
        {
            if (route.MatchesHost(requestHost)
                && route.MatchesPath(path)
                && route.MatchesMethod(method)
                && route.MatchesHeaders(headers))
            {
                return route.Route;
            }
        }

        return null;
    }

    /// <summary>The host without port, brackets or trailing dot: "[::1]:8080" → "::1", "Example.com:80" → "Example.com".</summary>
    internal static ReadOnlySpan<char> NormalizeRequestHost(string? host)
    {
        var span = host.AsSpan().Trim();
        if (span.IsEmpty)
        {
            return span;
        }

        if (span[0] == '[')
        {
            // An IPv6 literal (RFC 3986 §3.2.2): the port, if any, follows the closing bracket.
            var close = span.IndexOf(']');
            return close < 0 ? span[1..] : span[1..close];
        }

        var colon = span.IndexOf(':');
        // More than one colon is a bare IPv6 address (not valid in Host, but harmless to accept as is).
        if (colon >= 0 && span[(colon + 1)..].IndexOf(':') < 0)
        {
            span = span[..colon];
        }

        return TrimTrailingDot(span);
    }

    private static ReadOnlySpan<char> TrimTrailingDot(ReadOnlySpan<char> host) =>
        host.Length > 1 && host[^1] == '.' ? host[..^1] : host;

    private enum HostKind
    {
        Any = 0,
        Wildcard = 1,
        Exact = 2,
    }

    /// <summary>How the rest of the path may continue once every segment of the pattern has matched.</summary>
    private enum PathEnd
    {
        /// <summary>The path ends, or continues with '/': segment-aware prefix (no trailing '/' in the pattern).</summary>
        SegmentBoundary,

        /// <summary>Anything may follow: the pattern ends in '/'.</summary>
        Anything,
    }

    private sealed class CompiledRoute
    {
        private HostKind _hostKind;
        /// <summary>The exact host, or for a wildcard the suffix with its dot: ".example.com".</summary>
        private string _host = "";
        /// <summary>The pattern split at its '*' segments: literals, with null for each '*'.</summary>
        private string?[] _pathParts = [];
        private PathEnd _pathEnd;
        private int _literalPrefixLength;
        private bool _hasWildcard;

        private CompiledRoute(RouteModel route)
        {
            Route = route;
        }

        public RouteModel Route { get; }

        public static CompiledRoute Create(RouteModel route)
        {
            if (!TryValidatePattern(route.Path, out var error))
            {
                throw new ArgumentException($"route '{route.Name}': {error}", nameof(route));
            }

            var compiled = new CompiledRoute(route);
            compiled.CompileHost(route.Host);
            compiled.CompilePath(route.Path);
            return compiled;
        }

        /// <summary>Negative when <paramref name="a"/> is more specific (is tried first).</summary>
        public static int CompareSpecificity(CompiledRoute a, CompiledRoute b)
        {
            int c;
            if ((c = b._hostKind.CompareTo(a._hostKind)) != 0)
            {
                return c;
            }

            if (a._hostKind == HostKind.Wildcard && (c = b._host.Length.CompareTo(a._host.Length)) != 0)
            {
                return c;
            }

            if ((c = b._literalPrefixLength.CompareTo(a._literalPrefixLength)) != 0)
            {
                return c;
            }

            if ((c = a._hasWildcard.CompareTo(b._hasWildcard)) != 0)
            {
                return c;
            }

            if ((c = (b.Route.Methods.Length > 0).CompareTo(a.Route.Methods.Length > 0)) != 0)
            {
                return c;
            }

            if ((c = b.Route.Headers.Length.CompareTo(a.Route.Headers.Length)) != 0)
            {
                return c;
            }

            return a.Route.Order.CompareTo(b.Route.Order);
        }

        public bool MatchesHost(ReadOnlySpan<char> requestHost)
        {
            switch (_hostKind)
            {
                case HostKind.Any:
                    return true;
                case HostKind.Exact:
                    return requestHost.Equals(_host, StringComparison.OrdinalIgnoreCase);
                default:
                    // "*.example.com": at least one character (one label) before ".example.com".
                    return requestHost.Length > _host.Length
                        && requestHost.EndsWith(_host, StringComparison.OrdinalIgnoreCase);
            }
        }

        public bool MatchesPath(string path)
        {
            var rest = path.AsSpan();
            foreach (var part in _pathParts)
            {
                if (part is null)
                {
                    // '*': exactly one non-empty segment.
                    var end = rest.IndexOf('/');
                    var segment = end < 0 ? rest.Length : end;
                    if (segment == 0)
                    {
                        return false;
                    }

                    rest = rest[segment..];
                }
                else
                {
                    if (!rest.StartsWith(part, StringComparison.Ordinal))
                    {
                        return false;
                    }

                    rest = rest[part.Length..];
                }
            }

            return _pathEnd == PathEnd.Anything || rest.IsEmpty || rest[0] == '/';
        }

        public bool MatchesMethod(string method)
        {
            var methods = Route.Methods;
            if (methods.Length == 0)
            {
                return true;
            }

            foreach (var candidate in methods)
            {
                if (string.Equals(candidate, method, StringComparison.Ordinal))
                {
                    return true;
                }
            }

            return false;
        }

        public bool MatchesHeaders(IHeaderDictionary headers)
        {
            foreach (var (name, expected) in Route.Headers)
            {
                if (!headers.TryGetValue(name, out var values))
                {
                    return false;
                }

                var found = false;
                for (var i = 0; i < values.Count; i++)
                {
                    if (string.Equals(values[i], expected, StringComparison.Ordinal))
                    {
                        found = true;
                        break;
                    }
                }

                if (!found)
                {
                    return false;
                }
            }

            return true;
        }

        private void CompileHost(string? host)
        {
            if (string.IsNullOrWhiteSpace(host))
            {
                _hostKind = HostKind.Any;
                return;
            }

            var normalized = host.Trim().ToLowerInvariant();
            if (normalized.StartsWith("*.", StringComparison.Ordinal))
            {
                _hostKind = HostKind.Wildcard;
                _host = TrimTrailingDot(normalized.AsSpan(1)).ToString();
                return;
            }

            if (normalized.StartsWith('[') && normalized.EndsWith(']'))
            {
                normalized = normalized[1..^1];
            }

            _hostKind = HostKind.Exact;
            _host = TrimTrailingDot(normalized).ToString();
        }

        private void CompilePath(string pattern)
        {
            var star = pattern.IndexOf('*');
            _hasWildcard = star >= 0;
            _literalPrefixLength = star < 0 ? pattern.Length : star;

            // A trailing "/*" (zero or more segments) is the segment-aware end every pattern without a trailing
            // '/' has: "/oauth/*" matches exactly what "/oauth" does. "/*" leaves "", which every path extends.
            var body = pattern.EndsWith("/*", StringComparison.Ordinal) ? pattern[..^2] : pattern;
            _pathEnd = body.EndsWith('/') ? PathEnd.Anything : PathEnd.SegmentBoundary;

            var parts = new List<string?>();
            var literalStart = 0;
            for (var i = 0; i < body.Length; i++)
            {
                if (body[i] == '*')
                {
                    parts.Add(body[literalStart..i]);
                    parts.Add(null);
                    literalStart = i + 1;
                }
            }

            if (literalStart < body.Length)
            {
                parts.Add(body[literalStart..]);
            }

            _pathParts = [.. parts];
        }
    }
}
