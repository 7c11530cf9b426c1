using BenchmarkDotNet.Running;

namespace Portico.Benchmarks;

/// <summary>
/// Micro benchmarks of the request path. Run all, briefly:
/// <c>dotnet run -c Release --project bench/Portico.Benchmarks -- --filter '*' --job short</c>.
/// </summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
