using System.Diagnostics;
using System.Net;
using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Portico.Proxy;

namespace Portico.Tests.Proxy;

/// <summary>
/// The own servers keep one <see cref="ProxySession"/> with each pooled request context and reset it for the next
/// request. Every settable property is set here by reflection, so a property added later without a line in
/// <c>Reset</c> fails this test instead of leaking one request's state into the next.
/// </summary>
public sealed class ProxySessionTests
{
    private static readonly BindingFlags All = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    // Kept across requests on purpose: the app's reusable context (it resets that itself).
    private static readonly HashSet<string> KeptAcrossReset = [nameof(ProxySession.AppContext)];

    [Fact]
    public void Reset_PutsEverySettablePropertyBackToANewSessionsValue()
    {
        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Parse("192.0.2.7");
        var used = new ProxySession(http, "first", null);
        var settable = typeof(ProxySession).GetProperties(All).Where(p => p.GetSetMethod(true) is not null).ToList();
        Assert.Contains(settable, p => p.Name == nameof(ProxySession.UpstreamPathAndQuery));
        foreach (var property in settable)
        {
            property.SetValue(used, NonDefault(property.PropertyType));
        }
        var before = Stopwatch.GetTimestamp();

        used.Reset("second");

        var fresh = new ProxySession(http, "second", null);
        foreach (var property in settable)
        {
            if (KeptAcrossReset.Contains(property.Name))
            {
                continue;
            }
            if (property.Name == nameof(ProxySession.StartTimestamp))
            {
                Assert.True(used.StartTimestamp >= before, "StartTimestamp not restarted");
                continue;
            }
            Assert.True(Equals(property.GetValue(fresh), property.GetValue(used)),
                $"{property.Name}: {property.GetValue(used)} after Reset, {property.GetValue(fresh)} on a new session");
        }
        Assert.Equal("second", used.RequestId);
        Assert.Equal(IPAddress.Parse("192.0.2.7"), used.ClientAddress);
        Assert.Same(http, used.HttpContext);
    }

    [Fact]
    public void Reset_KeepsTheAppsContext()
    {
        var session = new ProxySession(new DefaultHttpContext(), "a", null);
        var context = new object();
        session.AppContext = context;

        session.Reset("b");

        Assert.Same(context, session.AppContext);
    }

    [Fact]
    public void GeneratedId_IsBytesUntilAskedFor_NewOnEachReset_AndGoneWhenTheClientsIdIsUsed()
    {
        var session = ProxySession.WithNewId(new DefaultHttpContext(), null);
        var first = System.Text.Encoding.ASCII.GetString(session.GeneratedRequestId);
        Assert.Matches("^[0-9a-f]{32}$", first);
        Assert.Equal(first, session.RequestId);
        Assert.Same(session.RequestId, session.RequestId);

        session.ResetWithNewId();
        var second = System.Text.Encoding.ASCII.GetString(session.GeneratedRequestId);
        Assert.NotEqual(first, second);
        // The string is made from the new bytes, not kept from the request before.
        Assert.Equal(second, session.RequestId);

        session.Reset("client-id");
        Assert.True(session.GeneratedRequestId.IsEmpty);
        Assert.Equal("client-id", session.RequestId);

        session.ResetWithNewId();
        Assert.Equal(32, session.GeneratedRequestId.Length);
        Assert.NotEqual("client-id", session.RequestId);
        Assert.NotEqual(second, session.RequestId);
    }

    private static object NonDefault(Type type)
    {
        var underlying = Nullable.GetUnderlyingType(type) ?? type;
        if (underlying == typeof(string))
        {
            return "/stale";
        }
        if (underlying == typeof(bool))
        {
            return true;
        }
        if (underlying == typeof(int))
        {
            return 7;
        }
        if (underlying == typeof(long))
        {
            return 7L;
        }
        if (underlying == typeof(TimeSpan))
        {
            return TimeSpan.FromSeconds(7);
        }
        if (underlying == typeof(IPAddress))
        {
            return IPAddress.Parse("203.0.113.9");
        }
        if (underlying == typeof(Activity))
        {
            return new Activity("stale");
        }
        if (underlying == typeof(object))
        {
            return new object();
        }
        Assert.True(underlying.IsClass, "no non-default value for " + type + ": add one here");
        return RuntimeHelpers.GetUninitializedObject(underlying);
    }
}
