using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Portico.Threading;

// Async method builders for the per-request frames of the proxy path (ServeAsync, ForwardHttp1Async and the
// like). They do what .NET's PoolingAsyncValueTaskMethodBuilder does — the state machine of a method that has to
// wait is moved into a box that is itself the IValueTaskSource, and the box is reused once its result was read —
// with a pool sized for a proxy: .NET keeps one box per thread and one per core, so with 64 or more requests in
// flight nearly every request allocated a new box for each such frame (about 1.5 KB per request at c64-c256,
// measured with dotnet-trace). Here each box type has a pool (PerCorePool) of 2,048 boxes in all (at least 512 per
// core), one per request in flight for a thousand connections and more.
//
// Behaviour is that of .NET's builders: the method starts on the caller's thread (execution context saved and
// restored around it by AsyncMethodBuilderCore through the BCL builder's Start), each continuation runs in the
// execution context captured at its await (so AsyncLocal values such as Activity.Current flow), continuations of
// the returned ValueTask run synchronously, and the ValueTask may be awaited once only.

/// <summary>Builder for <c>async ValueTask</c> methods whose box is pooled (see the file's comment).</summary>
[StructLayout(LayoutKind.Auto)]
internal struct PooledValueTaskBuilder
{
    private PooledValueTaskBuilder<VoidResult> _inner;

    public static PooledValueTaskBuilder Create() => default;

    public ValueTask Task
    {
        get
        {
            var box = _inner.Box;
            if (box is not null)
            {
                return new ValueTask(box, box.Version);
            }
            return _inner.Exception is { } ex ? ValueTask.FromException(ex) : default;
        }
    }

    public void Start<TStateMachine>(ref TStateMachine stateMachine) where TStateMachine : IAsyncStateMachine =>
        _inner.Start(ref stateMachine);

    public void SetStateMachine(IAsyncStateMachine stateMachine) => _inner.SetStateMachine(stateMachine);

    public void SetResult() => _inner.SetResult(default);

    public void SetException(Exception exception) => _inner.SetException(exception);

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion where TStateMachine : IAsyncStateMachine =>
        _inner.AwaitOnCompleted(ref awaiter, ref stateMachine);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion where TStateMachine : IAsyncStateMachine =>
        _inner.AwaitUnsafeOnCompleted(ref awaiter, ref stateMachine);
}

/// <summary>Builder for <c>async ValueTask&lt;TResult&gt;</c> methods whose box is pooled (see the file's comment).</summary>
[StructLayout(LayoutKind.Auto)]
internal struct PooledValueTaskBuilder<TResult>
{
    // Null while the method runs synchronously; set at its first await that does not complete at once, in the
    // caller's copy of the state machine before that copy is moved into the box (so the box's copy has it too).
    internal PooledBox<TResult>? Box;
    internal Exception? Exception;
    private TResult _result;

    public static PooledValueTaskBuilder<TResult> Create() => default;

    public ValueTask<TResult> Task
    {
        get
        {
            var box = Box;
            if (box is not null)
            {
                return new ValueTask<TResult>(box, box.Version);
            }
            return Exception is { } ex ? ValueTask.FromException<TResult>(ex) : new ValueTask<TResult>(_result);
        }
    }

    // AsyncMethodBuilderCore.Start (what every BCL builder's Start is) keeps the caller's execution and
    // synchronization context as they were; it uses no state of the builder it is called on.
    public readonly void Start<TStateMachine>(ref TStateMachine stateMachine) where TStateMachine : IAsyncStateMachine =>
        AsyncValueTaskMethodBuilder<TResult>.Create().Start(ref stateMachine);

    public readonly void SetStateMachine(IAsyncStateMachine stateMachine)
    {
        // Only called for state machines that are classes (Debug builds); the box holds the reference then.
    }

    public void SetResult(TResult result)
    {
        if (Box is { } box)
        {
            box.SetResult(result);
        }
        else
        {
            _result = result;
        }
    }

    public void SetException(Exception exception)
    {
        if (Box is { } box)
        {
            box.SetException(exception);
        }
        else
        {
            Exception = exception;
        }
    }

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion where TStateMachine : IAsyncStateMachine =>
        awaiter.OnCompleted(BoxFor(ref stateMachine).MoveNextAction);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion where TStateMachine : IAsyncStateMachine =>
        awaiter.UnsafeOnCompleted(BoxFor(ref stateMachine).MoveNextAction);

    private PooledBox<TResult> BoxFor<TStateMachine>(ref TStateMachine stateMachine) where TStateMachine : IAsyncStateMachine
    {
        var context = ExecutionContext.Capture();
        if (Box is { } existing)
        {
            // A later await: the state machine already lives in the box (this builder is the box's copy).
            existing.Context = context;
            return existing;
        }
        var box = PooledBox<TStateMachine, TResult>.Rent();
        Box = box;                          // first, so the copy below carries it
        box.StateMachine = stateMachine;
        box.Context = context;
        return box;
    }
}

/// <summary>
/// The return type of a method started and left to run on its own (nobody awaits it): <c>async Detached M()</c> is
/// what <c>_ = MAsync()</c> of an <c>async Task</c> was, without the Task and state-machine box allocated for every
/// call. Its box is pooled and recycled when the method ends. An exception escaping the method is written to the
/// standard error (a bug: such methods handle their own failures), as the epoll loops do, and does not end the process.
/// </summary>
[AsyncMethodBuilder(typeof(DetachedBuilder))]
internal readonly struct Detached;

/// <summary>Builder for <c>async Detached</c> methods (see <see cref="Detached"/>).</summary>
[StructLayout(LayoutKind.Auto)]
internal struct DetachedBuilder
{
    private PooledValueTaskBuilder<VoidResult> _inner;

    public static DetachedBuilder Create() => default;

    public readonly Detached Task => default;

    public readonly void Start<TStateMachine>(ref TStateMachine stateMachine) where TStateMachine : IAsyncStateMachine =>
        _inner.Start(ref stateMachine);

    public readonly void SetStateMachine(IAsyncStateMachine stateMachine) => _inner.SetStateMachine(stateMachine);

    // Both are the last thing the method's MoveNext does (the compiler's code returns right after them), so the box
    // can go back to its pool here although that MoveNext is still on the stack: nothing reads the box after this.
    public readonly void SetResult() => _inner.Box?.RecycleDetached();

    public readonly void SetException(Exception exception)
    {
        _inner.Box?.RecycleDetached();
        Console.Error.WriteLine("portico: unhandled exception in a detached method: " + exception);
    }

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion where TStateMachine : IAsyncStateMachine =>
        _inner.AwaitOnCompleted(ref awaiter, ref stateMachine);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion where TStateMachine : IAsyncStateMachine =>
        _inner.AwaitUnsafeOnCompleted(ref awaiter, ref stateMachine);
}

/// <summary>The result type of the non-generic builder.</summary>
internal readonly struct VoidResult;

/// <summary>What every pooled box has, whatever its result type: the step that resumes its method.</summary>
internal abstract class PooledBox
{
    // What a box's resume looks like to a source: one delegate for all boxes, the box as its state.
    private static readonly Action<object?> Resume = static box => Unsafe.As<PooledBox>(box!).MoveNext();

    // The delegates .NET's ValueTask awaiters register with a source for OnCompleted(Action) and
    // UnsafeOnCompleted(Action) (which is how the builders here wait): "call the Action in the state". Found by
    // awaiting a probe once, so nothing depends on how the framework names them.
    private static readonly Action<object?>? AwaiterInvoke = Probe.ContinuationOf(static probe => new ValueTask(probe, 0).GetAwaiter());
    private static readonly Action<object?>? AwaiterOfTInvoke = Probe.ContinuationOf(static probe => new ValueTask<int>(probe, 0).GetAwaiter());

    protected PooledBox() => MoveNextAction = MoveNext;

    /// <summary>What an awaiter calls to resume the method; one delegate per box, for its whole life.</summary>
    public Action MoveNextAction { get; }

    protected abstract void MoveNext();

    /// <summary>
    /// For a source's OnCompleted: when the awaiter registered "call this Action" and the Action is a pooled box's
    /// <see cref="MoveNextAction"/> (every await in a method built here), the box's resume is registered instead, so
    /// completing the source calls the box at once rather than through the awaiter's delegate and the Action (a
    /// delegate call less for every continuation; the flags, and so the execution context and scheduling, are
    /// unchanged).
    /// </summary>
    public static void Direct(ref Action<object?> continuation, ref object? state)
    {
        if ((ReferenceEquals(continuation, AwaiterInvoke) || ReferenceEquals(continuation, AwaiterOfTInvoke))
            && state is Action action && action.Target is PooledBox box && ReferenceEquals(action, box.MoveNextAction))
        {
            continuation = Resume;
            state = box;
        }
    }

    /// <summary>A source's OnCompleted on its <paramref name="core"/>, with <see cref="Direct"/> applied first.</summary>
    public static void OnCompleted<T>(ref ManualResetValueTaskSourceCore<T> core, Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        Direct(ref continuation, ref state);
        core.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>A source that only records what an awaiter registers with it.</summary>
    private sealed class Probe : IValueTaskSource, IValueTaskSource<int>
    {
        private Action<object?>? _continuation;

        public static Action<object?>? ContinuationOf<TAwaiter>(Func<Probe, TAwaiter> awaiterOf) where TAwaiter : ICriticalNotifyCompletion
        {
            var probe = new Probe();
            awaiterOf(probe).UnsafeOnCompleted(static () => { });
            return probe._continuation;
        }

        public ValueTaskSourceStatus GetStatus(short token) => ValueTaskSourceStatus.Pending;

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _continuation = continuation;

        void IValueTaskSource.GetResult(short token)
        {
        }

        int IValueTaskSource<int>.GetResult(short token) => 0;
    }
}

/// <summary>A state machine's box: runs its steps and is the source of the method's ValueTask.</summary>
internal abstract class PooledBox<TResult> : PooledBox, IValueTaskSource<TResult>, IValueTaskSource
{
    private ManualResetValueTaskSourceCore<TResult> _core;

    /// <summary>The execution context captured at the current await (null when flow was suppressed).</summary>
    public ExecutionContext? Context;

    public short Version => _core.Version;

    public void SetResult(TResult result) => _core.SetResult(result);

    public void SetException(Exception exception) => _core.SetException(exception);

    /// <summary>Makes the box ready for its next method and offers it to the pool.</summary>
    protected abstract void Recycle();

    protected void ResetCore() => _core.Reset();

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        OnCompleted(ref _core, continuation, state, token, flags);

    public TResult GetResult(short token)
    {
        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            Recycle();
        }
    }

    void IValueTaskSource.GetResult(short token) => GetResult(token);

    /// <summary>The end of a detached method (<see cref="DetachedBuilder"/>): no result to hand over, the box goes back now.</summary>
    internal void RecycleDetached() => Recycle();
}

internal sealed class PooledBox<TStateMachine, TResult> : PooledBox<TResult> where TStateMachine : IAsyncStateMachine
{
    // 2,048 boxes of a kind in all: one per request in flight, for a thousand connections and more.
    private static readonly PerCorePool<PooledBox<TStateMachine, TResult>> Pool = new(PerCorePool<PooledBox<TStateMachine, TResult>>.PerCoreFor(2048, 512));
    private static readonly ContextCallback RunInContext = static box => ((PooledBox<TStateMachine, TResult>)box!).StateMachine!.MoveNext();

    public TStateMachine? StateMachine;

    public static PooledBox<TStateMachine, TResult> Rent() => Pool.Rent() ?? new PooledBox<TStateMachine, TResult>();

    protected override void MoveNext()
    {
        Debug.Assert(StateMachine is not null);
        var context = Context;
        if (context is null)
        {
            StateMachine!.MoveNext();
        }
        else
        {
            ExecutionContext.Run(context, RunInContext, this);
        }
        // Nothing here may touch the box again: the last step's SetResult can have run the caller's continuation,
        // which read the result and handed this box to another method already.
    }

    protected override void Recycle()
    {
        ResetCore();
        StateMachine = default;
        Context = null;
        Pool.Return(this);
    }
}
