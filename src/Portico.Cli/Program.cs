using System.CommandLine;
using System.Net;
using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Hosting;
using Portico.Config;
using Portico.Hosting;

namespace Portico.Cli;

internal static class Program
{
    private const string DefaultConfig = "config/default.yaml";

    public static async Task<int> Main(string[] args)
    {
        SocketEngine.PreferInlineCompletions();
        var configArgument = new Argument<string?>("CONFIG") { Description = "Path to the YAML config (default: config/default.yaml)", Arity = ArgumentArity.ZeroOrOne };
        var configOption = new Option<string?>("--config", "-c") { Description = "Path to the YAML config" };
        var upgradeOption = new Option<bool>("--upgrade")
        {
            Description = "Take over the listening sockets of the portico already running on this config (zero-downtime upgrade); it then drains and exits",
        };
        var root = new RootCommand("Portico: a reverse proxy and API gateway");
        root.Arguments.Add(configArgument);
        root.Options.Add(configOption);
        root.Options.Add(upgradeOption);
        root.SetAction((parse, cancellationToken) =>
            RunAsync(parse.GetValue(configOption) ?? parse.GetValue(configArgument) ?? DefaultConfig, parse.GetValue(upgradeOption), args));

        var validateArgument = new Argument<string>("CONFIG") { Description = "Path to the YAML config" };
        var validate = new Command("validate", "Check a config file; prints every error with its line and key path");
        validate.Arguments.Add(validateArgument);
        validate.SetAction(parse => Validate(parse.GetValue(validateArgument)!));
        root.Subcommands.Add(validate);

        var version = new Command("version", "Print the version");
        version.SetAction(_ =>
        {
            Console.WriteLine($"portico {VersionText()}");
            return 0;
        });
        root.Subcommands.Add(version);

        var listenOption = new Option<string[]>("--listen", "-l") { Description = "host:port to listen on (repeatable)", AllowMultipleArgumentsPerToken = true, Required = true };
        var nameOption = new Option<string>("--name") { Description = "Name reported in responses", DefaultValueFactory = _ => "echo" };
        var echo = new Command("echo", "Run a small echo upstream for trying routes (answers JSON describing each request)");
        echo.Options.Add(listenOption);
        echo.Options.Add(nameOption);
        echo.SetAction((parse, cancellationToken) => EchoAsync(parse.GetValue(listenOption)!, parse.GetValue(nameOption)!, cancellationToken));
        root.Subcommands.Add(echo);

        // System.CommandLine would take over SIGTERM and end the process 2 s later (ProcessTerminationTimeout);
        // PorticoHost handles SIGTERM itself so in-flight requests drain for graceful_timeout_seconds.
        return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
    }

    private static string VersionText() =>
        typeof(PorticoHost).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    private static int Validate(string path)
    {
        var result = ConfigLoader.LoadFile(path);
        foreach (var warning in result.Warnings)
        {
            Console.Error.WriteLine($"warning: {path}: {warning}");
        }
        if (!result.IsValid)
        {
            foreach (var error in result.Errors)
            {
                Console.Error.WriteLine($"error: {path}: {error}");
            }
            Console.Error.WriteLine($"{path}: {result.Errors.Count} error(s)");
            return 1;
        }
        Console.WriteLine($"{path}: OK ({result.Config!.Upstreams.Count} upstreams, {result.Config.Routes.Count} routes)");
        return 0;
    }

    /// <summary>SIGTERM/SIGINT handlers that only cancel the default action, for the process's last moments.</summary>
    private static PosixSignalRegistration[]? LateSignals;

    private static async Task<int> RunAsync(string path, bool upgrade, string[] args)
    {
        PorticoHost? host;
        try
        {
            host = PorticoHost.Create(path, Console.Error, upgrade, UpgradeCommand(args));
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"error: {path}: {ex.Message}");
            return 1;
        }
        if (host is null)
        {
            return 1;
        }
        // The host handles SIGTERM/SIGINT while it runs; these keep a late signal (one that arrives while the host is
        // being disposed or the process is exiting, e.g. an operator's SIGTERM racing an upgrade's drain) from ending
        // the process with 143. Held until the process ends: disposed at the end of this method, they left a window
        // before the exit in which the signal's default action still won.
        LateSignals ??= [
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => context.Cancel = true),
            PosixSignalRegistration.Create(PosixSignal.SIGINT, context => context.Cancel = true),
        ];
        await using (host)
        {
            try
            {
                await host.StartAsync();
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine($"error: could not start: {ex.Message}");
                return 1;
            }
            await host.WaitForStopSignalAsync();
            await host.StopAsync();
        }
        return 0;
    }

    /// <summary>
    /// How SIGUSR2 starts the new binary: the same executable path (now holding the new version) and arguments. Under
    /// `dotnet portico.dll` that is the dotnet host plus the entry assembly.
    /// </summary>
    private static (string FileName, IReadOnlyList<string> Arguments)? UpgradeCommand(string[] args)
    {
        var processPath = Environment.ProcessPath;
        if (processPath is null)
        {
            return null;
        }
        var arguments = new List<string>();
        if (Path.GetFileNameWithoutExtension(processPath) == "dotnet")
        {
            arguments.Add(typeof(Program).Assembly.Location);
        }
        arguments.AddRange(args);
        return (processPath, arguments);
    }

    private static async Task<int> EchoAsync(string[] listen, string name, CancellationToken cancellationToken)
    {
        var endpoints = new List<IPEndPoint>();
        foreach (var value in listen)
        {
            if (!ListenAddress.TryParse(value, out var endpoint))
            {
                Console.Error.WriteLine($"error: --listen {value}: expected host:port");
                return 1;
            }
            endpoints.Add(endpoint);
        }
        await using var app = EchoServer.Build(endpoints, name);
        await app.StartAsync(cancellationToken);
        Console.WriteLine($"echo upstream '{name}' listening on {string.Join(", ", app.Urls)}");
        // The host's console lifetime turns SIGTERM/SIGINT into a graceful stop.
        await app.WaitForShutdownAsync(cancellationToken);
        return 0;
    }
}
