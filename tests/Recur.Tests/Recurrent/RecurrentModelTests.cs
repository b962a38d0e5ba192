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
        m.StateGenerator = new TorchSharp.torch.Generator(5);
        var s = m.InitialState(zeros(400, 256));
        double sigma = InitValues.HuginnStd;
        Assert.True(s.abs().max().item<float>() <= 3 * sigma + 1e-9);
        // A normal truncated at ±3σ has standard deviation 0.98658σ.
        Assert.InRange(s.std().item<float>(), 0.98658 * sigma * 0.99, 0.98658 * sigma * 1.01);
        Assert.InRange(s.mean().item<float>(), -sigma * 0.01, sigma * 0.01);
        m.StateGenerator = new TorchSharp.torch.Generator(5);
        Assert.True(MaxDiff(m.InitialState(zeros(400, 256)), s) == 0);
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
        m.Recurrences = t;
        Assert.Equal(1 + 2 * t + 1, m.CacheSlots);
        using var _ = no_grad();
        var ids = randint(0, 128, [2, 9], dtype: ScalarType.Int64);
        var s0 = randn(2, 9, 64) * 0.1;
        var full = m.Forward(ids, t, 0, s0: s0);
        using var cache = new KvCache(m.CacheSlots, capacityHint: 2);
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
        m.Recurrences = 4;
        using var cache = new PerLayerCache(new KvCache(4), m.CacheSlots);
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
            m.Recurrences = t;
            m.StateGenerator = new TorchSharp.torch.Generator(9);
            var a = Generation.Generate(m, [[1, 5, 7]], new GenerationOptions(6))[0];
            m.StateGenerator = new TorchSharp.torch.Generator(9);
            var b = Generation.Generate(m, [[1, 5, 7]], new GenerationOptions(6))[0];
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
        Assert.Throws<RecurUserException>(() => m.Recurrences = 0);
        Assert.Throws<RecurUserException>(() => m.Forward(ones(1, 2, dtype: ScalarType.Int64), 0, 0));
    }
}
