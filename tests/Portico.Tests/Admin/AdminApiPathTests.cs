using Portico.Admin;

namespace Portico.Tests.Admin;

public sealed class AdminApiPathTests
{
    [Theory]
    [InlineData("/api/upstreams/backend/servers/127.0.0.1:3001/drain", "backend", "127.0.0.1:3001", true)]
    [InlineData("/api/upstreams/backend/servers/127.0.0.1:3001/enable", "backend", "127.0.0.1:3001", false)]
    [InlineData("/api/upstreams/oauth-service/servers/[::1]:8080/drain", "oauth-service", "[::1]:8080", true)]
    [InlineData("/api/upstreams/a/servers/b/servers/h:1/drain", "a/servers/b", "h:1", true)]
    public void TryParseServerAction_ValidPaths(string path, string upstream, string server, bool drain)
    {
        Assert.True(AdminApi.TryParseServerAction(path, out var u, out var s, out var d));
        Assert.Equal((upstream, server, drain), (u, s, d));
    }

    [Theory]
    [InlineData("/api/upstreams")]
    [InlineData("/api/upstreams/backend/drain")]
    [InlineData("/api/upstreams/backend/servers//drain")]
    [InlineData("/api/upstreams//servers/h:1/drain")]
    [InlineData("/api/upstreams/backend/servers/h:1/restart")]
    [InlineData("/api/upstreams/backend/servers/h:1/x/drain")]
    [InlineData("/api/routes/backend/servers/h:1/drain")]
    public void TryParseServerAction_OtherPaths_AreNotActions(string path)
    {
        Assert.False(AdminApi.TryParseServerAction(path, out _, out _, out _));
    }
}
