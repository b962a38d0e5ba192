using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>
/// Data-parallel communication for the trainer. TorchSharp has no torch.distributed, so this interface is the seam:
/// a single process uses <see cref="SingleProcess"/>; an MPI implementation (or NCCL bootstrapped through MPI)
/// plugs in without touching the loop. All ranks call every method in the same order.
/// </summary>
public interface IGradientSync : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>Replaces each gradient by its mean over the ranks.</summary>
    void AllReduceMean(IReadOnlyList<Tensor> gradients);

    /// <summary>The mean of a scalar over the ranks (for logging the global loss).</summary>
    double Mean(double value);

    /// <summary>Waits for every rank (e.g. until rank 0 has written a checkpoint).</summary>
    void Barrier();
}

/// <summary>One process: nothing to communicate.</summary>
public sealed class SingleProcess : IGradientSync
{
    public static readonly SingleProcess Instance = new();
    public int Rank => 0;
    public int WorldSize => 1;
    public void AllReduceMean(IReadOnlyList<Tensor> gradients) { }
    public double Mean(double value) => value;
    public void Barrier() { }
    public void Dispose() { }
}
