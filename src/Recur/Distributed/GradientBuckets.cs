using static TorchSharp.torch;

namespace Recur.Distributed;

/// <summary>A run of consecutive gradients, <c>[Start, Start + Count)</c>, reduced as one flat buffer of <see cref="Elements"/> values.</summary>
public sealed record GradientBucket(int Start, int Count, long Elements, ScalarType DType)
{
    /// <summary>Element offset of each member inside the flat buffer.</summary>
    public required long[] Offsets { get; init; }
}

/// <summary>
/// Groups gradients into buckets of about <c>capBytes</c> for all-reduce, as PyTorch DDP does (default 25 MiB;
/// pytorch/pytorch:torch/nn/parallel/distributed.py, bucket_cap_mb): one collective per bucket instead of one per
/// tensor amortises the per-call latency over many small tensors (norms, biases), while a bounded bucket keeps
/// the staging buffer small. Buckets hold consecutive tensors of one dtype; a tensor larger than the cap is a
/// bucket of its own and is reduced where it lies, without a copy. An instance keeps the plan and the staging
/// buffers from one step to the next (allocating 25 MiB each step would cost page faults on every touch).
/// </summary>
public sealed class GradientBuckets(long capBytes = GradientBuckets.DefaultCapBytes) : IDisposable
{
    public const long DefaultCapBytes = 25L << 20;

    (long, ScalarType)[] _key = [];
    List<GradientBucket> _plan = [];
    Tensor?[] _buffers = [];

    /// <summary>The buckets of the last <see cref="Average"/>.</summary>
    public IReadOnlyList<GradientBucket> Buckets => _plan;

    /// <summary>
    /// Replaces each gradient by its mean over <paramref name="world"/> ranks, where <paramref name="sumInPlace"/> sums
    /// a contiguous 1-D tensor over the ranks in place (MPI_Allreduce with MPI_IN_PLACE) and is called once per bucket.
    /// </summary>
    public void Average(IReadOnlyList<Tensor> gradients, int world, Action<Tensor> sumInPlace)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using TorchSharp.Scalar ranks = world; // held across every division (Model/Scalars.cs)
        Replan(gradients);
        for (int b = 0; b < _plan.Count; b++)
        {
            var bucket = _plan[b];
            if (_buffers[b] is not { } flat)
            {
                var g = gradients[bucket.Start];
                sumInPlace(g.view(-1));
                g.div_(ranks);
                continue;
            }
            for (int i = 0; i < bucket.Count; i++)
            {
                var g = gradients[bucket.Start + i];
                flat.narrow(0, bucket.Offsets[i], g.numel()).copy_(g.reshape(-1));
            }
            sumInPlace(flat);
            flat.div_(ranks);
            for (int i = 0; i < bucket.Count; i++)
            {
                var g = gradients[bucket.Start + i];
                g.copy_(flat.narrow(0, bucket.Offsets[i], g.numel()).view(g.shape));
            }
        }
    }

    /// <summary>Rebuilds the plan and its buffers when the gradients' sizes or dtypes differ from the last call.</summary>
    void Replan(IReadOnlyList<Tensor> gradients)
    {
        var key = gradients.Select(g => (g.numel(), g.dtype)).ToArray();
        if (key.SequenceEqual(_key)) return;
        foreach (var t in _buffers) t?.Dispose();
        _key = key;
        _plan = Plan(key, capBytes);
        _buffers = new Tensor?[_plan.Count];
        for (int b = 0; b < _plan.Count; b++)
        {
            var bucket = _plan[b];
            // Alone and contiguous: reduced in its own memory, no staging buffer.
            if (bucket.Count == 1 && gradients[bucket.Start].is_contiguous()) continue;
            _buffers[b] = empty(bucket.Elements, dtype: bucket.DType).DetachFromDisposeScope();
        }
    }

    public void Dispose()
    {
        foreach (var t in _buffers) t?.Dispose();
        _buffers = [];
        _key = [];
        _plan = [];
    }

    public static List<GradientBucket> Plan(IReadOnlyList<(long Elements, ScalarType DType)> tensors, long capBytes = DefaultCapBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capBytes, 1);
        var buckets = new List<GradientBucket>();
        int start = 0;
        long elements = 0, bytes = 0;
        var offsets = new List<long>();
        void Close(int end)
        {
            if (end > start) buckets.Add(new GradientBucket(start, end - start, elements, tensors[start].DType) { Offsets = [.. offsets] });
            start = end; elements = 0; bytes = 0; offsets.Clear();
        }
        for (int i = 0; i < tensors.Count; i++)
        {
            var (n, dt) = tensors[i];
            long b = n * ElementSize(dt);
            if (i > start && (dt != tensors[start].DType || bytes + b > capBytes)) Close(i);
            offsets.Add(elements);
            elements += n; bytes += b;
            if (bytes >= capBytes) Close(i + 1);
        }
        Close(tensors.Count);
        return buckets;
    }

    public static int ElementSize(ScalarType dt) => dt switch
    {
        ScalarType.Float32 => 4,
        ScalarType.Float64 => 8,
        _ => throw new NotSupportedException($"gradients of dtype {dt} cannot be all-reduced (parameters are fp32, STYLE §6)"),
    };
}
