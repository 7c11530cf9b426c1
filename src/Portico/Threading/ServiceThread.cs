namespace Portico.Threading;

/// <summary>
/// Starts Portico's own long-lived threads (the epoll loops, the upstream watchdog, the log writer): background
/// threads that do not inherit their creator's execution context. <see cref="Thread.Start()"/> would run the thread
/// in the context of whoever made it, and some are made at their first use, inside a request: its
/// <c>Activity.Current</c> and other <see cref="AsyncLocal{T}"/> values would then be seen by everything the thread runs
/// for the rest of the process, and every wait on it would capture and restore that context.
/// </summary>
internal static class ServiceThread
{
    public static Thread Start(string name, ThreadStart body)
    {
        var thread = new Thread(body) { IsBackground = true, Name = name };
        thread.UnsafeStart();
        return thread;
    }
}
