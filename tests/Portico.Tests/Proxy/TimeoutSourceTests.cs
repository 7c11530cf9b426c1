using Portico.Proxy;

namespace Portico.Tests.Proxy;

/// <summary>The pooled read-timeout sources behave as a linked source with CancelAfter, and only clean ones are reused.</summary>
public sealed class TimeoutSourceTests
{
    [Fact]
    public void Rent_LinkedTokenCancelled_SourceCancelled_AndNotReused()
    {
        using var request = new CancellationTokenSource();
        CancellationTokenSource rented;
        using (var lease = TimeoutSource.Rent(request.Token, TimeSpan.FromMinutes(5)))
        {
            rented = lease.Source;
            request.Cancel();
            Assert.True(lease.Source.IsCancellationRequested);
        }

        using var next = TimeoutSource.Rent(CancellationToken.None, TimeSpan.FromMinutes(5));
        Assert.NotSame(rented, next.Source);
        Assert.False(next.Source.IsCancellationRequested);
    }

    [Fact]
    public async Task Rent_TimeoutElapses_SourceCancelled()
    {
        using var lease = TimeoutSource.Rent(CancellationToken.None, TimeSpan.FromMilliseconds(50));

        await Task.Delay(Timeout.Infinite, lease.Source.Token).ContinueWith(_ => { }, TaskScheduler.Default).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.True(lease.Source.IsCancellationRequested);
    }

    [Fact]
    public async Task Return_CleanSource_ReusedWithItsTimerStoppedAndUnlinked()
    {
        using var firstRequest = new CancellationTokenSource();
        var lease = TimeoutSource.Rent(firstRequest.Token, TimeSpan.FromMilliseconds(100));
        var source = lease.Source;
        lease.Dispose();

        // Reused (the pool is shared by parallel tests, so look for it among a few rentals).
        var leases = new List<TimeoutSource.Lease>();
        for (var i = 0; i < 64 && !leases.Exists(l => ReferenceEquals(l.Source, source)); i++)
        {
            leases.Add(TimeoutSource.Rent(CancellationToken.None, TimeSpan.FromMinutes(5)));
        }
        Assert.Contains(leases, l => ReferenceEquals(l.Source, source));

        // The old timer (100 ms) and the old link no longer cancel it.
        firstRequest.Cancel();
        await Task.Delay(300);
        Assert.False(source.IsCancellationRequested);
        foreach (var l in leases)
        {
            l.Dispose();
        }
    }
}
