using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using Portico.Threading;

namespace Portico.Tests.Threading;

// The pooled async method builder of the proxy's per-request frames: results, exceptions, execution context,
// reuse of boxes with many methods suspended at once, and no box used by two methods at once.
public sealed class PooledValueTaskBuilderTests
{
    [Fact]
    public async Task CompletesSynchronously_ResultWithoutABox()
    {
        var task = AddAsync(2, 3, gate: null);

        Assert.True(task.IsCompletedSuccessfully);
        Assert.Equal(5, await task);
    }

    [Fact]
    public Task SuspendsAndResumes_ResultAfterEveryAwait() => Task.Run(async () =>
    {
        // On the thread pool (no test synchronization context), so each Open runs the method on to its next await.
        var gate = new Gate();
        var task = AddAsync(2, 3, gate);
        Assert.False(task.IsCompleted);

        gate.Open();
        Assert.False(task.IsCompleted);
        gate.Open();

        Assert.True(task.IsCompletedSuccessfully);
        Assert.Equal(5, await task);
    });

    [Fact]
    public async Task ThrowsBeforeAwaiting_FaultedValueTask()
    {
        var task = ThrowAsync(gate: null);

        Assert.True(task.IsFaulted);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await task);
    }

    [Fact]
    public async Task ThrowsAfterAwaiting_ExceptionReachesTheAwaiter()
    {
        var gate = new Gate();
        var task = ThrowAsync(gate);
        gate.Open();

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(async () => await task);
        Assert.Equal("boom", ex.Message);
    }

    [Fact]
    public async Task Cancelled_IsCanceledForTheAwaiter()
    {
        using var cts = new CancellationTokenSource();
        var task = DelayAsync(cts.Token);
        cts.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await task);
    }

    [Fact]
    public async Task VoidMethod_SuspendsAndCompletes()
    {
        var gate = new Gate();
        var log = new List<int>();
        var task = AppendAsync(log, gate);
        Assert.False(task.IsCompleted);

        gate.Open();
        await task;

        Assert.Equal([1, 2], log);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AsyncLocal_FlowsIntoContinuations_AndDoesNotLeakToTheCaller(bool sourceAsksForTheBox)
    {
        // With sourceAsksForTheBox, the source calls PooledBox.Direct (as the epoll sources do) and gets the box itself,
        // not the awaiter's "invoke this Action" delegate; the continuation still runs in the context of the await.
        var local = new AsyncLocal<string>();
        local.Value = "caller";
        var gate = new Gate(sourceAsksForTheBox);

        var task = ReadAndSetLocalAsync(local, gate);
        Assert.Equal("caller", local.Value);   // the method's own assignment stays inside it
        Assert.Equal(sourceAsksForTheBox, gate.GotBox);

        // The continuation runs on another thread with no context of its own.
        await Task.Run(() => gate.Open());

        Assert.Equal("caller|method", await task);
    }

    [Fact]
    public async Task SourceThatAsks_AwaitedOutsideThePooledBuilders_KeepsWhatItWasGiven()
    {
        var gate = new Gate(direct: true);
        var task = WaitOnceAsync(gate);
        Assert.False(gate.GotBox);
        await Task.Run(() => gate.Open());
        Assert.Equal(1, await task);

        var direct = new Gate(direct: true);
        var waited = false;
        direct.WaitAsync().GetAwaiter().UnsafeOnCompleted(() => waited = true);
        Assert.False(direct.GotBox);
        direct.Open();
        Assert.True(waited);
    }

    [Fact]
    public async Task ManySuspendedAtOnce_SteadyStateAllocatesNoBoxes()
    {
        // .NET's own pooling builder keeps one box per thread and one per core, so 100 methods waiting at once
        // allocate 98 boxes every round; these are pooled.
        const int inFlight = 100;
        var sources = new Gate[inFlight];
        for (var i = 0; i < inFlight; i++)
        {
            sources[i] = new Gate();
        }
        var tasks = new ValueTask<int>[inFlight];

        void Round()
        {
            for (var i = 0; i < inFlight; i++)
            {
                tasks[i] = AddAsync(i, 1, sources[i]);
            }
            for (var i = 0; i < inFlight; i++)
            {
                sources[i].Open();
                sources[i].Open();
            }
            for (var i = 0; i < inFlight; i++)
            {
                // completed: reads the result and recycles the box (no Assert.Equal here: it allocates)
                if (tasks[i].Result != i + 1)
                {
                    throw new InvalidOperationException($"method {i} returned {tasks[i].Result}");
                }
            }
        }

        // Pin to one thread so the processor id (the pool's stack) is stable enough; boxes may still move.
        await Task.Factory.StartNew(() => AllocationAssert.Zero(Round, 200), TaskCreationOptions.LongRunning);
    }

    [Fact]
    public async Task ManyThreads_EveryResultRight_NoBoxUsedTwice()
    {
        // A box handed to two methods at once would mix their results or fail the ValueTask's token check.
        var workers = new Task[8];
        for (var w = 0; w < workers.Length; w++)
        {
            var seed = w * 1_000_000;
            workers[w] = Task.Run(async () =>
            {
                var batch = new ValueTask<int>[16];
                for (var round = 0; round < 2_000; round++)
                {
                    for (var i = 0; i < batch.Length; i++)
                    {
                        batch[i] = YieldAddAsync(seed + round, i);
                    }
                    for (var i = 0; i < batch.Length; i++)
                    {
                        Assert.Equal(seed + round + i, await batch[i]);
                    }
                }
            });
        }

        await Task.WhenAll(workers);
    }

    [Fact]
    public async Task Detached_RunsToTheEnd_SteadyStateAllocatesNoBoxes()
    {
        // An `async Task` left to run on its own allocated its Task and box on every call (an h2c stream each);
        // a detached method's box goes back to the pool when it ends.
        const int inFlight = 100;
        var sources = new Gate[inFlight];
        for (var i = 0; i < inFlight; i++)
        {
            sources[i] = new Gate();
        }
        var done = new int[inFlight];

        void Round()
        {
            for (var i = 0; i < inFlight; i++)
            {
                _ = CountDetached(done, i, sources[i]);
            }
            for (var i = 0; i < inFlight; i++)
            {
                sources[i].Open();
                sources[i].Open();
            }
        }

        await Task.Factory.StartNew(() => AllocationAssert.Zero(Round, 200), TaskCreationOptions.LongRunning);
        for (var i = 0; i < inFlight; i++)
        {
            Assert.True(done[i] > 200, $"method {i} ran to its end {done[i]} times");
        }
    }

    [Fact]
    public Task Detached_ThrowingAfterAnAwait_LeavesTheCallerAndTheBoxPoolIntact() => Task.Run(() =>
    {
        // The exception goes to stderr (a bug in the method), not to the thread that resumed it; the box is reused.
        var gate = new Gate();
        var log = new List<int>();
        _ = ThrowDetached(log, gate);
        Assert.Equal([1], log);

        gate.Open();

        Assert.Equal([1, 2], log);
        var done = new int[1];
        var second = new Gate();
        _ = CountDetached(done, 0, second);
        second.Open();
        second.Open();
        Assert.Equal(1, done[0]);
    });

    private static async Detached CountDetached(int[] done, int index, Gate gate)
    {
        await gate.WaitAsync();
        await gate.WaitAsync();
        done[index]++;
    }

    private static async Detached ThrowDetached(List<int> log, Gate gate)
    {
        log.Add(1);
        await gate.WaitAsync();
        log.Add(2);
        throw new InvalidOperationException("boom");
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<int> AddAsync(int a, int b, Gate? gate)
    {
        if (gate is not null)
        {
            await gate.WaitAsync();
            await gate.WaitAsync();
        }
        return a + b;
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<int> YieldAddAsync(int a, int b)
    {
        await Task.Yield();
        return a + b;
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<int> ThrowAsync(Gate? gate)
    {
        if (gate is not null)
        {
            await gate.WaitAsync();
        }
        throw new InvalidOperationException("boom");
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask DelayAsync(CancellationToken cancellationToken)
    {
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask AppendAsync(List<int> log, Gate gate)
    {
        log.Add(1);
        await gate.WaitAsync();
        log.Add(2);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder<>))]
    private static async ValueTask<string> ReadAndSetLocalAsync(AsyncLocal<string> local, Gate gate)
    {
        var seen = local.Value;
        local.Value = "method";
        await gate.WaitAsync();
        return seen + "|" + local.Value;
    }

    private static async Task<int> WaitOnceAsync(Gate gate)
    {
        await gate.WaitAsync();
        return 1;
    }

    /// <summary>
    /// A reusable awaitable that completes when opened, on the opener's thread (no allocation per wait). With
    /// <paramref name="direct"/> its OnCompleted asks <see cref="PooledBox.Direct"/>, as the epoll sources do.
    /// </summary>
    private sealed class Gate(bool direct = false) : IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<bool> _core;

        /// <summary>The last OnCompleted was handed a pooled box to resume (only with direct).</summary>
        public bool GotBox { get; private set; }

        public ValueTask WaitAsync() => new(this, _core.Version);

        public void Open() => _core.SetResult(true);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        {
            if (direct)
            {
                PooledBox.Direct(ref continuation, ref state);
            }
            GotBox = state is PooledBox;
            _core.OnCompleted(continuation, state, token, flags);
        }

        public void GetResult(short token)
        {
            _core.GetResult(token);
            _core.Reset();
        }
    }
}
