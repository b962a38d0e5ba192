using System.Globalization;
using Recur.Checkpoints;
using Recur.Tests.Support;
using Recur.Training;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Training;

/// <summary>Muon (METHOD §4.4) and AdamW (§4.3) against the PyTorch steps in tests/fixtures/training/{muon,adamw}_step.safetensors.</summary>
public class OptimizerTests
{
    static SafeTensorsFile Open(string name) => SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "training", name + ".safetensors"));

    static double Meta(SafeTensorsFile f, string key) => double.Parse(f.Metadata[key], CultureInfo.InvariantCulture);

    static double MaxDiff(Tensor a, Tensor b) => (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();

    /// <summary>Sets p.grad to exactly <paramref name="g"/>: d/dp Σ p⊙g = g.</summary>
    static void SetGrad(Parameter p, Tensor g)
    {
        p.grad?.zero_();
        (p * g).sum().backward();
    }

    public static TheoryData<string> MuonTags => new() { "a", "b" };

    /// <summary>v rounded to bf16, as PyTorch 1.13's CPU kernels did with a Python scalar multiplying a bf16 tensor.</summary>
    static double RoundToBf16(double v) => tensor((float)v).to(ScalarType.BFloat16).to(ScalarType.Float32).item<float>();

    /// <summary>The fixture's PyTorch (1.13, CPU) rounded the NS5 coefficients to bf16 before multiplying; libtorch 2.10 does not.</summary>
    static (double A, double B, double C) Torch113Coefficients
    {
        get
        {
            var (a, b, c) = Muon.DefaultNsCoefficients;
            return (RoundToBf16(a), RoundToBf16(b), RoundToBf16(c));
        }
    }

    /// <summary>Runs two Muon steps on a fixture parameter; returns the worst differences to the reference (O, m, W).</summary>
    static (double O, double M, double W) RunMuonFixture(string tag, (double A, double B, double C) coefficients)
    {
        using var f = Open("muon_step");
        using var scope = NewDisposeScope();
        var w = new Parameter(f.Read($"{tag}.W0").clone());
        double beta = Meta(f, "momentum");
        using var muon = new Muon([("w", w)], new MuonOptions(Meta(f, "lr"), Meta(f, "weight_decay"), beta, NsCoefficients: coefficients));
        var momentum = muon.StateDict()["w.momentum_buffer"];
        double dO = 0, dM = 0, dW = 0;
        for (int step = 1; step <= 2; step++)
        {
            var g = f.Read($"{tag}.g{step}");
            // The scaled update O from the same momentum, before the optimizer advances it.
            var o = Muon.Update(g, momentum.clone(), beta, coefficients: coefficients);
            Assert.Equal(ScalarType.BFloat16, o.dtype);
            dO = Math.Max(dO, MaxDiff(o, f.Read($"{tag}.O{step}")));
            SetGrad(w, g);
            muon.Step();
            dM = Math.Max(dM, MaxDiff(momentum, f.Read($"{tag}.m{step}")));
            dW = Math.Max(dW, MaxDiff(w, f.Read($"{tag}.W{step}")));
        }
        return (dO, dM, dW);
    }

    [Theory, MemberData(nameof(MuonTags))]
    public void Muon_two_steps_match_reference_with_its_bf16_rounded_coefficients(string tag)
    {
        var (dO, dM, dW) = RunMuonFixture(tag, Torch113Coefficients);
        Assert.True(dO <= 4e-3, $"max |O − O_ref| = {dO}");
        Assert.True(dM <= 1e-7, $"max |m − m_ref| = {dM}");
        Assert.True(dW <= 2e-4, $"max |W − W_ref| = {dW}");
    }

    [Theory, MemberData(nameof(MuonTags))]
    public void Muon_with_exact_coefficients_differs_from_reference_only_by_coefficient_rounding(string tag)
    {
        // Full-precision coefficients (libtorch ≥ 2 on the CPU, and the GPU kernels RR trained with) move O by a few bf16 steps
        // against PyTorch 1.13's CPU rounding; the momentum is unaffected and W2 moves by at most lr × (ΔO1 + ΔO2).
        var (dO, dM, dW) = RunMuonFixture(tag, Muon.DefaultNsCoefficients);
        Assert.True(dO <= 0.06, $"max |O − O_ref| = {dO}");
        Assert.True(dM <= 1e-7, $"max |m − m_ref| = {dM}");
        Assert.True(dW <= 2 * 0.02 * 0.06 + 2e-4, $"max |W − W_ref| = {dW}");
    }

    [Fact]
    public void Newton_schulz_matches_reference_in_bf16_and_fp32()
    {
        using var f = Open("muon_step");
        var x = f.Read("ns5_input");
        var bf16 = Muon.NewtonSchulz5(x, coefficients: Torch113Coefficients);
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Assert.True(MaxDiff(bf16, f.Read("ns5_output")) <= 4e-3, $"bf16 max diff {MaxDiff(bf16, f.Read("ns5_output"))}");
        // In fp32 the coefficient rounding question does not arise.
        var fp32 = Muon.NewtonSchulz5(x, dtype: ScalarType.Float32);
        Assert.True(MaxDiff(fp32, f.Read("ns5_output_fp32")) <= 1e-5, $"fp32 max diff {MaxDiff(fp32, f.Read("ns5_output_fp32"))}");
        var exact = Muon.NewtonSchulz5(x);
        Assert.True(MaxDiff(exact, f.Read("ns5_output_fp32")) <= 0.06, $"bf16 vs fp32 max diff {MaxDiff(exact, f.Read("ns5_output_fp32"))}");
    }

    [Theory]
    [InlineData(40, 24)]
    [InlineData(24, 40)]
    [InlineData(32, 80)]
    public void Newton_schulz_output_has_singular_values_near_one(int rows, int cols)
    {
        // Non-square Gaussian matrices: a square one has singular values near 0 that five steps cannot lift.
        var g = new Generator(7);
        var y = Muon.NewtonSchulz5(randn(rows, cols, generator: g));
        var sv = linalg.svdvals(y.to(ScalarType.Float32));
        double lo = sv.min().item<float>(), hi = sv.max().item<float>();
        Assert.True(lo >= 0.6 && hi <= 1.25, $"singular values in [{lo}, {hi}]");
    }

    [Fact]
    public void Newton_schulz_of_transpose_is_transpose_of_result()
    {
        var g = randn(40, 24, generator: new Generator(3));
        var a = Muon.NewtonSchulz5(g, dtype: ScalarType.Float32);
        var b = Muon.NewtonSchulz5(g.t().contiguous(), dtype: ScalarType.Float32);
        Assert.True(MaxDiff(a, b.t()) <= 1e-5);
    }

    [Theory]
    [InlineData(2560, 2048, 1.25)]
    [InlineData(6144, 2048, 3.0)]
    [InlineData(2048, 5632, 1.0)]
    public void Muon_scales_tall_updates_by_sqrt_of_aspect_ratio(long rows, long cols, double squared)
    {
        Assert.Equal(Math.Sqrt(squared), Muon.UpdateScale(rows, cols), 12);
    }

    [Fact]
    public void Muon_rejects_non_matrix_parameters()
    {
        using var p = new Parameter(ones(8));
        Assert.Throws<ArgumentException>(() => new Muon([("norm.weight", p)]));
    }

    [Fact]
    public void Muon_state_round_trips_and_resumes_identically()
    {
        var gen = new Generator(11);
        var w0 = randn(12, 20, generator: gen);
        var grads = Enumerable.Range(0, 3).Select(_ => randn(12, 20, generator: gen)).ToArray();

        var a = new Parameter(w0.clone());
        using var ma = new Muon([("layer.weight", a)], new MuonOptions(LearningRate: 0.02, WeightDecay: 0.1));
        SetGrad(a, grads[0]); ma.Step();
        var saved = ma.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        Assert.Equal(["layer.weight.momentum_buffer"], saved.Keys);
        var resumeFrom = a.detach().clone();
        SetGrad(a, grads[1]); ma.Step();
        SetGrad(a, grads[2]); ma.Step();

        var b = new Parameter(resumeFrom);
        using var mb = new Muon([("layer.weight", b)], new MuonOptions(LearningRate: 0.02, WeightDecay: 0.1));
        mb.LoadStateDict(saved);
        SetGrad(b, grads[1]); mb.Step();
        SetGrad(b, grads[2]); mb.Step();
        Assert.True(TensorAssert.Same(a.detach(), b.detach()));
    }

    [Fact]
    public void Optimizer_state_survives_the_callers_dispose_scope()
    {
        Muon muon;
        AdamW adam;
        var p = new Parameter(randn(4, 6));
        using (NewDisposeScope())
        {
            muon = new Muon([("w", p)]);
            adam = new AdamW([("w", p)]);
        }
        using (muon) using (adam)
        {
            SetGrad(p, ones(4, 6));
            muon.Step();
            adam.Step();
            Assert.False(muon.StateDict()["w.momentum_buffer"].IsInvalid);
            Assert.Equal(1, adam.StepCount());
            Assert.True(adam.StateDict()["w.exp_avg"].abs().sum().item<float>() > 0);
        }
    }

    [Fact]
    public void Loading_state_with_a_missing_or_misshaped_key_is_a_user_error()
    {
        var p = new Parameter(randn(4, 6));
        using var muon = new Muon([("w", p)]);
        var missing = Assert.Throws<RecurUserException>(() => muon.LoadStateDict(new Dictionary<string, Tensor>(), "ckpt/optimizer.safetensors"));
        Assert.Contains("ckpt/optimizer.safetensors", missing.Message);
        Assert.Contains("w.momentum_buffer", missing.Message);
        var shape = Assert.Throws<RecurUserException>(() => muon.LoadStateDict(new Dictionary<string, Tensor> { ["w.momentum_buffer"] = zeros(6, 4) }));
        Assert.Contains("[6, 4]", shape.Message);
        using var adam = new AdamW([("w", p)]);
        var extra = adam.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        extra["v.exp_avg"] = zeros(2);
        Assert.Contains("v.exp_avg", Assert.Throws<RecurUserException>(() => adam.LoadStateDict(extra)).Message);
    }

    [Fact]
    public void Adamw_two_steps_match_torch_adamw()
    {
        using var f = Open("adamw_step");
        var betas = System.Text.Json.JsonSerializer.Deserialize<double[]>(f.Metadata["betas"])!;
        var options = new AdamWOptions(Meta(f, "lr"), betas[0], betas[1], Meta(f, "eps"), Meta(f, "weight_decay"));
        Assert.Equal(new AdamWOptions() with { LearningRate = options.LearningRate }, options);  // the paper's betas, eps and decay
        var p = new Parameter(f.Read("p0").clone());
        using var adam = new AdamW([("p", p)], options);
        for (int step = 1; step <= 2; step++)
        {
            SetGrad(p, f.Read($"g{step}"));
            adam.Step();
            Assert.True(MaxDiff(p, f.Read($"p{step}")) <= 1e-6, $"step {step}: max diff {MaxDiff(p, f.Read($"p{step}"))}");
        }
        var state = adam.StateDict();
        Assert.True(MaxDiff(state["p.exp_avg"], f.Read("exp_avg_2")) <= 1e-8);
        Assert.True(MaxDiff(state["p.exp_avg_sq"], f.Read("exp_avg_sq_2")) <= 1e-10);
        Assert.Equal(2L, state["p.step"].item<long>());
    }

    [Fact]
    public void Adamw_resumed_from_state_dict_matches_uninterrupted_run()
    {
        using var f = Open("adamw_step");
        var options = new AdamWOptions(LearningRate: 5e-3);
        var p = new Parameter(f.Read("p0").clone());
        using var adam = new AdamW([("p", p)], options);
        SetGrad(p, f.Read("g1")); adam.Step();
        var saved = adam.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

        var q = new Parameter(p.detach().clone());
        using var resumed = new AdamW([("p", q)], options);
        resumed.LoadStateDict(saved);
        Assert.Equal(1, resumed.StepCount());
        SetGrad(p, f.Read("g2")); adam.Step();
        SetGrad(q, f.Read("g2")); resumed.Step();
        Assert.True(TensorAssert.Same(p.detach(), q.detach()));
        Assert.True(MaxDiff(q, f.Read("p2")) <= 1e-6);
    }

    [Fact]
    public void Learning_rate_can_be_scheduled_per_step()
    {
        var p = new Parameter(zeros(3, 3));
        using var adam = new AdamW([("p", p)], new AdamWOptions(LearningRate: 1e-3, WeightDecay: 0));
        adam.LearningRate = 0;
        SetGrad(p, ones(3, 3));
        adam.Step();
        Assert.Equal(0f, p.abs().max().item<float>());
        // Adam's first bias-corrected step has size lr·g/|g| = lr.
        adam.LearningRate = 0.5e-3;
        adam.Step();
        Assert.Equal(-0.5e-3, p.mean().item<float>(), 6);
        Assert.Equal(1e-3, adam.BaseLearningRate);
    }

    [Fact]
    public void Zero_grad_clears_gradients()
    {
        var p = new Parameter(randn(2, 2));
        using var muon = new Muon([("p", p)]);
        SetGrad(p, ones(2, 2));
        muon.ZeroGrad();
        Assert.Null(p.grad); // dropped, as PyTorch's set_to_none
        var q = new Parameter(randn(2, 2));
        using var adam = new AdamW([("q", q)]);
        SetGrad(q, ones(2, 2));
        adam.ZeroGrad();
        Assert.Null(q.grad);
        // The next backward starts from nothing, not from the old gradient.
        (q * 2).sum().backward();
        Assert.Equal(8f, q.grad!.sum().item<float>());
    }

    [Theory]
    [InlineData(-1e-3, 0.9, 0.95, 1e-10)]
    [InlineData(1e-3, 1.0, 0.95, 1e-10)]
    [InlineData(1e-3, 0.9, -0.1, 1e-10)]
    [InlineData(1e-3, 0.9, 0.95, 0)]
    public void Adamw_rejects_bad_hyperparameters(double lr, double b1, double b2, double eps)
    {
        Assert.Throws<RecurUserException>(() => new AdamWOptions(lr, b1, b2, eps).Validate());
    }
}
