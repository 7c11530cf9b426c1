using System.Diagnostics;
using System.Text;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>Runs a real client (curl, nghttp, python3) with a time limit and captures its output.</summary>
public static class ExternalTool
{
    public sealed record Result(int ExitCode, string StdOut, string StdErr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{StdOut}\nstderr:\n{StdErr}";
    }

    /// <summary>Debian's python3 (the one with python3-websockets and python3-grpcio), not a pyenv shim.</summary>
    public const string Python = "/usr/bin/python3";

    public static async Task<Result> RunAsync(string file, IEnumerable<string> args, TimeSpan? timeout = null, string? stdin = null, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }
        if (env is not null)
        {
            foreach (var (key, value) in env)
            {
                psi.Environment[key] = value;
            }
        }
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in time");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs a Python script given as text with Debian's python3.</summary>
    public static Task<Result> PythonAsync(string script, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        var path = Path.Combine(Path.GetTempPath(), $"portico-test-{Guid.NewGuid():N}.py");
        File.WriteAllText(path, script, Encoding.UTF8);
        var all = new List<string> { path };
        all.AddRange(args);
        return RunAsync(Python, all, timeout);
    }
}
