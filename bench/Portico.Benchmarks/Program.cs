using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

namespace Portico.Benchmarks;

/// <summary>
/// Micro benchmarks of the request path. Run all, briefly:
/// <c>dotnet run -c Release --project bench/Portico.Benchmarks -- --filter '*' --job short</c>.
/// </summary>
public static class Program
{
    public static void Main(string[] args)
    {
        // Reports go under bin/ (git-ignored) instead of BenchmarkDotNet's default, ./BenchmarkDotNet.Artifacts in
        // the working directory, which is the repository root with the command above. `--artifacts <dir>` overrides.
        var config = DefaultConfig.Instance.WithArtifactsPath(
            Path.Combine(AppContext.BaseDirectory, "BenchmarkDotNet.Artifacts"));
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
    }
}
