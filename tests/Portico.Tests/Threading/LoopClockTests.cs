using System.Diagnostics;
using Portico.Threading;

namespace Portico.Tests.Threading;

/// <summary>
/// The loop's clock: off a loop it is the clock; on a loop thread (after <see cref="LoopClock.Tick"/>) it holds the
/// time of the last tick until the next one, and the wall clock it gives stays the system's.
/// </summary>
public sealed class LoopClockTests
{
    // Each test runs on a thread of its own: the loop time is thread-static, and a test pool thread left "on a loop"
    // would freeze the clock of every later test on it.
    private static void OnOwnThread(Action body)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                body();
            }
            catch (Exception ex)
            {
                failure = ex;
            }
            finally
            {
                LoopClock.Leave();
            }
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(30)));
        if (failure is not null)
        {
            throw new Xunit.Sdk.XunitException("on the test thread: " + failure);
        }
    }

    [Fact]
    public void OffLoop_IsTheClock() => OnOwnThread(() =>
    {
        var first = LoopClock.Timestamp;
        Thread.Sleep(20);
        var second = LoopClock.Timestamp;
        Assert.True(Stopwatch.GetElapsedTime(first, second) >= TimeSpan.FromMilliseconds(15));
        Assert.InRange(LoopClock.UnixMilliseconds - DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), -50, 50);
    });

    [Fact]
    public void OnLoop_HoldsTheTickUntilTheNext() => OnOwnThread(() =>
    {
        LoopClock.Tick();
        var ticked = LoopClock.Timestamp;
        var wall = LoopClock.UnixMilliseconds;
        Assert.InRange(wall - DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), -50, 50);

        Thread.Sleep(30);
        Assert.Equal(ticked, LoopClock.Timestamp);
        Assert.Equal(wall, LoopClock.UnixMilliseconds);

        LoopClock.Tick();
        Assert.True(Stopwatch.GetElapsedTime(ticked, LoopClock.Timestamp) >= TimeSpan.FromMilliseconds(25));
        Assert.InRange(LoopClock.UnixMilliseconds - wall, 25, 5_000);

        LoopClock.Leave();
        var off = LoopClock.Timestamp;
        Thread.Sleep(20);
        Assert.NotEqual(off, LoopClock.Timestamp);
    });

    [Fact]
    public void Elapsed_IsNeverNegative() => OnOwnThread(() =>
    {
        LoopClock.Tick();
        // A start taken off the loop after this batch's tick: later than the loop's "now".
        var later = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
        Assert.Equal(TimeSpan.Zero, LoopClock.Elapsed(later));

        var earlier = LoopClock.Timestamp - (Stopwatch.Frequency / 10);
        Assert.InRange(LoopClock.Elapsed(earlier), TimeSpan.FromMilliseconds(99), TimeSpan.FromMilliseconds(101));
    });
}
