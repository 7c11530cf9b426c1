using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// The real `portico` executable started as a child process on a config written to a temp file, listening on
/// 127.0.0.1 ports chosen by the test. Output is captured for assertions and failure messages.
/// </summary>
public sealed partial class GatewayProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();

    private GatewayProcess(Process process, string configPath)
    {
        _process = process;
        ConfigPath = configPath;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { _output.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { _output.Enqueue(e.Data); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public string ConfigPath { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    /// <summary>Everything the process wrote to stdout and stderr so far.</summary>
    public string Output => string.Join('\n', _output);

    /// <summary>Path of the built `portico` entry assembly (copied next to the tests by the project reference).</summary>
    public static string PorticoDll => Path.Combine(AppContext.BaseDirectory, "portico.dll");

    /// <summary>
    /// Writes <paramref name="yaml"/> to a temp file, starts portico on it and waits until <paramref name="waitPort"/>
    /// accepts connections (or the process exits, which fails the test with its output).
    /// </summary>
    public static async Task<GatewayProcess> StartAsync(string yaml, int waitPort, IDictionary<string, string>? env = null, TimeSpan? timeout = null, bool underNohup = false)
    {
        var configPath = Path.Combine(Path.GetTempPath(), $"portico-test-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(configPath, yaml);
        var gateway = Start(["--config", configPath], configPath, env, underNohup);
        await gateway.WaitForPortAsync(waitPort, timeout ?? TimeSpan.FromSeconds(30));
        return gateway;
    }

    /// <summary>Starts portico with arbitrary arguments (for CLI tests); does not wait for anything.</summary>
    /// <remarks><paramref name="underNohup"/>: started through nohup(1), which execs it with SIGHUP ignored.</remarks>
    public static GatewayProcess Start(IReadOnlyList<string> args, string configPath = "", IDictionary<string, string>? env = null, bool underNohup = false)
    {
        var psi = new ProcessStartInfo(underNohup ? "nohup" : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (underNohup)
        {
            psi.ArgumentList.Add("dotnet");
        }
        psi.ArgumentList.Add(PorticoDll);
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        psi.Environment["DOTNET_TieredPGO"] = "0";
        psi.Environment["DOTNET_TC_QuickJitForLoops"] = "1";
        if (env is not null)
        {
            foreach (var (key, value) in env)
            {
                psi.Environment[key] = value;
            }
        }
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start portico");
        return new GatewayProcess(process, configPath);
    }

    public async Task WaitForPortAsync(int port, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < timeout)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"portico exited with {_process.ExitCode} before listening on {port}:\n{Output}");
            }
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync("127.0.0.1", port);
                return;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }
        throw new TimeoutException($"portico did not listen on {port} within {timeout}:\n{Output}");
    }

    /// <summary>Waits until a line containing <paramref name="text"/> appears in the output.</summary>
    public async Task WaitForOutputAsync(string text, TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < timeout)
        {
            if (Output.Contains(text, StringComparison.Ordinal))
            {
                return;
            }
            await Task.Delay(50);
        }
        throw new TimeoutException($"'{text}' did not appear in portico's output within {timeout}:\n{Output}");
    }

    /// <summary>Sends a POSIX signal (SIGTERM = 15, SIGHUP = 1) to the gateway.</summary>
    public void Signal(int signal)
    {
        if (Kill(_process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Sends a signal unless the process is gone already (false then).</summary>
    public bool TrySignal(int signal) => Kill(_process.Id, signal) == 0;

    public const int SIGHUP = 1;
    public const int SIGTERM = 15;

    /// <summary>Waits for the process to exit; returns false on timeout.</summary>
    /// <remarks>
    /// Polls <see cref="Process.HasExited"/> rather than <see cref="Process.WaitForExitAsync"/>, which also waits for
    /// the end of the redirected output: a process started by the gateway (SIGUSR2 upgrade) inherits those pipes and
    /// keeps them open after the gateway itself has exited.
    /// </remarks>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        var deadline = Stopwatch.StartNew();
        while (!_process.HasExited)
        {
            if (deadline.Elapsed > timeout)
            {
                return false;
            }
            await Task.Delay(25);
        }
        // Let the output readers catch up (bounded: an inheriting child may hold the pipes open).
        using var drain = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            await _process.WaitForExitAsync(drain.Token);
        }
        catch (OperationCanceledException)
        {
        }
        return true;
    }

    /// <summary>Rewrites the config file (for reload tests).</summary>
    public Task WriteConfigAsync(string yaml) => File.WriteAllTextAsync(ConfigPath, yaml);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await WaitForExitAsync(TimeSpan.FromSeconds(10));
        }
        _process.Dispose();
        if (ConfigPath.Length > 0)
        {
            try
            {
                File.Delete(ConfigPath);
            }
            catch (IOException)
            {
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
