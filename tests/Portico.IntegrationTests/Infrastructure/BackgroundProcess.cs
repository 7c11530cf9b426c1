using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A long-running child process the test owns (a Python WebSocket or gRPC upstream, an openssl s_server): output
/// captured line by line, killed by its own PID (with its children) on dispose.
/// </summary>
/// <remarks>
/// Servers started this way bind port 0 and print <c>PORT n</c> once listening, so there is no window in which
/// another test could take a port chosen in advance.
/// </remarks>
public sealed class BackgroundProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();

    private BackgroundProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { _output.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { _output.Enqueue(e.Data); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Everything the process wrote to stdout and stderr so far.</summary>
    public string Output => string.Join('\n', _output);

    /// <summary>The port announced by a <c>PORT n</c> line (set by <see cref="StartServerAsync"/>).</summary>
    public int Port { get; private set; }

    /// <summary>Starts <paramref name="file"/> with <paramref name="args"/>; waits for nothing.</summary>
    public static BackgroundProcess Start(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        // Python buffers stdout when it is not a terminal; the PORT line must arrive at once.
        psi.Environment["PYTHONUNBUFFERED"] = "1";
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        return new BackgroundProcess(process);
    }

    /// <summary>
    /// Starts a server that prints <c>PORT n</c> when it listens and waits for that line (or fails with the
    /// process output if it exits or stays silent past <paramref name="timeout"/>).
    /// </summary>
    public static async Task<BackgroundProcess> StartServerAsync(string file, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        var server = Start(file, args);
        try
        {
            var line = await server.WaitForLineAsync("PORT ", timeout ?? TimeSpan.FromSeconds(20));
            server.Port = int.Parse(line.AsSpan("PORT ".Length).Trim(), NumberStyles.None, CultureInfo.InvariantCulture);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>Waits for a line starting with <paramref name="prefix"/> and returns it.</summary>
    public async Task<string> WaitForLineAsync(string prefix, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            foreach (var line in _output)
            {
                if (line.StartsWith(prefix, StringComparison.Ordinal))
                {
                    return line;
                }
            }
            if (_process.HasExited)
            {
                // Give the output readers a moment to drain before reporting what the process said.
                await Task.Delay(100);
                throw new InvalidOperationException($"{_process.StartInfo.FileName} exited with {_process.ExitCode} before printing '{prefix}':\n{Output}");
            }
            await Task.Delay(25);
        }
        throw new TimeoutException($"{_process.StartInfo.FileName} did not print '{prefix}' within {timeout}:\n{Output}");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await _process.WaitForExitAsync(cts.Token);
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or OperationCanceledException)
        {
            // Already gone, or stuck in the kernel: nothing more a test can do.
        }
        _process.Dispose();
    }
}
