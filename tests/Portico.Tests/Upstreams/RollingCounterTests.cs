using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class RollingCounterTests
{
    // 10 s window at 10 ticks a second: buckets of 10 ticks, so timestamps read as tenths of a second.
    private const long Frequency = 10;
    private static readonly TimeSpan Window = TimeSpan.FromSeconds(10);

    [Fact]
    public void Sum_Empty_IsZero()
    {
        var counter = new RollingCounter(Window, Frequency);

        counter.Sum(12_345, out var first, out var second);

        Assert.Equal(0, first);
        Assert.Equal(0, second);
    }

    [Fact]
    public void Increment_CountsBothSeriesSeparately()
    {
        var counter = new RollingCounter(Window, Frequency);

        counter.IncrementFirst(1000);
        counter.IncrementFirst(1001);
        counter.IncrementSecond(1002);

        counter.Sum(1003, out var first, out var second);
        Assert.Equal(2, first);
        Assert.Equal(1, second);
    }

    [Fact]
    public void Sum_CoversCurrentAndNinePreviousBuckets()
    {
        var counter = new RollingCounter(Window, Frequency);
        counter.IncrementFirst(1000); // bucket 100

        // Buckets 100..109 are in the window at any time in bucket 109.
        counter.Sum(1099, out var first, out _);
        Assert.Equal(1, first);

        // In bucket 110 the slot of bucket 100 is out of the window (9 s to 10 s after the event).
        counter.Sum(1100, out first, out _);
        Assert.Equal(0, first);
    }

    [Fact]
    public void Increment_ReusedSlot_IsResetForTheNewLap()
    {
        var counter = new RollingCounter(Window, Frequency);
        counter.IncrementFirst(1000);
        counter.IncrementSecond(1000);

        // Bucket 110 uses the same slot as bucket 100.
        counter.IncrementFirst(1100);

        counter.Sum(1100, out var first, out var second);
        Assert.Equal(1, first);
        Assert.Equal(0, second);
    }

    [Fact]
    public void Increment_OlderThanTheSlotsLap_IsDropped()
    {
        var counter = new RollingCounter(Window, Frequency);
        counter.IncrementFirst(1100);

        // A thread that read the clock a whole window ago, in bucket 100 (same slot), writes late.
        counter.IncrementFirst(1000);

        counter.Sum(1100, out var first, out _);
        Assert.Equal(1, first);
    }

    [Fact]
    public void Sum_FutureBuckets_AreNotCounted()
    {
        var counter = new RollingCounter(Window, Frequency);
        counter.IncrementFirst(1050);

        counter.Sum(1040, out var first, out _);

        Assert.Equal(0, first);
    }

    [Fact]
    public void Clear_ForgetsEverything_AndCountingResumes()
    {
        var counter = new RollingCounter(Window, Frequency);
        for (var t = 1000; t < 1100; t += 7)
        {
            counter.IncrementFirst(t);
            counter.IncrementSecond(t);
        }

        counter.Clear();
        counter.Sum(1099, out var first, out var second);
        Assert.Equal(0, first);
        Assert.Equal(0, second);

        counter.IncrementSecond(1099);
        counter.Sum(1099, out first, out second);
        Assert.Equal(0, first);
        Assert.Equal(1, second);
    }

    [Fact]
    public void Increment_ZeroTimestamp_IsCounted()
    {
        var counter = new RollingCounter(Window, Frequency);

        counter.IncrementFirst(0);

        counter.Sum(0, out var first, out _);
        Assert.Equal(1, first);
    }

    [Fact]
    public void Constructor_WindowShorterThanBuckets_UsesOneTickBuckets()
    {
        // 1 tick at 10 ticks a second is below one tenth of the window: buckets are 1 tick, never 0 (division).
        var counter = new RollingCounter(TimeSpan.FromSeconds(0.1), Frequency);

        counter.IncrementFirst(5);
        counter.Sum(14, out var first, out _);
        Assert.Equal(1, first);
        counter.Sum(15, out first, out _);
        Assert.Equal(0, first);
    }

    [Fact]
    public void Constructor_LongWindowAtNanosecondFrequency_DoesNotOverflow()
    {
        var counter = new RollingCounter(TimeSpan.FromDays(1), 1_000_000_000);
        var day = 86_400L * 1_000_000_000;

        counter.IncrementFirst(day);
        counter.Sum(day + (day / 2), out var first, out _);
        Assert.Equal(1, first);
        counter.Sum(day * 2, out first, out _);
        Assert.Equal(0, first);
    }

    [Theory]
    [InlineData(0, 10)]
    [InlineData(-1, 10)]
    [InlineData(10, 0)]
    public void Constructor_OutOfRange_Throws(int windowSeconds, long frequency)
    {
        Assert.Throws<ArgumentOutOfRangeException>(
            () => new RollingCounter(TimeSpan.FromSeconds(windowSeconds), frequency));
    }

    [Fact]
    public void Increment_ConcurrentWithinOneBucket_IsExact()
    {
        var counter = new RollingCounter(Window, Frequency);
        // Claim the bucket first: the only lossy race is the reset of a slot for a new slice (see the type's
        // remarks), and this test is about the increments themselves.
        counter.IncrementFirst(1000);

        Parallel.For(0, 100_000, new ParallelOptions { MaxDegreeOfParallelism = 16 }, i =>
        {
            if ((i & 1) == 0)
            {
                counter.IncrementFirst(1000);
            }
            else
            {
                counter.IncrementSecond(1000);
            }
        });

        counter.Sum(1000, out var first, out var second);
        Assert.Equal(50_001, first);
        Assert.Equal(50_000, second);
    }

    [Fact]
    public void Increment_ConcurrentAcrossBuckets_IsApproximatelyExact()
    {
        var counter = new RollingCounter(Window, Frequency);

        // Timestamps over 10 buckets (1,000..1,099), all in the window at 1,099. Each first write to a bucket may
        // race with its reset and lose at most one increment per racing thread.
        Parallel.For(0, 100_000, new ParallelOptions { MaxDegreeOfParallelism = 16 }, i => counter.IncrementFirst(1000 + (i % 100)));

        counter.Sum(1099, out var first, out _);
        Assert.InRange(first, 100_000 - (10 * 16), 100_000);
    }
}
