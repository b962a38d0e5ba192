using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>The global gradient norm before clipping and the factor the gradients were multiplied by.</summary>
/// <param name="Norm">‖g‖₂ over all gradients together, before clipping (what the trainer logs).</param>
/// <param name="Coefficient">min(1, max_norm / (norm + 1e-6)); NaN when the norm is not finite.</param>
public readonly record struct ClipResult(double Norm, double Coefficient)
{
    /// <summary>False for an inf/NaN norm; the gradients were then left untouched and the step should be skipped.</summary>
    public bool IsFinite => double.IsFinite(Norm);
}

/// <summary>Global L2 gradient-norm clipping (METHOD §4.6: clip to 1.0 after accumulation, before the optimizer step).</summary>
public static class GradClip
{
    /// <summary>Added to the norm in the coefficient, as torch.nn.utils.clip_grad_norm_ does.</summary>
    public const double Epsilon = 1e-6;

    /// <summary>
    /// Computes the L2 norm of all <paramref name="grads"/> taken together and, if it exceeds
    /// <paramref name="maxNorm"/>, scales every gradient in place by max_norm / (norm + 1e-6). The norm is the norm
    /// of the per-tensor norms, as in torch.nn.utils.clip_grad_norm_. Unlike PyTorch's default, a non-finite norm
    /// does not scale the gradients (multiplying by NaN would poison them); the caller sees <see cref="ClipResult.IsFinite"/>.
    /// </summary>
    public static ClipResult ClipGlobalNorm(IEnumerable<Tensor> grads, double maxNorm)
    {
        if (!(maxNorm > 0) || double.IsInfinity(maxNorm)) throw new RecurUserException($"gradient clipping: max norm must be a finite number > 0 (got {maxNorm})");
        var list = grads.ToList();
        if (list.Count == 0) return new ClipResult(0, 1);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // Tensor.norm() takes its order as a float; linalg.vector_norm builds a temporary Scalar (Model/Scalars.cs).
        var norms = stack(list.Select(g => g.norm().to(ScalarType.Float32)).ToList());
        double norm = norms.norm().item<float>();
        if (!double.IsFinite(norm)) return new ClipResult(norm, double.NaN);
        double coefficient = Math.Min(1.0, maxNorm / (norm + Epsilon));
        if (coefficient < 1.0)
            foreach (var g in list) Scalars.MulInPlace(g, coefficient);
        return new ClipResult(norm, coefficient);
    }
}
