using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>
/// Data-parallel communication for the trainer. TorchSharp has no torch.distributed, so this interface is the seam:
/// a single process uses <see cref="SingleProcess"/>; <c>Recur.Distributed.MpiGradientSync</c> averages CPU
/// gradients with MPI_Allreduce. All ranks call every method in the same order.
/// <para>
/// A GPU backend would be a third implementation, NCCL bootstrapped through MPI as karpathy/llm.c does
/// (llmc/zero.cuh, multi_gpu_config_init): MPI starts the ranks and gives rank/size; rank 0 calls
/// ncclGetUniqueId and broadcasts the 128-byte id with MPI_Bcast; every rank selects its GPU by local rank and
/// calls ncclCommInitRank(world, id, rank). <see cref="AllReduceMean"/> then runs ncclAllReduce (ncclAvg, or
/// ncclSum and a scale) on the gradients' device pointers on the compute stream, bucketed as on the CPU, with no
/// host copy; <see cref="Mean"/> and <see cref="Barrier"/> can stay on MPI. The trainer needs no change; the
/// CLI would choose that backend when the recipe's device is cuda. Not implemented.
/// </para>
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
