// Fork–join for the decode kernels (Gemv, FastDecode).
//
// A batch-1 decode step splits ~50 matrix–vector products per token over the cores, each a few tens of
// microseconds long. Parallel.For hands the second half to a thread-pool thread that is usually asleep by
// then, and waking it costs about as much as the work. Here the helper threads stay awake between jobs: they
// spin for a short while after each job (the next one typically arrives within microseconds) and only then
// block, so a decode step keeps them hot and an idle process does not burn a core.
using System.Diagnostics;

namespace Recur.Model;

/// <summary>The process-wide pool: the calling thread plus one helper per further intra-op thread.</summary>
internal static class KernelThreads
{
    static readonly Lazy<KernelPool> Pool = new(() =>
        new KernelPool(Math.Max(0, Math.Min(Environment.ProcessorCount, TorchSharp.torch.get_num_threads()) - 1)));

    /// <summary>How many parts run at once: the calling thread plus the helpers.</summary>
    public static int Width => Pool.Value.Width;

    /// <summary>Runs body(0) … body(parts − 1), part 0 on the calling thread; returns when all are done.</summary>
    public static void Run(int parts, Action<int> body) => Pool.Value.Run(parts, body);
}

/// <summary>A fixed set of helper threads that run the parts of one job at a time (see the file header).</summary>
internal sealed class KernelPool : IDisposable
{
    const double SpinMicroseconds = 100;

    readonly object _runLock = new();
    readonly Worker[] _workers;
    Action<int>? _body;
    int _parts, _pending;
    long _generation;
    Exception? _error;
    volatile bool _stopped;

    public KernelPool(int helpers)
    {
        // Workers are created before any job is posted and take the current generation from here, not from
        // their own first read: a thread that starts late could otherwise see the first job's generation as
        // already done and sleep through it.
        _workers = [.. Enumerable.Range(1, helpers).Select(i => new Worker(this, i))];
    }

    public int Width => _workers.Length + 1;

    /// <summary>Ends the helper threads (the process-wide pool lives as long as the process).</summary>
    public void Dispose()
    {
        lock (_runLock)
        {
            _stopped = true;
            Interlocked.Increment(ref _generation);
            foreach (var w in _workers) w.WakeIfAsleep();
        }
    }

    public void Run(int parts, Action<int> body)
    {
        ObjectDisposedException.ThrowIf(_stopped, this);
        parts = Math.Min(parts, _workers.Length + 1);
        if (parts <= 1) { body(0); return; }
        lock (_runLock)
        {
            _body = body; _parts = parts; _error = null;
            Volatile.Write(ref _pending, parts - 1);
            Interlocked.Increment(ref _generation); // full fence: the job is visible before any helper is woken
            for (int i = 0; i < parts - 1; i++) _workers[i].WakeIfAsleep();
            try { body(0); }
            finally
            {
                var spin = new SpinWait();
                while (Volatile.Read(ref _pending) > 0) spin.SpinOnce(sleep1Threshold: -1);
                _body = null;
            }
            if (_error is { } e) throw new AggregateException(e);
        }
    }

    sealed class Worker
    {
        readonly KernelPool _pool;
        readonly int _id;
        readonly ManualResetEventSlim _wake = new(false, spinCount: 1);
        readonly long _firstSeen;
        int _asleep;

        public Worker(KernelPool pool, int id)
        {
            _pool = pool;
            _id = id;
            _firstSeen = Volatile.Read(ref pool._generation);
            new Thread(Loop) { IsBackground = true, Name = $"recur-kernel-{id}" }.Start();
        }

        public void WakeIfAsleep() { if (Volatile.Read(ref _asleep) == 1) _wake.Set(); }

        void Loop()
        {
            var p = _pool;
            long seen = _firstSeen;
            long spinTicks = (long)(SpinMicroseconds * Stopwatch.Frequency / 1e6);
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                while (Volatile.Read(ref p._generation) == seen)
                {
                    if (Stopwatch.GetTimestamp() - start < spinTicks) { Thread.SpinWait(8); continue; }
                    _wake.Reset();
                    Interlocked.Exchange(ref _asleep, 1); // full fence before re-reading the generation
                    if (Volatile.Read(ref p._generation) == seen) _wake.Wait();
                    Volatile.Write(ref _asleep, 0);
                    start = Stopwatch.GetTimestamp();
                }
                seen = Volatile.Read(ref p._generation);
                if (p._stopped) return;
                if (_id < p._parts)
                {
                    try { p._body!(_id); }
                    catch (Exception e) { p._error = e; }
                    Interlocked.Decrement(ref p._pending);
                }
            }
        }
    }
}
