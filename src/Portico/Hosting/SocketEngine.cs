namespace Portico.Hosting;

/// <summary>
/// How the runtime's socket engine runs I/O continuations. By default .NET's epoll thread hands every completed read
/// or write to the thread pool: one thread switch per I/O, which on a busy core costs more than the proxying itself.
/// With inline completions the epoll thread runs the continuation (Kestrel's parsing, the proxy, the upstream
/// write) itself, and the runtime starts one epoll thread per CPU so no single thread is the bottleneck. Measured on
/// this project's bench (one core, c64): about 21% more requests per CPU-second (median of 8 interleaved A/B rounds).
/// The cost is that code which blocks on a request path stalls every connection of that epoll thread, so Portico's
/// request path never blocks; slow control-plane work (reloads) is moved to the thread pool.
/// </summary>
public static class SocketEngine
{
    /// <summary>The runtime's switch; read once, when the first socket does asynchronous I/O.</summary>
    public const string InlineCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>
    /// Turns inline completions on unless the operator has set <see cref="InlineCompletionsVariable"/> (to "0" to keep
    /// the thread-pool hand-off). Must run before any socket does asynchronous I/O: first thing in Main.
    /// </summary>
    public static void PreferInlineCompletions()
    {
        if (Environment.GetEnvironmentVariable(InlineCompletionsVariable) is null)
        {
            Environment.SetEnvironmentVariable(InlineCompletionsVariable, "1");
        }
    }

    /// <summary>"inline" or "thread pool": how this process runs socket continuations (for the start-up log).</summary>
    public static string Mode => Inline ? "inline (and Kestrel's request scheduling)" : "thread pool";

    /// <summary>
    /// True when socket continuations run inline. Kestrel's own scheduling follows (its
    /// <c>UnsafePreferInlineScheduling</c>, see <see cref="ListenerServer"/>): a request read on the epoll thread is then
    /// processed there too, instead of being queued to the thread pool. Measured with Portico's own upstream client:
    /// +12 % and +9 % requests per CPU-second (two interleaved A/B runs, 5 of 8 and 8 of 10 rounds better).
    /// </summary>
    public static bool Inline => Environment.GetEnvironmentVariable(InlineCompletionsVariable) == "1";
}
