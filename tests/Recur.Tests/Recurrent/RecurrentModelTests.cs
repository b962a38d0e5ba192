using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Recurrent;

public class RecurrentModelTests
{
    static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    static ModelConfig Base(string type) => (type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest) with { NumHiddenLayers = 6 };

    static RecurrentModel RetrofitRandom(string type, AdapterInit init = AdapterInit.Default, long seed = 1)
    {
        using var b = TestModels.Random(Base(type), seed);
        var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), AdapterInit = init, Seed = seed });
        return m;
    }

    public static TheoryData<string> Types => new() { "llama", "olmo2" };

    [Theory, MemberData(nameof(Types))]
    public void Forward_matches_reference_logits_at_fixed_s0(string type)
    {
        using var m = RecurrentCheckpoint.Load(Path.Combine(TestModels.FixturesDir, "models", $"recurrent-{type}"), ScalarType.Float32, CPU);
        Assert.Equal(type == "olmo2" ? BlockType.Olmo2 : BlockType.Llama, m.Config.BlockType);
        using var r = SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "parity", $"recurrent-{type}.safetensors"));
        using var _ = no_grad();
        var ids = r.Read("input_ids");
        var s0 = r.Read("s0");
        Assert.True(MaxDiff(m.Forward(ids, 1, 0, s0: s0), r.Read("logits_T1")) <= 1e-4);
        Assert.True(MaxDiff(m.Forward(ids, 3, 0, s0: s0), r.Read("logits_T3")) <= 1e-4);
        Assert.True(MaxDiff(m.Forward(ids, 1, 2, s0: s0), r.Read("logits_T3")) <= 1e-4); // grad iterations compute the same values
    }

    [Theory, MemberData(nameof(Types))]
    public void Identity_adapter_at_T1_with_zero_state_equals_base_without_removed_layers(string type)
    {
        using var b = TestModels.Random(Base(type), 2);
        var map = LayerMap.Default(6, 1, 2, 1);
        Assert.Equal([0], map.Prelude);
        Assert.Equal([3, 4], map.Core);
        Assert.Equal([5], map.Coda);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = map });
        Assert.True(Retrofit.EquivalenceCheck(b, m, map) <= 1e-4);
        // And the check is not vacuous: keeping a removed layer instead changes the logits.
        var wrong = new LayerMap([1], [3, 4], [5]);
        Assert.True(Retrofit.EquivalenceCheck(b, m, wrong) > 1e-3);
    }

    [Fact]
    public void Adapter_puts_state_before_prelude_output()
    {
        using var m = RetrofitRandom("llama", AdapterInit.Identity);
        using var _ = no_grad();
        var ids = randint(0, 128, [1, 5], dtype: ScalarType.Int64);
        // With [0 | I], the state is ignored: any s0 gives the same logits at T = 1.
        var a = m.Forward(ids, 1, 0, s0: zeros(1, 5, 64));
        var b = m.Forward(ids, 1, 0, s0: randn(1, 5, 64));
        Assert.True(MaxDiff(a, b) == 0);
        // Swapping the halves to [I | 0] makes the first iteration see only the state.
        m.transformer.adapter.weight!.copy_(cat([eye(64), zeros(64, 64)], 1));
        var c = m.Forward(ids, 1, 0, s0: zeros(1, 5, 64));
        var d = m.Forward(ids, 1, 0, s0: randn(1, 5, 64));
        Assert.True(MaxDiff(c, d) > 1e-3);
    }

    [Fact]
    public void Initial_state_is_a_truncated_normal_with_the_config_std()
    {
        using var m = RetrofitRandom("llama");
        var s = m.InitialState(zeros(400, 256), new TorchSharp.torch.Generator(5));
        double sigma = InitValues.HuginnStd;
        Assert.True(s.abs().max().item<float>() <= 3 * sigma + 1e-9);
        // A normal truncated at ±3σ has standard deviation 0.98658σ.
        Assert.InRange(s.std().item<float>(), 0.98658 * sigma * 0.99, 0.98658 * sigma * 1.01);
        Assert.InRange(s.mean().item<float>(), -sigma * 0.01, sigma * 0.01);
        Assert.True(MaxDiff(m.InitialState(zeros(400, 256), new TorchSharp.torch.Generator(5)), s) == 0);
    }

    [Fact]
    public void Zero_std_gives_a_zero_initial_state()
    {
        using var b = TestModels.Random(Base("llama"), 3);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), StateStd = 0 });
        Assert.Equal(0f, m.InitialState(ones(2, 3, 64)).abs().max().item<float>());
    }

    [Fact]
    public void Save_and_load_give_identical_logits_at_several_depths()
    {
        using var m = RetrofitRandom("olmo2");
        var dir = Path.Combine(TestModels.TempDir(), "rec");
        RecurrentCheckpoint.Save(m, dir);
        using var loaded = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        using var _ = no_grad();
        var ids = randint(0, 128, [2, 7], dtype: ScalarType.Int64);
        var s0 = randn(2, 7, 64) * 0.1;
        foreach (int t in new[] { 1, 4, 8 })
            Assert.True(MaxDiff(loaded.Forward(ids, t, 0, s0: s0), m.Forward(ids, t, 0, s0: s0)) == 0, $"T = {t}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void Kv_cache_with_one_slot_per_unrolled_layer_equals_the_uncached_forward(int t)
    {
        using var m = RetrofitRandom("llama");
        Assert.Equal(1 + 2 * t + 1, m.At(Recurrence.Fixed(t)).CacheSlots);
        using var _ = no_grad();
        var ids = randint(0, 128, [2, 9], dtype: ScalarType.Int64);
        var s0 = randn(2, 9, 64) * 0.1;
        var full = m.Forward(ids, t, 0, s0: s0);
        using var cache = new KvCache(m.At(Recurrence.Fixed(t)).CacheSlots, capacityHint: 2);
        var parts = new List<Tensor> { m.Forward(ids.narrow(1, 0, 4), t, 0, s0: s0.narrow(1, 0, 4), cache: cache) };
        for (int i = 4; i < 9; i++) parts.Add(m.Forward(ids.narrow(1, i, 1), t, 0, s0: s0.narrow(1, i, 1), cache: cache));
        Assert.True(MaxDiff(cat(parts, 1), full) <= 1e-5);
    }

    [Fact]
    public void A_per_layer_cache_would_be_wrong()
    {
        // Guard against the bug METHOD §7.2 warns about: reusing one slot per core layer across recurrences.
        using var m = RetrofitRandom("llama");
        using var _ = no_grad();
        var ids = randint(0, 128, [1, 6], dtype: ScalarType.Int64);
        var s0 = randn(1, 6, 64) * 0.1;
        var full = m.Forward(ids, 4, 0, s0: s0);
        using var cache = new PerLayerCache(new KvCache(4), m.At(Recurrence.Fixed(4)).CacheSlots);
        var parts = new List<Tensor> { m.Forward(ids.narrow(1, 0, 3), 4, 0, s0: s0.narrow(1, 0, 3), cache: cache) };
        for (int i = 3; i < 6; i++) parts.Add(m.Forward(ids.narrow(1, i, 1), 4, 0, s0: s0.narrow(1, i, 1), cache: cache));
        Assert.True(MaxDiff(cat(parts, 1), full) > 1e-3);
    }

    /// <summary>Maps unrolled slots back onto module indices (prelude 0, core 1–2, coda 3), as a per-layer cache would.</summary>
    sealed class PerLayerCache(KvCache inner, int slots) : IKvCache, IDisposable
    {
        public int Length => inner.Length;
        public int Slots => slots;
        public (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v) =>
            inner.Append(slot == 0 ? 0 : slot == slots - 1 ? 3 : 1 + (slot - 1) % 2, k, v);
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void Generation_at_any_depth_is_deterministic_with_a_seed()
    {
        using var m = RetrofitRandom("llama");
        foreach (int t in new[] { 1, 2, 5 })
        {
            var a = Generation.Generate(m.At(Recurrence.Fixed(t, new TorchSharp.torch.Generator(9))), [[1, 5, 7]], new GenerationOptions(6))[0];
            var b = Generation.Generate(m.At(Recurrence.Fixed(t, new TorchSharp.torch.Generator(9))), [[1, 5, 7]], new GenerationOptions(6))[0];
            Assert.Equal(a, b);
            Assert.Equal(6, a.Count);
        }
    }

    [Fact]
    public void Truncated_backprop_sends_gradient_only_through_the_last_k_iterations()
    {
        using var m = RetrofitRandom("llama");
        var ids = randint(0, 128, [1, 5], dtype: ScalarType.Int64);
        var s0 = (randn(1, 5, 64) * 0.1).requires_grad_(true);
        // n = 2 without grad, k = 1 with grad: s0 is a constant, the adapter and prelude still learn.
        var loss = m.Forward(ids, 2, 1, s0: s0).sum();
        loss.backward();
        Assert.True(s0.grad is null || s0.grad.abs().max().item<float>() == 0);
        Assert.True(m.transformer.adapter.weight!.grad!.abs().max().item<float>() > 0);
        Assert.True(m.transformer.prelude[0].attn.Wqkv.weight!.grad!.abs().max().item<float>() > 0);
        // n = 0: gradient reaches s0.
        m.zero_grad();
        var s1 = (randn(1, 5, 64) * 0.1).requires_grad_(true);
        m.Forward(ids, 0, 3, s0: s1).sum().backward();
        Assert.True(s1.grad!.abs().max().item<float>() > 0);
    }

    [Fact]
    public void Truncated_backprop_gradients_match_a_hand_computation_on_a_linear_recurrence()
    {
        // With every block's output projections zeroed, each (pre-norm, residual) block is the identity, so
        // e = wte[ids] and, per position, the recurrence is linear: s_{i+1} = A1 s_i + A2 e with the adapter
        // A = [A1 | A2] (state first). Hidden = ln_f(s_T), T = n + k. For L = Σ G ⊙ Hidden, let g = ∂L/∂s_T.
        // Iteration i builds a graph only when i ≥ n (s_n is a constant), and backprop gives ∂L/∂s_{i+1} =
        // δ_{i+1} = (A1ᵀ)^(T−1−i) g, so, summed over positions:
        //   ∂L/∂A1 = Σ_{i=n}^{T−1} δ_{i+1} s_iᵀ,   ∂L/∂A2 = Σ_{i=n}^{T−1} δ_{i+1} eᵀ,   ∂L/∂e = Σ_{i=n}^{T−1} A2ᵀ δ_{i+1}.
        // The full gradient is the same with n = 0.
        const int h = 64, n = 3, k = 2, t = n + k;
        using var m = RetrofitRandom("llama");
        using var gen = new TorchSharp.torch.Generator(21);
        using (no_grad())
        {
            foreach (var block in m.transformer.prelude.Concat(m.transformer.core_block).Concat(m.transformer.coda))
            {
                block.attn.proj.weight!.zero_();
                block.mlp.proj.weight!.zero_();
            }
            // ‖A1‖₂ ≈ 2σ√h ≈ 0.7: powers shrink, but not so fast that truncation makes no difference.
            m.transformer.adapter.weight!.copy_(randn(h, 2 * h, generator: gen) * (0.35 / Math.Sqrt(h)));
        }
        var ids = tensor(new long[] { 3, 17, 42, 5, 99, 64 }).reshape(1, 6); // distinct: one wte row per position
        var s0 = randn([1, 6, h], generator: gen);
        var G = randn([1, 6, h], generator: gen);

        // The forward by hand, in double: rows are positions, so s_{i+1} = s_i A1ᵀ + e A2ᵀ.
        var a = m.transformer.adapter.weight!.detach().to(ScalarType.Float64);
        var a1 = a.narrow(1, 0, h);
        var a2 = a.narrow(1, h, h);
        var e = m.transformer.wte.weight!.detach().index_select(0, ids[0]).to(ScalarType.Float64);
        var s = new List<Tensor> { s0[0].to(ScalarType.Float64) };
        for (int i = 0; i < t; i++) s.Add(s[i].matmul(a1.t()) + e.matmul(a2.t()));
        using (no_grad())
            Assert.True(MaxDiff(m.Hidden(ids, new Recurrence(n, k), s0), m.transformer.ln_f.call(s[t].to(ScalarType.Float32)).unsqueeze(0)) <= 1e-5);
        // g = ∂L/∂s_T through ln_f alone (ln_f is not what is tested here).
        var sT = s[t].to(ScalarType.Float32).requires_grad_(true);
        var g = autograd.grad([(G[0] * m.transformer.ln_f.call(sT)).sum()], [sT])[0].to(ScalarType.Float64);

        Tensor Power(Tensor x, int p) => p == 0 ? eye(h, dtype: ScalarType.Float64) : x.matmul(Power(x, p - 1));

        (Tensor dA1, Tensor dA2, Tensor dE) Hand(int first)
        {
            Tensor dA1 = zeros_like(a1), dA2 = zeros_like(a2), dE = zeros_like(e);
            for (int i = first; i < t; i++)
            {
                var delta = g.matmul(Power(a1, t - 1 - i)); // rows δ_{i+1}ᵀ = gᵀ A1^(T−1−i)
                dA1 += delta.t().matmul(s[i]);
                dA2 += delta.t().matmul(e);
                dE += delta.matmul(a2);
            }
            return (dA1, dA2, dE);
        }

        (Tensor dA1, Tensor dA2, Tensor dE) Autograd(int noGrad, int withGrad)
        {
            m.zero_grad();
            (G * m.Hidden(ids, new Recurrence(noGrad, withGrad), s0)).sum().backward();
            var grad = m.transformer.adapter.weight!.grad!.to(ScalarType.Float64);
            var wte = m.transformer.wte.weight!.grad!.index_select(0, ids[0]).to(ScalarType.Float64);
            return (grad.narrow(1, 0, h), grad.narrow(1, h, h), wte);
        }

        // Gradients here are O(10–100) (ln_f divides by a small state rms), so each is compared relative to its hand value.
        static double[] RelDiffs((Tensor dA1, Tensor dA2, Tensor dE) x, (Tensor dA1, Tensor dA2, Tensor dE) y) =>
        [
            (x.dA1 - y.dA1).abs().max().item<double>() / y.dA1.abs().max().item<double>(),
            (x.dA2 - y.dA2).abs().max().item<double>() / y.dA2.abs().max().item<double>(),
            (x.dE - y.dE).abs().max().item<double>() / y.dE.abs().max().item<double>(),
        ];

        var handTruncated = Hand(n);
        var handFull = Hand(0);
        double truncated = RelDiffs(Autograd(n, k), handTruncated).Max();
        double full = RelDiffs(Autograd(0, t), handFull).Max();
        double gap = RelDiffs(handTruncated, handFull).Min(); // every one of the three gradients changes
        Assert.True(truncated <= 1e-5, $"truncated: autograd vs hand, relative {truncated}");
        Assert.True(full <= 1e-5, $"full: autograd vs hand, relative {full}");
        Assert.True(gap > 0.05, $"truncated vs full by hand, relative {gap}: truncation would go unnoticed");
    }

    [Fact]
    public void Bf16_compute_with_fp32_weights_still_trains_the_recurrent_block_after_no_grad_iterations()
    {
        using var m = RetrofitRandom("llama");
        m.ComputeDType = ScalarType.BFloat16;
        var ids = randint(0, 128, [1, 5], dtype: ScalarType.Int64);
        m.Forward(ids, 3, 1).sum().backward(); // the core's weights are first cast inside the no-grad iterations
        Assert.Equal(ScalarType.Float32, m.transformer.core_block[0].mlp.fc.weight!.dtype);
        Assert.True(m.transformer.core_block[0].mlp.fc.weight!.grad!.abs().max().item<float>() > 0);
        Assert.True(m.transformer.adapter.weight!.grad!.abs().max().item<float>() > 0);
        Assert.True(m.transformer.prelude[0].attn.Wqkv.weight!.grad!.abs().max().item<float>() > 0);
    }

    [Fact]
    public void Recurrences_below_one_are_refused()
    {
        using var m = RetrofitRandom("llama");
        Assert.Throws<RecurUserException>(() => Recurrence.Fixed(0));
        Assert.Throws<RecurUserException>(() => m.Forward(ones(1, 2, dtype: ScalarType.Int64), 0, 0));
    }
}
