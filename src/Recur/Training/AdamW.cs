using Recur.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>AdamW hyper-parameters; the defaults are the paper's auxiliary group (METHOD §4.3: eps 1e-10, the Muon library's default).</summary>
public sealed record AdamWOptions(double LearningRate = 5e-5, double Beta1 = 0.9, double Beta2 = 0.95, double Eps = 1e-10, double WeightDecay = 1e-4)
{
    public AdamWOptions Validate()
    {
        if (!(LearningRate >= 0) || double.IsInfinity(LearningRate)) throw new RecurUserException($"adamw: learning rate must be a finite number ≥ 0 (got {LearningRate})");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new RecurUserException($"adamw: beta1 must be in [0, 1) (got {Beta1})");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new RecurUserException($"adamw: beta2 must be in [0, 1) (got {Beta2})");
        if (!(Eps > 0) || double.IsInfinity(Eps)) throw new RecurUserException($"adamw: eps must be a finite number > 0 (got {Eps})");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay)) throw new RecurUserException($"adamw: weight decay must be a finite number ≥ 0 (got {WeightDecay})");
        return this;
    }
}

/// <summary>
/// AdamW with decoupled weight decay and bias correction, written out rather than taken from TorchSharp's
/// <c>optim.AdamW</c>: the trainer needs the moments as named tensors for checkpoints (TorchSharp's optimizer state
/// is keyed by parameter position in its own format), and the same step/state surface as <see cref="Muon"/>.
/// The arithmetic follows torch.optim.AdamW's single-tensor path op for op, so it matches PyTorch to fp32 rounding:
/// <code>
/// p ← p·(1 − lr·wd);  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
/// p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + eps)
/// </code>
/// State per parameter: <c>exp_avg</c>, <c>exp_avg_sq</c> (fp32, like the parameter) and <c>step</c> (int64 scalar).
/// </summary>
public sealed class AdamW : IOptimizer
{
    readonly IReadOnlyList<(string Name, Parameter Param)> _params;
    readonly Tensor[] _expAvg, _expAvgSq, _step;

    public AdamWOptions Options { get; }
    public string Name => "adamw";
    public double BaseLearningRate => Options.LearningRate;
    public double LearningRate { get; set; }
    public IReadOnlyList<(string Name, Parameter Param)> Parameters => _params;

    public AdamW(IEnumerable<(string Name, Parameter Param)> parameters, AdamWOptions? options = null)
    {
        Options = (options ?? new AdamWOptions()).Validate();
        LearningRate = Options.LearningRate;
        _params = OptimizerState.Check(parameters, Name);
        _expAvg = [.. _params.Select(x => OptimizerState.ZerosLike(x.Param))];
        _expAvgSq = [.. _params.Select(x => OptimizerState.ZerosLike(x.Param))];
        _step = [.. _params.Select(_ => zeros(Array.Empty<long>(), ScalarType.Int64).DetachFromDisposeScope())];
    }

    /// <summary>Steps taken by parameter <paramref name="index"/> (all parameters step together).</summary>
    public long StepCount(int index = 0) => _step[index].item<long>();

    public void Step()
    {
        double lr = LearningRate, wd = Options.WeightDecay, b1 = Options.Beta1, b2 = Options.Beta2;
        using var _ = no_grad();
        for (int i = 0; i < _params.Count; i++)
        {
            using var scope = NewDisposeScope();
            var p = _params[i].Param;
            // As in RR's auxiliary Adam (KellerJordan/Muon MuonWithAuxAdam), a missing gradient counts as zeros.
            var g = p.grad ?? zeros_like(p);
            _step[i].add_(Scalars.One, Scalars.One);
            double t = _step[i].item<long>();
            double bias1 = 1 - Math.Pow(b1, t), bias2 = 1 - Math.Pow(b2, t);
            // Each number held across its native call (Model/Scalars.cs explains why).
            using Scalar decay = 1 - lr * wd, beta2 = b2, oneMinusBeta2 = 1 - b2, rootBias2 = Math.Sqrt(bias2),
                eps = Options.Eps, stepSize = -lr / bias1;
            p.mul_(decay);
            _expAvg[i].lerp_(g, 1 - b1); // = b1·m + (1 − b1)·g in one pass
            _expAvgSq[i].mul_(beta2).addcmul_(g, g, value: oneMinusBeta2);
            var denom = _expAvgSq[i].sqrt().div_(rootBias2).add_(eps, Scalars.One);
            p.addcdiv_(_expAvg[i], denom, value: stepSize);
        }
    }

    public void ZeroGrad()
    {
        // Drop the gradients rather than zeroing them (PyTorch's set_to_none): the next backward allocates fresh ones,
        // which saves a pass over every gradient per step.
        foreach (var (_, p) in _params) { p.grad?.Dispose(); p.grad = null; }
    }

    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        for (int i = 0; i < _params.Count; i++)
        {
            string n = _params[i].Name;
            d[$"{n}.exp_avg"] = _expAvg[i];
            d[$"{n}.exp_avg_sq"] = _expAvgSq[i];
            d[$"{n}.step"] = _step[i];
        }
        return d;
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, string source = "adamw state") =>
        OptimizerState.Load(state, StateDict(), source);

    public void Dispose()
    {
        foreach (var t in _expAvg.Concat(_expAvgSq).Concat(_step)) t.Dispose();
    }
}
