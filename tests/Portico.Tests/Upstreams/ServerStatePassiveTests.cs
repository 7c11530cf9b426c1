using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

public sealed class ServerStatePassiveTests
{
    [Fact]
    public void ReportFailure_EjectsAfterMaxFailsInARow()
    {
        var state = new ServerState();
        Assert.False(state.ReportFailure(3, TimeSpan.FromMinutes(1)));
        Assert.False(state.ReportFailure(3, TimeSpan.FromMinutes(1)));
        Assert.True(state.IsAvailable);
        Assert.True(state.ReportFailure(3, TimeSpan.FromMinutes(1)));
        Assert.True(state.IsEjected);
        Assert.False(state.IsAvailable);
        Assert.True(state.IsHealthy);
    }

    [Fact]
    public void ReportSuccess_ResetsTheStreak()
    {
        var state = new ServerState();
        state.ReportFailure(3, TimeSpan.FromMinutes(1));
        state.ReportFailure(3, TimeSpan.FromMinutes(1));
        state.ReportSuccess();
        Assert.Equal(0, state.ConsecutiveFailures);
        Assert.False(state.ReportFailure(3, TimeSpan.FromMinutes(1)));
        Assert.True(state.IsAvailable);
    }

    [Fact]
    public void Ejection_EndsAfterItsTime()
    {
        var state = new ServerState();
        Assert.True(state.ReportFailure(1, TimeSpan.Zero));
        Assert.False(state.IsEjected);
        Assert.True(state.IsAvailable);
    }
}
