using Portico.Admin;
using Portico.Config;

namespace Portico.Tests.Admin;

public sealed class AdminTokenTests
{
    private static readonly AdminConfig WithToken = new() { Token = "from-config" };

    [Theory]
    [InlineData(null, nameof(AdminAuthResult.Missing))]
    [InlineData("", nameof(AdminAuthResult.Missing))]
    [InlineData("Bearer", nameof(AdminAuthResult.Missing))]
    [InlineData("Bearer    ", nameof(AdminAuthResult.Missing))]
    [InlineData("Basic ZnJvbS1jb25maWc=", nameof(AdminAuthResult.Missing))]
    [InlineData("Bearer from-config", nameof(AdminAuthResult.Allowed))]
    [InlineData("bearer from-config", nameof(AdminAuthResult.Allowed))]
    [InlineData("  BEARER   from-config  ", nameof(AdminAuthResult.Allowed))]
    [InlineData("Bearer from-confi", nameof(AdminAuthResult.Wrong))]
    [InlineData("Bearer from-config2", nameof(AdminAuthResult.Wrong))]
    [InlineData("Bearer FROM-CONFIG", nameof(AdminAuthResult.Wrong))]
    public void Check_ConfigToken_ClassifiesCredentials(string? authorization, string expected)
    {
        // The result enum is internal, so the cases name it.
        Assert.Equal(expected, new AdminToken(null).Check(WithToken, authorization).ToString());
    }

    [Fact]
    public void Check_NoTokenAnywhere_IsNotConfigured_WhateverIsSent()
    {
        var token = new AdminToken("");
        Assert.Equal(AdminAuthResult.NotConfigured, token.Check(new AdminConfig(), "Bearer x"));
        Assert.Equal(AdminAuthResult.NotConfigured, token.Check(new AdminConfig { Token = "" }, null));
    }

    [Fact]
    public void Check_EnvironmentToken_WinsOverConfig()
    {
        var token = new AdminToken("from-env");
        Assert.Equal(AdminAuthResult.Allowed, token.Check(WithToken, "Bearer from-env"));
        Assert.Equal(AdminAuthResult.Wrong, token.Check(WithToken, "Bearer from-config"));
        Assert.Equal(AdminAuthResult.Allowed, token.Check(new AdminConfig(), "Bearer from-env"));
    }

    [Fact]
    public void Resolve_ConfigToken_FollowsTheCurrentConfig()
    {
        var token = new AdminToken(null);
        Assert.Equal("from-config", token.Resolve(WithToken));
        Assert.Equal("rotated", token.Resolve(new AdminConfig { Token = "rotated" }));
        Assert.Null(token.Resolve(new AdminConfig()));
    }

    [Theory]
    [InlineData("abc", "abc", true)]
    [InlineData("abc", "abd", false)]
    [InlineData("abc", "abcd", false)]
    [InlineData("abc", "", false)]
    [InlineData("ünïcödé", "ünïcödé", true)]
    public void FixedTimeEquals_ComparesWholeStrings(string expected, string presented, bool equal)
    {
        Assert.Equal(equal, AdminToken.FixedTimeEquals(expected, presented));
    }
}
