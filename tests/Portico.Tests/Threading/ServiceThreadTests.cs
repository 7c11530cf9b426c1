using Portico.Threading;

namespace Portico.Tests.Threading;

/// <summary>Portico's own threads start without their creator's execution context (AsyncLocal values).</summary>
public sealed class ServiceThreadTests
{
    private static readonly AsyncLocal<string?> Request = new();

    [Fact]
    public void Start_DoesNotCarryTheCreatorsAsyncLocals()
    {
        string? seen = "not run";
        var background = false;
        string? name = null;
        using var ran = new ManualResetEventSlim();
        Request.Value = "request-1";
        try
        {
            ServiceThread.Start("portico-test", () =>
            {
                seen = Request.Value;
                // Read here: once the body returns the thread is dead and its state cannot be read.
                background = Thread.CurrentThread.IsBackground;
                name = Thread.CurrentThread.Name;
                ran.Set();
            });
            Assert.True(ran.Wait(TimeSpan.FromSeconds(10)));
        }
        finally
        {
            Request.Value = null;
        }
        Assert.Null(seen);
        Assert.True(background);
        Assert.Equal("portico-test", name);
    }
}
