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
        var ran = new ManualResetEventSlim();
        Request.Value = "request-1";
        try
        {
            var thread = ServiceThread.Start("portico-test", () =>
            {
                seen = Request.Value;
                ran.Set();
            });
            Assert.True(ran.Wait(TimeSpan.FromSeconds(10)));
            Assert.True(thread.IsBackground);
            Assert.Equal("portico-test", thread.Name);
        }
        finally
        {
            Request.Value = null;
        }
        Assert.Null(seen);
    }
}
