using Recur.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>Muon hyper-parameters; the defaults are the paper's Muon group (METHOD §4.3).</summary>
/// <param name="NsCoefficients">(a, b, c) of the quintic; null for <see cref="Muon.DefaultNsCoefficients"/>.</param>
public sealed record MuonOptions(double LearningRate = 1e-3, double WeightDecay = 1e-4, double Momentum = 0.95, bool Nesterov = true, int NsSteps = 5,
    (double A, double B, double C)? NsCoefficients = null)
{
    /// <summary>The quintic's coefficients in effect.</summary>
    public (double A, double B, double C) Coefficients => NsCoefficients ?? Muon.DefaultNsCoefficients;

    public MuonOptions Validate()
    {
        if (!(LearningRate >= 0) || double.IsInfinity(LearningRate)) throw new RecurUserException($"muon: learning rate must be a finite number ≥ 0 (got {LearningRate})");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay)) throw new RecurUserException($"muon: weight decay must be a finite number ≥ 0 (got {WeightDecay})");
        if (!(Momentum >= 0 && Momentum < 1)) throw new RecurUserException($"muon: momentum must be in [0, 1) (got {Momentum})");
        if (NsSteps < 1) throw new RecurUserException($"muon: Newton–Schulz steps must be ≥ 1 (got {NsSteps})");
        return this;
    }
}

/// <summary>
/// Muon: SGD momentum whose update is orthogonalised by a quintic Newton–Schulz iteration (METHOD §4.4;
/// KellerJordan/Muon:muon.py, which RR uses through mcleish7/Muon). For gradient g and momentum m (zero at start):
/// <code>
/// m ← β·m + (1−β)·g;  u ← β·m + (1−β)·g (Nesterov; m otherwise)
/// O ← NS5(u) · √max(1, rows/cols);  p ← p·(1 − lr·wd) − lr·O
/// </code>
/// Only 2-D parameters: embeddings, the head and gains belong to AdamW (<see cref="ParamGroups"/>).
/// Momentum buffers are fp32 like the parameters; only NS5 runs in bf16, as in the reference.
/// </summary>
public sealed class Muon : IOptimizer
{
    /// <summary>(a, b, c) of the quintic X ← aX + (bA + cA²)X, A = XXᵀ: chosen for slope at zero, not convergence.</summary>
    public static (double A, double B, double C) DefaultNsCoefficients { get; } = (3.4445, -4.7750, 2.0315);

    /// <summary>Added to the Frobenius norm before the first division.</summary>
    public const double NsEpsilon = 1e-7;

    readonly IReadOnlyList<(string Name, Parameter Param)> _params;
    readonly Tensor[] _momentum;
    // NS5's bf16 products: libtorch's numbers, computed faster where its bf16 GEMM is the slow reference kernel.
    readonly ExactBf16MatMul _matmul = new();

    public MuonOptions Options { get; }
    public string Name => "muon";
    public double BaseLearningRate => Options.LearningRate;
    public double LearningRate { get; set; }
    public IReadOnlyList<(string Name, Parameter Param)> Parameters => _params;

    /// <summary>The Newton–Schulz products' engine (which shapes run on the fast kernel).</summary>
    public ExactBf16MatMul MatMul => _matmul;

    public Muon(IEnumerable<(string Name, Parameter Param)> parameters, MuonOptions? options = null)
    {
        Options = (options ?? new MuonOptions()).Validate();
        LearningRate = Options.LearningRate;
        _params = OptimizerState.Check(parameters, Name);
        foreach (var (name, p) in _params)
            if (p.dim() != 2) throw new ArgumentException($"muon: parameter '{name}' has shape [{string.Join(", ", p.shape)}]; Muon takes 2-D matrices only (put it in the AdamW group)");
        _momentum = [.. _params.Select(x => OptimizerState.ZerosLike(x.Param))];
    }

    /// <summary>
    /// Quintic Newton–Schulz orthogonalisation of a 2-D matrix, all in <paramref name="dtype"/> (bf16 for Muon):
    /// transpose if rows &gt; cols so that X·Xᵀ is the small Gram matrix, divide by ‖X‖_F + 1e-7, then
    /// <paramref name="steps"/> × { A = XXᵀ; B = bA + (cA)A; X = aX + BX }, transpose back. The output's singular
    /// values land in a band around 1 (roughly [0.7, 1.2] for non-square inputs), not exactly 1. Returns a tensor of
    /// <paramref name="dtype"/>.
    /// <para>
    /// The scalar multiplies use libtorch's current CPU and CUDA semantics: the coefficient stays at full precision and
    /// only the product is rounded to bf16. PyTorch 1.13 on the CPU first rounded the coefficient itself to bf16
    /// (3.4375, −4.78125, 2.03125), which moves the bf16 output by up to ~0.05; passing those rounded values as
    /// <paramref name="coefficients"/> reproduces that version (see the Muon fixture tests).
    /// </para>
    /// </summary>
    /// <param name="matmul">Computes the three products of each iteration (libtorch's <c>mm</c> when null); the optimizer
    /// passes its <see cref="ExactBf16MatMul"/>, which returns the same bits faster on CPUs without fast bf16 GEMM.</param>
    public static Tensor NewtonSchulz5(Tensor g, int steps = 5, ScalarType dtype = ScalarType.BFloat16, (double A, double B, double C)? coefficients = null,
        ExactBf16MatMul? matmul = null)
    {
        if (g.dim() != 2) throw new ArgumentException($"NewtonSchulz5 needs a 2-D matrix (got shape [{string.Join(", ", g.shape)}])");
        var (a, b, c) = coefficients ?? DefaultNsCoefficients;
        using var scope = NewDisposeScope();
        Tensor Mm(Tensor l, Tensor r) => matmul is null ? l.mm(r) : matmul.MatMul(l, r);
        var x = g.to(dtype);
        bool transposed = g.shape[0] > g.shape[1];
        if (transposed) x = x.t();
        x = x / Scalars.Add(x.norm(), NsEpsilon);
        for (int i = 0; i < steps; i++)
        {
            var gram = Mm(x, x.t());
            // KellerJordan/Muon:muon.py writes `b * A + c * A @ A`, which Python evaluates as (c*A) @ A; same order here.
            var poly = Scalars.Add(Scalars.Mul(gram, b), Mm(Scalars.Mul(gram, c), gram));
            x = Scalars.Add(Scalars.Mul(x, a), Mm(poly, x));
        }
        if (transposed) x = x.t();
        return x.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>√max(1, rows/cols): keeps the update's RMS comparable for tall matrices (e.g. √1.25 for TinyLlama's Wqkv).</summary>
    public static double UpdateScale(long rows, long cols) => Math.Sqrt(Math.Max(1.0, (double)rows / cols));

    /// <summary>
    /// Advances <paramref name="momentum"/> in place with <paramref name="grad"/> and returns the scaled orthogonalised
    /// update O (bf16, shape of the gradient); <paramref name="grad"/> is not modified.
    /// </summary>
    public static Tensor Update(Tensor grad, Tensor momentum, double beta = 0.95, bool nesterov = true, int steps = 5, (double A, double B, double C)? coefficients = null,
        ExactBf16MatMul? matmul = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        momentum.lerp_(grad, 1 - beta);
        var u = nesterov ? grad.lerp(momentum, beta) : momentum;
        var o = NewtonSchulz5(u, steps, ScalarType.BFloat16, coefficients, matmul);
        // The reference multiplies in place on the bf16 result, so the scale is applied in bf16 too.
        o = Scalars.Mul(o, UpdateScale(grad.shape[0], grad.shape[1]));
        return o.MoveToOuterDisposeScope();
    }

    public void Step()
    {
        double lr = LearningRate, wd = Options.WeightDecay;
        using var _ = no_grad();
        for (int i = 0; i < _params.Count; i++)
        {
            using var scope = NewDisposeScope();
            var p = _params[i].Param;
            // RR's Muon (KellerJordan/Muon MuonWithAuxAdam) turns a missing gradient into zeros rather than skipping.
            var g = p.grad ?? zeros_like(p);
            var o = Update(g, _momentum[i], Options.Momentum, Options.Nesterov, Options.NsSteps, Options.Coefficients, _matmul);
            using Scalar decay = 1 - lr * wd, step = -lr; // held across the calls (Model/Scalars.cs)
            p.mul_(decay);
            p.add_(o.reshape(p.shape), alpha: step);
        }
    }

    public void ZeroGrad()
    {
        // As AdamW.ZeroGrad: drop rather than zero.
        foreach (var (_, p) in _params) { p.grad?.Dispose(); p.grad = null; }
    }

    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        for (int i = 0; i < _params.Count; i++) d[$"{_params[i].Name}.momentum_buffer"] = _momentum[i];
        return d;
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, string source = "muon state") =>
        OptimizerState.Load(state, StateDict(), source);

    public void Dispose()
    {
        foreach (var m in _momentum) m.Dispose();
    }
}
