using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Portico.Hosting;

/// <summary>
/// The common start of every server <see cref="PorticoHost"/> runs (data plane, admin, metrics): one Kestrel on the
/// shared <see cref="ListenSockets"/>, the host's logger factory, and a lifetime driven by the host's own signal
/// handling. Stops are bounded by the tokens passed to StopAsync (graceful_timeout_seconds at shutdown; none for a
/// server retired by a reload), not by the host's own timeout.
/// </summary>
internal static class ListenerServer
{
    /// <summary>
    /// A builder with Kestrel configured to take its listening sockets from <paramref name="sockets"/> (null: Kestrel
    /// binds them itself, where sockets cannot be shared).
    /// </summary>
    public static WebApplicationBuilder CreateBuilder(ILoggerFactory loggerFactory, ListenSockets? sockets)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddSingleton<IHostLifetime, ManualLifetime>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromDays(1));
        builder.WebHost.UseKestrelCore();
        // With inline socket completions, Kestrel runs the request where the socket read completed rather than
        // queueing it to the thread pool (SocketEngine.Inline); DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0 turns
        // both hand-offs back on.
        var inline = SocketEngine.Inline;
        builder.WebHost.UseSockets(o =>
        {
            o.UnsafePreferInlineScheduling = inline;
            if (sockets is not null)
            {
                o.CreateBoundListenSocket = sockets.CreateForKestrel;
            }
        });
        // Cleartext data-plane listeners accept on Portico's own path (Http1Server.ListenCleartext); the rest on Kestrel's.
        Server.Http1Server.AddTransport(builder.Services);
        return builder;
    }

    /// <summary>No console lifetime: <see cref="PorticoHost"/> handles SIGTERM/SIGINT itself.</summary>
    private sealed class ManualLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
