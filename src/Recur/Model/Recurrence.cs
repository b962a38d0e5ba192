using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>
/// The recurrence of one forward call: <see cref="NoGrad"/> iterations without a graph, then <see cref="WithGrad"/>
/// with one (T = n + k, truncated backpropagation, METHOD §3.2), and the generator s_0 and test-time noise are drawn
/// from (null: libtorch's default generator). It travels into <see cref="RecurrentModel.Forward(Tensor, Recurrence, Tensor?, Tensor?, IKvCache?, bool)"/>
/// with the inputs, as a KV cache does, instead of living on the model: a model-wide T that callers set and restore
/// leaks into the next call the first time one of them forgets to restore it.
/// Adaptive depth (per-token exit) is an engine concern and travels with the generation options.
/// </summary>
public sealed record Recurrence
{
    public Recurrence(int noGrad, int withGrad = 0, Generator? stateGenerator = null)
    {
        if (noGrad < 0 || withGrad < 0 || noGrad + withGrad < 1)
            throw new RecurUserException($"recurrence must have n ≥ 0, k ≥ 0 and n + k ≥ 1 (got n = {noGrad}, k = {withGrad})");
        NoGrad = noGrad;
        WithGrad = withGrad;
        StateGenerator = stateGenerator;
    }

    /// <summary>T iterations, none with grad (inference).</summary>
    public static Recurrence Fixed(int iterations, Generator? stateGenerator = null) =>
        iterations >= 1 ? new(iterations, 0, stateGenerator)
            : throw new RecurUserException($"the number of recurrences must be ≥ 1 (got {iterations})");

    public int NoGrad { get; }
    public int WithGrad { get; }
    public Generator? StateGenerator { get; }

    /// <summary>T = n + k.</summary>
    public int Iterations => NoGrad + WithGrad;
}
