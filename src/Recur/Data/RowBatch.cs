using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Data;

/// <summary>Where a packed row comes from: the source's index in the spec and the row's index in that source's token file.</summary>
public readonly record struct RowRef(int Source, long Row);

/// <summary>
/// A batch of packed rows (METHOD §4.1): <see cref="Inputs"/> = row[:-1] and
/// <see cref="Labels"/> = row[1:], row-major [<see cref="Rows"/>, <see cref="SeqLen"/>], with
/// labels <see cref="Loss.IgnoreIndex"/> (−100) where the label would be padding.
/// </summary>
public sealed record RowBatch(long[] Inputs, long[] Labels, int Rows, int SeqLen, IReadOnlyList<RowRef> RowRefs)
{
    /// <summary>Number of labels that count in the loss (not −100).</summary>
    public long SupervisedTokens
    {
        get
        {
            long n = 0;
            foreach (long l in Labels) if (l != Loss.IgnoreIndex) n++;
            return n;
        }
    }

    /// <summary>int64 tensors [Rows, SeqLen] on <paramref name="device"/> (CPU when null), in the caller's dispose scope.</summary>
    public (Tensor Inputs, Tensor Labels) ToTensors(Device? device = null)
    {
        var inputs = tensor(Inputs, [Rows, SeqLen]);
        var labels = tensor(Labels, [Rows, SeqLen]);
        if (device is null || device.type == TorchSharp.DeviceType.CPU)
            return (inputs, labels);
        using (inputs)
        using (labels)
            return (inputs.to(device), labels.to(device));
    }
}
