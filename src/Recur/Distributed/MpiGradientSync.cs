using System.Runtime.InteropServices;
using Recur.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Distributed;

/// <summary>
/// Data-parallel gradient averaging over MPI (CPU tensors). Gradients are reduced in buckets of about 25 MiB
/// (<see cref="GradientBuckets"/>): the members of a bucket are copied into one persistent flat buffer, the buffer
/// is summed in place by MPI_Allreduce straight from tensor memory, divided by the world size and copied back; a
/// gradient as large as a bucket is reduced where it lies. Every collective runs under a
/// <see cref="CollectiveWatchdog"/> that aborts the job when a peer has not arrived within
/// <c>$RECUR_MPI_TIMEOUT</c> seconds (default 600).
/// </summary>
public sealed unsafe class MpiGradientSync : IGradientSync
{
    public const string TimeoutVariable = "RECUR_MPI_TIMEOUT";
    public const double DefaultTimeoutSeconds = 600;
    /// <summary>Exit code of a job aborted because a collective timed out.</summary>
    public const int TimeoutExitCode = 2;

    /// <summary>
    /// How long a rank that is about to abort the job waits after writing its error: MPI_Abort makes the launcher kill
    /// every rank and its forwarding proxies at once, and a line still on its way to mpiexec is lost (seen under load
    /// with 300 ms). Aborts are rare; a second costs nothing.
    /// </summary>
    static readonly TimeSpan ForwardingPause = TimeSpan.FromSeconds(1);

    readonly Mpi _mpi;
    readonly CollectiveWatchdog _watchdog;
    readonly GradientBuckets _buckets;
    bool _aborted, _finalized;

    public int Rank { get; }
    public int WorldSize { get; }
    /// <summary>Ranks on this node (sharing its cores).</summary>
    public int LocalSize { get; }
    /// <summary>The longest wait inside one collective before the job is aborted; zero: no limit.</summary>
    public TimeSpan Timeout => _watchdog.Timeout;
    public string Library { get; }
    /// <summary>Buckets of the last <see cref="AllReduceMean"/>.</summary>
    public IReadOnlyList<GradientBucket> Buckets => _buckets.Buckets;

    MpiGradientSync(Mpi mpi, TimeSpan timeout, long capBytes)
    {
        _mpi = mpi;
        _buckets = new GradientBuckets(capBytes);
        if (!mpi.Initialized) mpi.Init();
        Rank = mpi.Rank;
        WorldSize = mpi.Size;
        LocalSize = mpi.LocalSize();
        Library = $"{string.Join(' ', mpi.Version.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))} ({mpi.LibraryName})";
        _watchdog = new CollectiveWatchdog(timeout, OnTimeout);
    }

    /// <summary>Initialises MPI (unless already initialised) and joins MPI_COMM_WORLD.</summary>
    public static MpiGradientSync Start(Mpi mpi, TimeSpan timeout, long capBytes = GradientBuckets.DefaultCapBytes) => new(mpi, timeout, capBytes);

    /// <summary><c>$RECUR_MPI_TIMEOUT</c> in seconds (0 disables the watchdog), default <see cref="DefaultTimeoutSeconds"/>.</summary>
    public static TimeSpan TimeoutFromEnvironment()
    {
        var v = Environment.GetEnvironmentVariable(TimeoutVariable);
        if (string.IsNullOrWhiteSpace(v)) return TimeSpan.FromSeconds(DefaultTimeoutSeconds);
        if (!double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double s) || s < 0 || double.IsNaN(s))
            throw new RecurUserException($"${TimeoutVariable} must be a number of seconds ≥ 0 (0: no limit), got '{v}'");
        return TimeSpan.FromSeconds(s);
    }

    void OnTimeout(string what, TimeSpan waited)
    {
        Console.Error.WriteLine($"error: rank {Rank} of {WorldSize}: {what} has waited {waited.TotalSeconds:0} s for the other ranks " +
            $"(limit ${TimeoutVariable}={Timeout.TotalSeconds:0} s): another rank has died or hangs; aborting the job");
        Console.Error.Flush();
        Thread.Sleep(ForwardingPause);
        // FUNNELED promises that only the main thread calls MPI; MPI_Abort from this thread works with MPICH (tried
        // with ch4 at every thread level), and should it ever return or block, _exit still ends this process, which
        // makes the launcher end the others.
        var abort = new Thread(() => _mpi.Abort(TimeoutExitCode)) { IsBackground = true };
        abort.Start();
        abort.Join(TimeSpan.FromSeconds(10));
        Exit(TimeoutExitCode);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    static extern void Exit(int code);

    public void AllReduceMean(IReadOnlyList<Tensor> gradients)
    {
        if (WorldSize == 1 || gradients.Count == 0) return;
        foreach (var g in gradients)
            if (g.device_type != DeviceType.CPU)
                throw new NotSupportedException("MPI data parallelism reduces CPU tensors; GPU gradients need the NCCL backend (see docs/distributed.md)");
        using var guard = _watchdog.Enter("gradient all-reduce");
        _buckets.Average(gradients, WorldSize, ReduceInPlace);
    }

    /// <summary>Sums a contiguous 1-D CPU tensor over the ranks, in place, in pieces of at most 1 GiB (MPI counts are int).</summary>
    public void ReduceInPlace(Tensor flat)
    {
        int datatype = flat.dtype == ScalarType.Float64 ? Mpi.Double : flat.dtype == ScalarType.Float32 ? Mpi.Float
            : throw new NotSupportedException($"cannot all-reduce {flat.dtype} tensors");
        long n = flat.numel(), piece = (1L << 30) / GradientBuckets.ElementSize(flat.dtype);
        for (long off = 0; off < n; off += piece)
        {
            long m = Math.Min(piece, n - off);
            using var part = off == 0 && m == n ? flat.alias() : flat.narrow(0, off, m);
            fixed (byte* p = part.bytes) _mpi.AllReduceInPlace(p, (int)m, datatype, Mpi.OpSum);
        }
    }

    public double Mean(double value)
    {
        if (WorldSize == 1) return value;
        double v = value;
        using (_watchdog.Enter("all-reduce of a scalar")) _mpi.AllReduceInPlace(&v, 1, Mpi.Double, Mpi.OpSum);
        return v / WorldSize;
    }

    /// <summary>True when every rank passed the same <paramref name="value"/> (an all-reduce of its minimum and maximum).</summary>
    public bool Agree(long value)
    {
        if (WorldSize == 1) return true;
        long lo = value, hi = value;
        using (_watchdog.Enter("agreement check"))
        {
            _mpi.AllReduceInPlace(&lo, 1, Mpi.Int64, Mpi.OpMin);
            _mpi.AllReduceInPlace(&hi, 1, Mpi.Int64, Mpi.OpMax);
        }
        return lo == hi;
    }

    public void Barrier()
    {
        using (_watchdog.Enter("barrier")) _mpi.Barrier();
    }

    /// <summary>A barrier without the time limit, for waits of unknown length (rank 0 tokenising the data first).</summary>
    public void UnboundedBarrier()
    {
        using (_watchdog.Enter("barrier", bounded: false)) _mpi.Barrier();
    }

    /// <summary>
    /// Ends every process of the job with <paramref name="code"/> (MPI_Abort). A rank that fails must not merely
    /// exit: the others may be blocked in a collective it will never join, and not every launcher kills them.
    /// </summary>
    public void Abort(int code)
    {
        _aborted = true;
        Console.Out.Flush();
        Console.Error.Flush();
        // MPI_Abort makes the launcher kill every rank and its own forwarding proxies at once; lines a rank has
        // just written (its error) can be lost on the way to the terminal. A short pause lets them through.
        Thread.Sleep(ForwardingPause);
        _mpi.Abort(code);
    }

    /// <summary>MPI_Finalize, unless the job was aborted.</summary>
    public void Dispose()
    {
        if (!_aborted && !_finalized && !_mpi.Finalized)
        {
            using (_watchdog.Enter("MPI_Finalize")) _mpi.FinalizeMpi();
        }
        _finalized = true;
        _watchdog.Dispose();
        _buckets.Dispose();
    }
}
