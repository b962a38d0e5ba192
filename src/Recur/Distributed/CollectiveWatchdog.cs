using System.Diagnostics;

namespace Recur.Distributed;

/// <summary>
/// Bounds the time a rank may wait inside one collective. A blocking MPI call cannot be cancelled, and when
/// another rank hangs (a stuck file system, a deadlock, a launcher that does not kill the job when one task
/// exits, as srun without --kill-on-bad-exit) the survivors would otherwise wait for ever. A background thread
/// watches the collective in flight and calls <c>onTimeout</c> once when it has lasted longer than the limit;
/// the owner then aborts the job with a message that says which call on which rank gave up.
/// </summary>
public sealed class CollectiveWatchdog : IDisposable
{
    readonly TimeSpan _timeout;
    readonly Action<string, TimeSpan> _onTimeout;
    readonly Thread? _thread;
    readonly ManualResetEventSlim _stop = new();
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly object _gate = new();
    string? _what;      // the collective in flight, or null
    TimeSpan _since;
    bool _fired;

    /// <param name="timeout">Longest wait inside one collective; <see cref="TimeSpan.Zero"/> or less disables the watchdog.</param>
    public CollectiveWatchdog(TimeSpan timeout, Action<string, TimeSpan> onTimeout)
    {
        _timeout = timeout;
        _onTimeout = onTimeout;
        if (timeout <= TimeSpan.Zero) return;
        _thread = new Thread(Watch) { IsBackground = true, Name = "recur-mpi-watchdog" };
        _thread.Start();
    }

    public TimeSpan Timeout => _timeout;
    public bool Enabled => _thread is not null;

    /// <summary>Marks <paramref name="what"/> as in flight until the returned scope is disposed; an unbounded wait is not timed.</summary>
    public Scope Enter(string what, bool bounded = true)
    {
        lock (_gate) { _what = bounded ? what : null; _since = _clock.Elapsed; }
        return new Scope(this);
    }

    void Leave() { lock (_gate) _what = null; }

    public readonly struct Scope(CollectiveWatchdog owner) : IDisposable
    {
        public void Dispose() => owner.Leave();
    }

    void Watch()
    {
        // Checking a few times per timeout bounds the overshoot to a quarter of it (and to at most a second).
        var period = TimeSpan.FromMilliseconds(Math.Clamp(_timeout.TotalMilliseconds / 4, 10, 1000));
        while (!_stop.Wait(period))
        {
            string? what;
            TimeSpan waited;
            lock (_gate)
            {
                if (_what is null || _fired) continue;
                waited = _clock.Elapsed - _since;
                if (waited < _timeout) continue;
                what = _what;
                _fired = true;
            }
            _onTimeout(what, waited);
        }
    }

    public void Dispose()
    {
        _stop.Set();
        _thread?.Join();
        _stop.Dispose();
    }
}
