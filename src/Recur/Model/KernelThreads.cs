// Fork–join for the decode kernels (Gemv, FastDecode).
//
// A batch-1 decode step splits ~50 matrix–vector products per token over the cores, each a few tens of
// microseconds long. Parallel.For hands the second half to a thread-pool thread that is usually asleep by
// then, and waking it costs about as much as the work. Here the helper threads stay awake between jobs: they
// spin for a short while after each job (the next one typically arrives within microseconds) and only then
// block, so a decode step keeps them hot and an idle process does not burn a core.
//
// A product's rows are handed out in chunks (For): each thread first works through its own contiguous share, as a
// static split would, then takes the chunks of other shares nobody has started. A split never changes a row's
// arithmetic, so the results are the same whoever computes a chunk; what changes is that the calling thread no longer
// waits out a helper that starts late (woken from its sleep at the first product of a token, or descheduled on a
// busy host): it takes over that helper's chunks instead, and once every chunk is taken it returns without waiting for
// a helper that has not started its part at all (Run: the part is claimed by whichever thread gets to it first).
using System.Diagnostics;

namespace Recur.Model;

/// <summary>The process-wide pool: the calling thread plus one helper per further intra-op thread.</summary>
internal static class KernelThreads
{
    static readonly Lazy<KernelPool> Pool = new(() =>
        new KernelPool(Math.Max(0, Math.Min(Environment.ProcessorCount, Threads ?? TorchThreads()) - 1)));

    /// <summary>
    /// The pool's width when set before its first use; unset, libtorch's intra-op thread count. The libtorch-free
    /// generation path (Engine/MappedDecoder.cs) sets it from --threads, because asking libtorch would load it.
    /// </summary>
    public static int? Threads { get; set; }

    // Not inlined: the call into libtorch stays out of the pool's factory when Threads is set.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    static int TorchThreads() => TorchSharp.torch.get_num_threads();

    /// <summary>How many parts run at once: the calling thread plus the helpers.</summary>
    public static int Width => Pool.Value.Width;

    /// <summary>
    /// Runs body(0) … body(parts − 1), part 0 on the calling thread, each part exactly once; returns when all are done.
    /// A part its helper has not started by the time part 0 is done runs on the calling thread too.
    /// </summary>
    public static void Run(int parts, Action<int> body) => Pool.Value.Run(parts, body);

    /// <summary>Runs body over the indices 0 … count − 1 in chunks on up to <paramref name="parts"/> threads (<see cref="KernelPool.For"/>).</summary>
    public static void For(int count, int parts, int chunk, RangeBody body) => Pool.Value.For(count, parts, chunk, body);
}

/// <summary>One chunk of a range job: indices lo … hi − 1, run on thread <paramref name="part"/> (0 is the calling thread).</summary>
internal delegate void RangeBody(int part, int lo, int hi);

/// <summary>A fixed set of helper threads that run the parts of one job at a time (see the file header).</summary>
internal sealed class KernelPool : IDisposable
{
    const double SpinMicroseconds = 100;

    /// <summary>
    /// One posted job. A helper reads the current job once, through one reference, and then only this object:
    /// it can be late (preempted right after noticing the job) but never mixes one job's part count with another
    /// job's body or counter. Reading a generation number, then a part count and a body from separate fields,
    /// let a late helper run a part of the next job twice and let Run return early.
    /// </summary>
    sealed class Job(Action<int> body, int parts)
    {
        public readonly Action<int> Body = body;
        public readonly int Parts = parts;
        public int Pending = parts - 1;
        public Exception? Error;
        /// <summary>Per part: 0 until claimed, then <see cref="ByHelper"/> or <see cref="ByCaller"/> (whoever runs it claims it first).</summary>
        public readonly int[] Claims = new int[parts];
    }

    const int ByHelper = 1, ByCaller = 2;

    readonly object _runLock = new();
    readonly Worker[] _workers;
    readonly Action<int>? _onJobNoticed;
    Job? _job; // read with Volatile.Read, published with Interlocked.Exchange
    volatile bool _stopped;

    /// <param name="helpers">Helper threads beside the calling thread.</param>
    /// <param name="onJobNoticed">Test hook: called by a helper right after it noticed a new job, before it reads
    /// anything else (a test holds a helper there to stand in for preemption).</param>
    public KernelPool(int helpers, Action<int>? onJobNoticed = null)
    {
        _onJobNoticed = onJobNoticed;
        // Workers are created before any job is posted and take the current job from here, not from their own
        // first read: a thread that starts late could otherwise see the first job as already seen and sleep
        // through it.
        _workers = [.. Enumerable.Range(1, helpers).Select(i => new Worker(this, i))];
    }

    public int Width => _workers.Length + 1;

    /// <summary>Ends the helper threads (the process-wide pool lives as long as the process).</summary>
    public void Dispose()
    {
        lock (_runLock)
        {
            _stopped = true;
            Interlocked.Exchange(ref _job, new Job(_ => { }, 0));
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
            var job = new Job(body, parts);
            Interlocked.Exchange(ref _job, job); // full fence: the job is visible before any helper is woken
            for (int i = 0; i < parts - 1; i++) _workers[i].WakeIfAsleep();
            try { body(0); }
            finally
            {
                // A part whose helper has not started it yet (still waking from its sleep, or descheduled on a busy host)
                // runs here instead of being waited for; the helper finds it claimed and skips it. A range job's part
                // then finds its chunks taken (For), so this costs the caller nothing.
                for (int i = 1; i < parts; i++)
                    if (Interlocked.CompareExchange(ref job.Claims[i], ByCaller, 0) == 0)
                    {
                        try { body(i); }
                        catch (Exception error) { job.Error = error; }
                        Interlocked.Decrement(ref job.Pending);
                    }
                var spin = new SpinWait();
                while (Volatile.Read(ref job.Pending) > 0) spin.SpinOnce(sleep1Threshold: -1);
            }
            if (job.Error is { } e) throw new AggregateException(e);
        }
    }

    /// <summary>Ints between two threads' chunk counters: 64 bytes, so that each share's counter has its own cache line.</summary>
    const int CounterStride = 16;

    /// <summary>
    /// Runs body over 0 … count − 1 in chunks of <paramref name="chunk"/> indices on up to <paramref name="parts"/> threads
    /// (see the file header). Part p's share is the p-th of <paramref name="parts"/> equal contiguous ranges; each part takes
    /// the chunks of its own share in order, then the untaken chunks of the following shares. Every index runs exactly once.
    /// </summary>
    public void For(int count, int parts, int chunk, RangeBody body)
    {
        parts = Math.Min(parts, _workers.Length + 1);
        chunk = Math.Max(1, chunk);
        if (count <= 0) return;
        if (parts <= 1 || count <= chunk) { body(0, 0, count); return; }
        int per = (count + parts - 1) / parts;
        var taken = new int[parts * CounterStride]; // chunks handed out per share
        Run(parts, t =>
        {
            for (int k = 0; k < parts; k++)
            {
                int share = (t + k) % parts, lo0 = share * per, hi0 = Math.Min(count, lo0 + per);
                for (long lo; (lo = lo0 + (long)(Interlocked.Increment(ref taken[share * CounterStride]) - 1) * chunk) < hi0;)
                    body(t, (int)lo, (int)Math.Min(hi0, lo + chunk));
            }
        });
    }

    sealed class Worker
    {
        readonly KernelPool _pool;
        readonly int _id;
        readonly ManualResetEventSlim _wake = new(false, spinCount: 1);
        readonly Job? _firstSeen;
        int _asleep;

        public Worker(KernelPool pool, int id)
        {
            _pool = pool;
            _id = id;
            _firstSeen = Volatile.Read(ref pool._job);
            new Thread(Loop) { IsBackground = true, Name = $"recur-kernel-{id}" }.Start();
        }

        public void WakeIfAsleep() { if (Volatile.Read(ref _asleep) == 1) _wake.Set(); }

        void Loop()
        {
            var p = _pool;
            var seen = _firstSeen;
            long spinTicks = (long)(SpinMicroseconds * Stopwatch.Frequency / 1e6);
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                Job? job;
                while ((job = Volatile.Read(ref p._job)) == seen)
                {
                    if (Stopwatch.GetTimestamp() - start < spinTicks) { Thread.SpinWait(8); continue; }
                    _wake.Reset();
                    Interlocked.Exchange(ref _asleep, 1); // full fence before re-reading the job
                    if (Volatile.Read(ref p._job) == seen) _wake.Wait();
                    Volatile.Write(ref _asleep, 0);
                    start = Stopwatch.GetTimestamp();
                }
                seen = job;
                p._onJobNoticed?.Invoke(_id);
                if (p._stopped) return;
                if (_id < job!.Parts && Interlocked.CompareExchange(ref job.Claims[_id], ByHelper, 0) == 0)
                {
                    try { job.Body(_id); }
                    catch (Exception e) { job.Error = e; }
                    Interlocked.Decrement(ref job.Pending);
                }
            }
        }
    }
}
