using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recur.Model;

/// <summary>
/// Next-token cross-entropy: the one loss of training, validation and evaluation scoring (METHOD §3; the model computes
/// its own loss from targets as karpathy/nanochat:nanochat/gpt.py's forward does). Targets equal to
/// <see cref="IgnoreIndex"/> are not scored.
/// </summary>
public static class Loss
{
    /// <summary>The target id that is not scored (padding, unsupervised positions): −100, as in HF transformers and TRL.</summary>
    public const long IgnoreIndex = -100;

    // The ignored label as a libtorch Scalar, held for the process (Model/Scalars.cs).
    static readonly TorchSharp.Scalar IgnoreScalar = IgnoreIndex;

    /// <summary>
    /// Cross-entropy of <paramref name="model"/> on <paramref name="inputs"/> against <paramref name="targets"/> [B, S], both
    /// on the model's device: the mean over scored targets (training) or their sum. <paramref name="recurrence"/> (recurrent
    /// models) overrides the model's own (its default T, or the T of a <see cref="RecurrentModel.At"/> view);
    /// <paramref name="s0"/> fixes the initial state [B, S, h].
    /// </summary>
    public static Tensor Of(ICausalLM model, Tensor inputs, Tensor targets, Recurrence? recurrence = null, Tensor? s0 = null,
        nn.Reduction reduction = nn.Reduction.Mean)
    {
        // The logits and their reshaped views are held until cross_entropy has read them, also for callers without a
        // scope (Model/Scalars.cs); autograd keeps what backward needs on its own.
        using var scope = NewDisposeScope();
        Tensor logits;
        if (recurrence is null && s0 is null) logits = model.Forward(inputs);
        else
        {
            var (rm, own) = RecurrentModelAt.Unwrap(model) ?? throw new ArgumentException("a recurrence or s_0 needs a recurrent model", nameof(model));
            logits = rm.Forward(inputs, recurrence ?? own ?? Recurrence.Fixed(rm.DefaultRecurrences), s0);
        }
        return F.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets.reshape(-1), ignore_index: IgnoreIndex, reduction: reduction).MoveToOuterDisposeScope();
    }

    /// <summary>Summed loss and the number of scored targets, without grad (validation, scoring); inputs may be on any device.</summary>
    public static (double Sum, long Tokens) Sum(ICausalLM model, Tensor inputs, Tensor targets, Recurrence? recurrence = null, Tensor? s0 = null)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var y = targets.to(model.Device);
        var sum = Of(model, inputs.to(model.Device), y, recurrence, s0, nn.Reduction.Sum);
        return (sum.item<float>(), Scored(y));
    }

    /// <summary>How many targets are scored (not <see cref="IgnoreIndex"/>).</summary>
    public static long Scored(Tensor targets)
    {
        using var scored = targets.ne(IgnoreScalar);
        using var count = scored.sum();
        return count.item<long>();
    }
}
