using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Http;
using Portico.Hosting;
using Portico.IntegrationTests.Infrastructure;
using Portico.Proxy;

namespace Portico.IntegrationTests.Library;

/// <summary>
/// The phase contract of <see cref="ProxyApp{TContext}"/> (docs/phases.md), checked on a real Kestrel host with a
/// real upstream: which phases run, in which order, and that logging runs exactly once.
/// </summary>
public sealed class PhaseOrderTests
{
    private sealed class RecordingApp(UpstreamPeer[] peers) : ProxyApp<List<string>>
    {
        public readonly ConcurrentQueue<List<string>> Finished = new();
        public bool AnswerInFilter;
        private int _next;

        public override List<string> NewContext(ProxySession session) => ["NewContext"];

        public override async ValueTask<bool> RequestFilterAsync(ProxySession session, List<string> ctx)
        {
            ctx.Add("RequestFilter");
            if (!AnswerInFilter)
            {
                return false;
            }
            session.Response.StatusCode = 204;
            await session.Response.CompleteAsync();
            return true;
        }

        public override ValueTask<UpstreamPeer?> SelectUpstreamAsync(ProxySession session, List<string> ctx)
        {
            ctx.Add("SelectUpstream");
            var i = _next++;
            return ValueTask.FromResult<UpstreamPeer?>(i < peers.Length ? peers[i] : null);
        }

        public override ValueTask UpstreamRequestFilterAsync(ProxySession session, HttpRequestMessage upstreamRequest, List<string> ctx)
        {
            ctx.Add("UpstreamRequestFilter");
            return ValueTask.CompletedTask;
        }

        public override ValueTask ResponseFilterAsync(ProxySession session, List<string> ctx)
        {
            ctx.Add("ResponseFilter");
            return ValueTask.CompletedTask;
        }

        public override ProxyError FailToConnect(ProxySession session, UpstreamPeer peer, ProxyError error, List<string> ctx)
        {
            ctx.Add("FailToConnect");
            return error;
        }

        public override ProxyError ErrorWhileProxy(ProxySession session, UpstreamPeer peer, ProxyError error, List<string> ctx)
        {
            ctx.Add("ErrorWhileProxy");
            return error;
        }

        public override ValueTask<int> FailToProxyAsync(ProxySession session, ProxyError error, List<string> ctx)
        {
            ctx.Add("FailToProxy");
            return base.FailToProxyAsync(session, error, ctx);
        }

        public override ValueTask LoggingAsync(ProxySession session, ProxyError? error, List<string> ctx)
        {
            ctx.Add("Logging");
            Finished.Enqueue(ctx);
            return ValueTask.CompletedTask;
        }
    }

    private static async Task<(List<string> Phases, HttpStatusCode Status)> RunAsync(RecordingApp app)
    {
        var port = Ports.GetFree();
        await using var host = ProxyHost.Build(app, $"127.0.0.1:{port}");
        await host.StartAsync();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var response = await client.GetAsync($"http://127.0.0.1:{port}/x");
        await response.Content.ReadAsByteArrayAsync();
        // Logging runs after the response completes; give the server a moment to finish the request.
        for (var i = 0; i < 100 && app.Finished.IsEmpty; i++)
        {
            await Task.Delay(20);
        }
        await host.StopAsync();
        Assert.Single(app.Finished);
        app.Finished.TryPeek(out var phases);
        return (phases!, response.StatusCode);
    }

    [Fact]
    public async Task Phases_Success_RunInOrder()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var (phases, status) = await RunAsync(new RecordingApp([UpstreamPeer.Create("127.0.0.1", upstream.Port)]));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(["NewContext", "RequestFilter", "SelectUpstream", "UpstreamRequestFilter", "ResponseFilter", "Logging"], phases);
    }

    [Fact]
    public async Task Phases_RequestFilterAnswers_SkipsUpstreamPhases()
    {
        var (phases, status) = await RunAsync(new RecordingApp([]) { AnswerInFilter = true });
        Assert.Equal(HttpStatusCode.NoContent, status);
        Assert.Equal(["NewContext", "RequestFilter", "Logging"], phases);
    }

    [Fact]
    public async Task Phases_ConnectFailure_RetriesOnNextPeer()
    {
        await using var upstream = await TestUpstream.StartAsync(c => c.Response.WriteAsync("ok"));
        var dead = UpstreamPeer.Create("127.0.0.1", Ports.GetFree());
        var (phases, status) = await RunAsync(new RecordingApp([dead, UpstreamPeer.Create("127.0.0.1", upstream.Port)]));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(["NewContext", "RequestFilter", "SelectUpstream", "UpstreamRequestFilter", "FailToConnect",
            "SelectUpstream", "UpstreamRequestFilter", "ResponseFilter", "Logging"], phases);
    }

    [Fact]
    public async Task Phases_NoPeer_FailToProxyThenLogging()
    {
        var (phases, status) = await RunAsync(new RecordingApp([]));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Equal(["NewContext", "RequestFilter", "SelectUpstream", "FailToProxy", "Logging"], phases);
    }

    [Fact]
    public async Task Phases_AllPeersRefuse_FailToConnectThenFailToProxy()
    {
        var dead1 = UpstreamPeer.Create("127.0.0.1", Ports.GetFree());
        var dead2 = UpstreamPeer.Create("127.0.0.1", Ports.GetFree());
        var (phases, status) = await RunAsync(new RecordingApp([dead1, dead2]));
        Assert.Equal(HttpStatusCode.BadGateway, status);
        // Default MaxRetries is 1: two attempts, then the error response.
        Assert.Equal(["NewContext", "RequestFilter", "SelectUpstream", "UpstreamRequestFilter", "FailToConnect",
            "SelectUpstream", "UpstreamRequestFilter", "FailToConnect", "FailToProxy", "Logging"], phases);
    }
}
