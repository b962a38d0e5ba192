using Recur.Distributed;
using Xunit;

namespace Recur.Tests.Distributed;

public class CollectiveWatchdogTests
{
    [Fact]
    public void Fires_once_when_a_collective_outlasts_the_timeout()
    {
        var fired = new List<(string, TimeSpan)>();
        using var w = new CollectiveWatchdog(TimeSpan.FromMilliseconds(50), (what, waited) => { lock (fired) fired.Add((what, waited)); });
        using (w.Enter("gradient all-reduce")) Thread.Sleep(400);
        lock (fired)
        {
            Assert.Single(fired);
            Assert.Equal("gradient all-reduce", fired[0].Item1);
            Assert.True(fired[0].Item2 >= TimeSpan.FromMilliseconds(50));
        }
    }

    [Fact]
    public void Stays_quiet_when_collectives_finish_in_time_or_are_unbounded()
    {
        int fired = 0;
        using var w = new CollectiveWatchdog(TimeSpan.FromMilliseconds(100), (_, _) => Interlocked.Increment(ref fired));
        for (int i = 0; i < 20; i++) using (w.Enter("barrier")) Thread.Sleep(5);
        Thread.Sleep(300); // idle between collectives is not waiting
        using (w.Enter("barrier", bounded: false)) Thread.Sleep(300);
        Assert.Equal(0, fired);
    }

    [Fact]
    public void A_zero_timeout_disables_the_watchdog()
    {
        using var w = new CollectiveWatchdog(TimeSpan.Zero, (_, _) => throw new InvalidOperationException());
        Assert.False(w.Enabled);
        using (w.Enter("barrier")) Thread.Sleep(20);
    }
}
