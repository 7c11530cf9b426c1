using Microsoft.AspNetCore.Http;
using Portico.Routing;

namespace Portico.Tests.Routing;

public sealed class RouteTableTests
{
    private static readonly HeaderDictionary NoHeaders = new();

    [Theory]
    [InlineData("/*", "/", true)]
    [InlineData("/*", "/anything/at/all", true)]
    [InlineData("/oauth/*", "/oauth", true)]
    [InlineData("/oauth/*", "/oauth/", true)]
    [InlineData("/oauth/*", "/oauth/token", true)]
    [InlineData("/oauth/*", "/oauth/x/y", true)]
    [InlineData("/oauth/*", "/oauthx", false)]
    [InlineData("/oauth/*", "/OAuth/token", false)]
    [InlineData("/oauth/*", "/", false)]
    [InlineData("/api/v1", "/api/v1", true)]
    [InlineData("/api/v1", "/api/v1/", true)]
    [InlineData("/api/v1", "/api/v1/x", true)]
    [InlineData("/api/v1", "/api/v1x", false)]
    [InlineData("/api/v1", "/api/v", false)]
    [InlineData("/api/v1", "/API/v1", false)]
    [InlineData("/static/", "/static/", true)]
    [InlineData("/static/", "/static/css/site.css", true)]
    [InlineData("/static/", "/static", false)]
    [InlineData("/static/", "/staticx", false)]
    [InlineData("/", "/", true)]
    [InlineData("/", "/x", true)]
    [InlineData("/api/*/users", "/api/7/users", true)]
    [InlineData("/api/*/users", "/api/7/users/42", true)]
    [InlineData("/api/*/users", "/api/7/usersx", false)]
    [InlineData("/api/*/users", "/api//users", false)]
    [InlineData("/api/*/users", "/api/7/8/users", false)]
    [InlineData("/api/*/users", "/api/users", false)]
    [InlineData("/api/*/users/*", "/api/7/users", true)]
    [InlineData("/api/*/users/*", "/api/7/users/42/x", true)]
    [InlineData("/api/*/*", "/api/7", true)]
    [InlineData("/api/*/*", "/api/7/8/9", true)]
    [InlineData("/api/*/*", "/api/", false)]
    [InlineData("/api/*/*", "/api", false)]
    [InlineData("/*/health", "/svc/health", true)]
    [InlineData("/*/health", "/health", false)]
    [InlineData("/api/*/", "/api/7/", true)]
    [InlineData("/api/*/", "/api/7/x", true)]
    [InlineData("/api/*/", "/api/7", false)]
    public void Match_PathPattern(string pattern, string path, bool matches)
    {
        var table = RouteTable.Build([Route("r", pattern)]);

        var route = table.Match("example.com", "GET", path, NoHeaders);

        Assert.Equal(matches, route is not null);
    }

    [Theory]
    [InlineData("/oauth/token", "oauth")]
    [InlineData("/oauth", "oauth")]
    [InlineData("/admin/users/1", "admin")]
    [InlineData("/kline/BTC-USD/1m", "kline")]
    [InlineData("/flow/x", "flow")]
    [InlineData("/test/", "test")]
    [InlineData("/", "catch-all")]
    [InlineData("/adminx", "catch-all")]
    [InlineData("/oauthtoken", "catch-all")]
    [InlineData("/unknown/path", "catch-all")]
    public void Match_Seed001Routes(string path, string expected)
    {
        var table = RouteTable.Build(Seed001Routes());

        Assert.Equal(expected, table.Match("gw.example.com", "GET", path, NoHeaders)?.Name);
    }

    [Fact]
    public void Build_Seed001RoutesReversed_SameMatches()
    {
        var routes = Seed001Routes();
        var reversed = new RouteModel[routes.Length];
        for (var i = 0; i < routes.Length; i++)
        {
            var r = routes[routes.Length - 1 - i];
            reversed[i] = Route(r.Name, r.Path, order: i);
        }

        var table = RouteTable.Build(reversed);

        Assert.Equal("oauth", table.Match("h", "GET", "/oauth/token", NoHeaders)?.Name);
        Assert.Equal("admin", table.Match("h", "GET", "/admin", NoHeaders)?.Name);
        Assert.Equal("catch-all", table.Match("h", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("catch-all", table.Routes[^1].Name);
    }

    [Fact]
    public void Match_LongerLiteralPrefixWins_IndependentOfOrder()
    {
        var table = RouteTable.Build(
        [
            Route("api", "/api/*", order: 0),
            Route("users", "/api/*/users", order: 1),
            Route("v1", "/api/v1", order: 2),
            Route("v1-users", "/api/v1/users", order: 3),
        ]);

        Assert.Equal("v1-users", table.Match("h", "GET", "/api/v1/users", NoHeaders)?.Name);
        Assert.Equal("v1", table.Match("h", "GET", "/api/v1/orders", NoHeaders)?.Name);
        // "/api/" (5 literal characters) against "/api/" before '*' in both: config order decides.
        Assert.Equal("api", table.Match("h", "GET", "/api/v2/users", NoHeaders)?.Name);
        Assert.Equal("api", table.Match("h", "GET", "/api", NoHeaders)?.Name);
    }

    [Fact]
    public void Match_EqualLiteralLength_PatternWithoutWildcardWins()
    {
        // "/api/" before '*' and "/api/" exactly: 5 literal characters each.
        var table = RouteTable.Build([Route("glob", "/api/*", order: 0), Route("prefix", "/api/", order: 1)]);

        Assert.Equal("prefix", table.Match("h", "GET", "/api/x", NoHeaders)?.Name);
        Assert.Equal("glob", table.Match("h", "GET", "/api", NoHeaders)?.Name);
    }

    [Fact]
    public void Match_ExactHost_CaseInsensitiveAndPortIgnored()
    {
        var table = RouteTable.Build([Route("api", "/*", host: "api.example.com")]);

        Assert.Equal("api", table.Match("api.example.com", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("api", table.Match("API.Example.COM", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("api", table.Match("api.example.com:8080", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("api", table.Match("api.example.com.", "GET", "/", NoHeaders)?.Name);
        Assert.Null(table.Match("www.example.com", "GET", "/", NoHeaders));
        Assert.Null(table.Match("api.example.com.evil", "GET", "/", NoHeaders));
        Assert.Null(table.Match("", "GET", "/", NoHeaders));
    }

    [Fact]
    public void Match_IPv6Host_BracketsAndPortIgnored()
    {
        var table = RouteTable.Build([Route("local", "/*", host: "[::1]"), Route("v4", "/*", host: "127.0.0.1")]);

        Assert.Equal("local", table.Match("[::1]:8080", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("local", table.Match("[::1]", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("v4", table.Match("127.0.0.1:8080", "GET", "/", NoHeaders)?.Name);
        Assert.Null(table.Match("[::2]:8080", "GET", "/", NoHeaders));
    }

    [Fact]
    public void Match_WildcardHost_OneOrMoreLabelsNotTheApex()
    {
        var table = RouteTable.Build([Route("wild", "/*", host: "*.example.com")]);

        Assert.Equal("wild", table.Match("a.example.com", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("wild", table.Match("a.b.example.com:443", "GET", "/", NoHeaders)?.Name);
        Assert.Equal("wild", table.Match("A.EXAMPLE.com", "GET", "/", NoHeaders)?.Name);
        Assert.Null(table.Match("example.com", "GET", "/", NoHeaders));
        Assert.Null(table.Match(".example.com", "GET", "/", NoHeaders));
        Assert.Null(table.Match("aexample.com", "GET", "/", NoHeaders));
    }

    [Fact]
    public void Match_HostSpecificity_ExactThenWildcardThenAny()
    {
        var table = RouteTable.Build(
        [
            Route("any", "/api/v1/long/prefix", order: 0),
            Route("wild", "/*", host: "*.example.com", order: 1),
            Route("deeper-wild", "/*", host: "*.api.example.com", order: 2),
            Route("exact", "/*", host: "api.example.com", order: 3),
        ]);

        Assert.Equal("exact", table.Match("api.example.com", "GET", "/api/v1/long/prefix", NoHeaders)?.Name);
        Assert.Equal("deeper-wild", table.Match("eu.api.example.com", "GET", "/api/v1/long/prefix", NoHeaders)?.Name);
        Assert.Equal("wild", table.Match("www.example.com", "GET", "/api/v1/long/prefix", NoHeaders)?.Name);
        Assert.Equal("any", table.Match("other.org", "GET", "/api/v1/long/prefix", NoHeaders)?.Name);
        Assert.Null(table.Match("other.org", "GET", "/", NoHeaders));
    }

    [Fact]
    public void Match_Methods_OrdinalAndRouteWithMethodsWinsTies()
    {
        var table = RouteTable.Build(
        [
            Route("any", "/items", order: 0),
            Route("write", "/items", methods: ["POST", "PUT"], order: 1),
        ]);

        Assert.Equal("write", table.Match("h", "POST", "/items", NoHeaders)?.Name);
        Assert.Equal("write", table.Match("h", "PUT", "/items/1", NoHeaders)?.Name);
        Assert.Equal("any", table.Match("h", "GET", "/items", NoHeaders)?.Name);
        Assert.Equal("any", table.Match("h", "post", "/items", NoHeaders)?.Name);
    }

    [Fact]
    public void Match_MethodsOnly_OtherMethodsDoNotMatch()
    {
        var table = RouteTable.Build([Route("get", "/*", methods: ["GET", "HEAD"])]);

        Assert.NotNull(table.Match("h", "HEAD", "/", NoHeaders));
        Assert.Null(table.Match("h", "DELETE", "/", NoHeaders));
    }

    [Fact]
    public void Match_Headers_AllPresentWithExactValue()
    {
        var table = RouteTable.Build(
        [
            Route("default", "/*", order: 0),
            Route("canary", "/*", headers: [new("X-Canary", "1")], order: 1),
            Route("canary-beta", "/*", headers: [new("X-Canary", "1"), new("X-Tier", "beta")], order: 2),
        ]);

        Assert.Equal("canary", table.Match("h", "GET", "/", Headers(("x-canary", "1")))?.Name);
        Assert.Equal("canary-beta", table.Match("h", "GET", "/", Headers(("X-CANARY", "1"), ("x-tier", "beta")))?.Name);
        Assert.Equal("canary", table.Match("h", "GET", "/", Headers(("X-Canary", "1"), ("X-Tier", "Beta")))?.Name);
        Assert.Equal("default", table.Match("h", "GET", "/", Headers(("X-Canary", "0")))?.Name);
        Assert.Equal("default", table.Match("h", "GET", "/", Headers(("X-Canary", "1 ")))?.Name);
        Assert.Equal("default", table.Match("h", "GET", "/", NoHeaders)?.Name);
    }

    [Fact]
    public void Match_RepeatedHeader_OneValueMatches()
    {
        var table = RouteTable.Build([Route("canary", "/*", headers: [new("X-Canary", "1")])]);
        var headers = new HeaderDictionary { ["X-Canary"] = new(["0", "1"]) };

        Assert.Equal("canary", table.Match("h", "GET", "/", headers)?.Name);
    }

    [Fact]
    public void Match_Specificity_HostBeatsPathBeatsMethodsBeatsHeaders()
    {
        var table = RouteTable.Build(
        [
            Route("headers", "/a", headers: [new("X-A", "1"), new("X-B", "1")], order: 0),
            Route("methods", "/a", methods: ["GET"], order: 1),
            Route("longer", "/a/b", order: 2),
            Route("host", "/*", host: "h", order: 3),
        ]);
        var headers = Headers(("X-A", "1"), ("X-B", "1"));

        Assert.Equal("host", table.Match("h", "GET", "/a/b", headers)?.Name);
        Assert.Equal("longer", table.Match("other", "GET", "/a/b", headers)?.Name);
        Assert.Equal("methods", table.Match("other", "GET", "/a", headers)?.Name);
        Assert.Equal("headers", table.Match("other", "POST", "/a", headers)?.Name);
        Assert.Null(table.Match("other", "POST", "/a", NoHeaders));
        Assert.Equal(["host", "longer", "methods", "headers"], Names(table.Routes));
    }

    [Fact]
    public void Match_EqualSpecificity_ConfigOrderWins()
    {
        var table = RouteTable.Build([Route("second", "/x", order: 1), Route("first", "/x", order: 0)]);

        Assert.Equal("first", table.Match("h", "GET", "/x", NoHeaders)?.Name);
    }

    [Fact]
    public void Match_NoRouteMatches_ReturnsNull()
    {
        var table = RouteTable.Build([Route("oauth", "/oauth/*"), Route("api", "/api", host: "api.example.com")]);

        Assert.Null(table.Match("www.example.com", "GET", "/api", NoHeaders));
        Assert.Null(table.Match("www.example.com", "GET", "/", NoHeaders));
        Assert.Null(RouteTable.Build([]).Match("h", "GET", "/", NoHeaders));
    }

    [Theory]
    [InlineData("api")]
    [InlineData("")]
    [InlineData("/api*")]
    [InlineData("/*x")]
    [InlineData("/a/b*/c")]
    public void Build_InvalidPattern_Throws(string pattern)
    {
        Assert.False(RouteTable.TryValidatePattern(pattern, out var error));
        Assert.NotNull(error);
        Assert.Throws<ArgumentException>(() => RouteTable.Build([Route("bad", pattern)]));
    }

    [Fact]
    public void Match_SteadyState_DoesNotAllocate()
    {
        var table = RouteTable.Build(
        [
            .. Seed001Routes(),
            Route("host", "/*", host: "*.example.com", headers: [new("X-Canary", "1")], order: 6),
            Route("users", "/api/*/users", methods: ["GET"], order: 7),
        ]);
        var headers = Headers(("X-Canary", "0"));
        string[] paths = ["/oauth/token", "/", "/adminx", "/api/7/users/1", "/flow/a/b/c"];
        foreach (var path in paths)
        {
            table.Match("a.example.com:8443", "GET", path, headers);
        }

        var i = 0;
        AllocationAssert.Zero(() => table.Match("a.example.com:8443", "GET", paths[i++ % paths.Length], headers), 1000);
    }

    internal static RouteModel[] Seed001Routes() =>
    [
        Route("oauth", "/oauth/*", order: 0),
        Route("admin", "/admin/*", order: 1),
        Route("kline", "/kline/*", order: 2),
        Route("flow", "/flow/*", order: 3),
        Route("test", "/test/*", order: 4),
        Route("catch-all", "/*", order: 5),
    ];

    private static RouteModel Route(
        string name,
        string path,
        string? host = null,
        string[]? methods = null,
        KeyValuePair<string, string>[]? headers = null,
        int order = 0) =>
        new()
        {
            Name = name,
            Path = path,
            Host = host,
            Methods = methods ?? [],
            Headers = headers ?? [],
            UpstreamName = name,
            Order = order,
        };

    private static HeaderDictionary Headers(params (string Name, string Value)[] headers)
    {
        var dictionary = new HeaderDictionary();
        foreach (var (name, value) in headers)
        {
            dictionary.Append(name, value);
        }

        return dictionary;
    }

    private static string[] Names(IReadOnlyList<RouteModel> routes)
    {
        var names = new string[routes.Count];
        for (var i = 0; i < names.Length; i++)
        {
            names[i] = routes[i].Name;
        }

        return names;
    }
}
