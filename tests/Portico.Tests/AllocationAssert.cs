namespace Portico.Tests;

/// <summary>
/// Asserts that code allocates nothing per call. The code runs <c>iterations</c> times first, so tiered compilation
/// has promoted it (a Release build allocated 24–32 bytes once at the first tier-up, which made such tests fail in
/// CI only), then is measured over up to three runs of <c>iterations</c> calls; the smallest figure counts. A real
/// per-call allocation shows in every run (at least <c>iterations</c> bytes), a one-off in one at most.
/// </summary>
internal static class AllocationAssert
{
    public static void Zero(Action call, int iterations = 10_000)
    {
        for (var i = 0; i < iterations; i++)
        {
            call();
        }
        var smallest = long.MaxValue;
        for (var run = 0; run < 3 && smallest > 0; run++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < iterations; i++)
            {
                call();
            }
            smallest = Math.Min(smallest, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(smallest == 0, $"{smallest} bytes allocated over {iterations} calls (about {(double)smallest / iterations:0.##} per call)");
    }
}
