// Fork–join for the decode kernels (Gemv, FastDecode).
//
// A batch-1 decode step splits ~90 matrix–vector products per token over the cores, each a few tens of
// microseconds long. Parallel.For hands the second half to a thread-pool thread that is usually asleep by
// then, and waking it costs about as much as the work. Here the helper threads stay awake between jobs: they
// spin for a short while after each job (the next one typically arrives within microseconds) and only then
// block, so a decode step keeps them hot and an idle process does not burn a core.
using System.Diagnostics;

namespace Recur.Model;

internal static class KernelThreads
{
    const double SpinMicroseconds = 100;

    static readonly object RunLock = new();
    static readonly Lazy<Worker[]> Workers = new(() =>
        Enumerable.Range(1, Math.Max(0, Math.Min(Environment.ProcessorCount, TorchSharp.torch.get_num_threads()) - 1)).Select(i => new Worker(i)).ToArray());
    static Action<int>? _body;
    static int _parts, _pending;
    static long _generation;
    static Exception? _error;

    /// <summary>How many parts run at once: the calling thread plus the helpers.</summary>
    public static int Width => Workers.Value.Length + 1;

    /// <summary>Runs body(0) … body(parts − 1), part 0 on the calling thread; returns when all are done.</summary>
    public static void Run(int parts, Action<int> body)
    {
        var workers = Workers.Value;
        parts = Math.Min(parts, workers.Length + 1);
        if (parts <= 1) { body(0); return; }
        lock (RunLock)
        {
            _body = body; _parts = parts; _error = null;
            Volatile.Write(ref _pending, parts - 1);
            Interlocked.Increment(ref _generation); // full fence: the job is visible before any helper is woken
            for (int i = 0; i < parts - 1; i++) workers[i].WakeIfAsleep();
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
        readonly int _id;
        readonly ManualResetEventSlim _wake = new(false, spinCount: 1);
        int _asleep;

        public Worker(int id)
        {
            _id = id;
            new Thread(Loop) { IsBackground = true, Name = $"recur-kernel-{id}" }.Start();
        }

        public void WakeIfAsleep() { if (Volatile.Read(ref _asleep) == 1) _wake.Set(); }

        void Loop()
        {
            long seen = Volatile.Read(ref _generation);
            long spinTicks = (long)(SpinMicroseconds * Stopwatch.Frequency / 1e6);
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                while (Volatile.Read(ref _generation) == seen)
                {
                    if (Stopwatch.GetTimestamp() - start < spinTicks) { Thread.SpinWait(8); continue; }
                    _wake.Reset();
                    Interlocked.Exchange(ref _asleep, 1); // full fence before re-reading the generation
                    if (Volatile.Read(ref _generation) == seen) _wake.Wait();
                    Volatile.Write(ref _asleep, 0);
                    start = Stopwatch.GetTimestamp();
                }
                seen = Volatile.Read(ref _generation);
                if (_id < _parts)
                {
                    try { _body!(_id); }
                    catch (Exception e) { _error = e; }
                    Interlocked.Decrement(ref _pending);
                }
            }
        }
    }
}
