using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>The batch-1 decode path (FastDecode.cs) against the op-by-op forward it replaces.</summary>
public class FastDecodeTests
{
    /// <summary>Logits of a 5-token prefill then <paramref name="steps"/> single-token steps, one tensor per call.</summary>
    /// <summary>
    /// A prompt through the reference forward, then one token at a time through the fast decoder (<paramref name="fast"/>;
    /// it must apply unless <paramref name="mayFallBack"/>) or the reference forward.
    /// </summary>
    static List<Tensor> Decode(ICausalLM m, bool fast, int steps = 12, int capacityHint = 4, bool mayFallBack = false)
    {
        using var _ = no_grad();
        using var cache = new KvCache(m.CacheSlots, capacityHint); // small: the cache grows during the test
        var outs = new List<Tensor> { m.Forward(tensor(new long[] { 1, 7, 3, 9, 4 }).reshape(1, 5), cache: cache, lastOnly: true) };
        for (int i = 0; i < steps; i++)
            outs.Add(Step(m, tensor(new long[] { (i * 37 + 11) % m.VocabSize }).reshape(1, 1), cache, fast, mayFallBack));
        return outs;
    }

    static Tensor Step(ICausalLM m, Tensor ids, KvCache cache, bool fast, bool mayFallBack = false)
    {
        if (!fast) return m.Forward(ids, cache: cache, lastOnly: true);
        var logits = FastDecoder.TryForward(m, ids, null, cache);
        Assert.True(logits is not null || mayFallBack, "the fast decoder did not apply");
        return logits ?? m.Forward(ids, cache: cache, lastOnly: true);
    }

    static float MaxDiff(List<Tensor> a, List<Tensor> b) => a.Zip(b).Max(p => (p.First - p.Second).abs().max().item<float>());

    public static TheoryData<string> Llamas => new() { "gqa", "tied", "llama3-rope" };

    static ModelConfig Config(string name) => name switch
    {
        "tied" => Presets.TinyTest with { TieWordEmbeddings = true },
        "llama3-rope" => Presets.TinyTest with { RopeScaling = new RopeScaling { RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 16 } },
        _ => Presets.TinyTest,
    };

    [Theory, MemberData(nameof(Llamas))]
    public void Decoder_fp32_matches_the_op_path(string name)
    {
        using var m = TestModels.Random(Config(name), 5);
        float diff = MaxDiff(Decode(m, true), Decode(m, false));
        Assert.True(diff <= 1e-4, $"max |Δlogit| {diff}");
    }

    [Fact]
    public void Decoder_bf16_stays_close_to_the_op_path()
    {
        using var m = TestModels.Random(Presets.TinyTest, 6);
        m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16;
        var fast = Decode(m, true);
        var slow = Decode(m, false);
        // The op path rounds to bf16 after every op, the fast path keeps fp32 activations: close, not equal.
        float scale = slow.Max(t => t.abs().max().item<float>());
        float diff = MaxDiff(fast, slow);
        Assert.True(diff <= 0.05f * scale, $"max |Δlogit| {diff} at logit scale {scale}");
        Assert.True(diff > 0, "the fast path did not run"); // equal bits would mean both calls took the op path
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Recurrent_fp32_matches_the_op_path_with_the_same_initial_states(int t)
    {
        using var b = TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6 }, 7);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), Seed = 7 });
        var fast = Decode(m.At(Recurrence.Fixed(t, new Generator(11))), true);
        var slow = Decode(m.At(Recurrence.Fixed(t, new Generator(11))), false);
        float diff = MaxDiff(fast, slow);
        Assert.True(diff <= 1e-4, $"T = {t}: max |Δlogit| {diff}");
    }

    [Fact]
    public void A_long_cache_splits_attention_over_threads_and_still_matches()
    {
        using var m = TestModels.Random(Presets.TinyTest with { MaxPositionEmbeddings = 2048 }, 10);
        var prompt = arange(0, 1100, dtype: ScalarType.Int64).remainder(120).add(3).reshape(1, 1100); // 1100·4 heads·16 ≥ 2^16
        List<Tensor> Run(bool fast)
        {
            using var _ = no_grad();
            using var cache = new KvCache(m.CacheSlots, 1200);
            m.Forward(prompt, cache: cache, lastOnly: true);
            return [.. Enumerable.Range(0, 3).Select(i => Step(m, tensor(new long[] { 5 + i }).reshape(1, 1), cache, fast))];
        }
        float diff = MaxDiff(Run(true), Run(false));
        Assert.True(diff <= 1e-4, $"max |Δlogit| {diff}");
    }

    /// <summary>The AVX2 kernels (machines without AVX-512) give the same greedy tokens as the AVX-512 ones.</summary>
    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void Generation_without_avx512_matches(string dtype)
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest with { HiddenSize = 128, IntermediateSize = 320 }, 12);
        string[] args = ["generate", "--model", dir, "--prompt-ids", "1 5 9 13", "--max-new-tokens", "12", "--temperature", "0", "--output-ids", "--dtype", dtype];
        // Managed kernels on both sides (the native bf16 kernel rounds x to bf16 and may pick other tokens).
        var wide = CliProcess.RunWith(null, new Dictionary<string, string> { ["RECUR_NATIVE"] = "0" }, args);
        var narrow = CliProcess.RunWith(null, new Dictionary<string, string> { ["DOTNET_EnableAVX512F"] = "0", ["RECUR_NATIVE"] = "0" }, args);
        Assert.True(wide.Code == 0, wide.Stderr);
        Assert.True(narrow.Code == 0, narrow.Stderr);
        Assert.Equal(12, wide.Lines[^1].Split(' ').Length);
        Assert.Equal(wide.Lines[^1], narrow.Lines[^1]);
    }

    [Fact]
    public void In_place_weight_updates_and_dtype_changes_between_generations_are_seen()
    {
        using var m = TestModels.Random(Presets.TinyTest, 13);
        Decode(m, true, 2); // builds and caches the plan
        using (no_grad()) { m.model.layers[1].mlp.down_proj.weight!.mul_(3); m.model.norm.weight.add_(0.5); } // as an optimizer step would
        Assert.True(MaxDiff(Decode(m, true), Decode(m, false)) <= 1e-4);
        m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16; // replaced tensors
        var fast = Decode(m, true);
        var slow = Decode(m, false);
        Assert.True(MaxDiff(fast, slow) <= 0.05f * slow.Max(t => t.abs().max().item<float>()));
    }

    [Fact]
    public void A_cache_of_another_layout_is_refused_not_misread()
    {
        using var cache = new KvCache(1, 4);
        cache.Append(0, zeros(2, 2, 3, 8), zeros(2, 2, 3, 8)); // two rows
        Assert.Throws<InvalidOperationException>(() => cache.AppendOne(0, 2, 8, ScalarType.Float32, CPU));
        using var bf = new KvCache(1, 4);
        bf.Append(0, zeros(1, 2, 3, 8, ScalarType.BFloat16), zeros(1, 2, 3, 8, ScalarType.BFloat16));
        Assert.Throws<InvalidOperationException>(() => bf.AppendOne(0, 2, 8, ScalarType.Float32, CPU));
        var (_, _, cap, pos) = bf.AppendOne(0, 2, 8, ScalarType.BFloat16, CPU);
        Assert.Equal(3, pos);
        Assert.True(cap >= 4);
    }

    [Fact]
    public void A_prompt_after_fast_steps_reads_the_cache_they_wrote()
    {
        using var m = TestModels.Random(Presets.TinyTest, 8);
        using var _ = no_grad();
        var ids = tensor(new long[] { 1, 5, 9, 2, 6, 7, 3 }).reshape(1, 7);
        var full = m.Forward(ids);
        using var cache = new KvCache(m.CacheSlots, 2);
        m.Forward(ids.narrow(1, 0, 2), cache: cache);
        Step(m, ids.narrow(1, 2, 1), cache, fast: true);
        Step(m, ids.narrow(1, 3, 1), cache, fast: true);
        var rest = m.Forward(ids.narrow(1, 4, 3), cache: cache);  // op path, 3 tokens over the fast-written cache
        Assert.True((rest - full.narrow(1, 4, 3)).abs().max().item<float>() <= 1e-4);
    }

    [Fact]
    public void Olmo2_and_fp32_masters_with_bf16_compute_take_the_op_path()
    {
        var cache = new KvCache(2);
        using (no_grad())
        {
            Assert.True(FastDecode.Applies(ones(1, 1, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.False(FastDecode.Applies(ones(1, 1, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Olmo2, CPU));
            Assert.False(FastDecode.Applies(ones(2, 1, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.False(FastDecode.Applies(ones(1, 2, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.False(FastDecode.Applies(ones(1, 1, dtype: ScalarType.Int64), ones(1, 1), cache, ScalarType.Float32, BlockType.Llama, CPU));
        }
        FastDecode.Plan<int>? plan = null;
        Assert.Null(FastDecode.Reuse(ref plan, [randn(4, 4)], ScalarType.BFloat16, () => 1));   // fp32 tensor, bf16 compute
        Assert.Null(FastDecode.Reuse(ref plan, [randn(4, 4).t()], ScalarType.Float32, () => 1)); // not contiguous
        var w = randn(4, 4);
        var first = FastDecode.Reuse(ref plan, [w], ScalarType.Float32, () => 1);
        Assert.Same(first, FastDecode.Reuse(ref plan, [w], ScalarType.Float32, () => 2));       // same tensors: reused
        Assert.NotSame(first, FastDecode.Reuse(ref plan, [randn(4, 4)], ScalarType.Float32, () => 3)); // replaced: rebuilt
        // An OLMo-2 model and a bf16-compute model with fp32 weights still decode (op path) and agree with themselves.
        using var o = TestModels.Random(Presets.TinyOlmo2Test, 9);
        Assert.True(MaxDiff(Decode(o, true, 3, mayFallBack: true), Decode(o, false, 3)) == 0);
        using (no_grad()) using (var c = new KvCache(o.CacheSlots)) { o.Forward(ones(1, 2, dtype: ScalarType.Int64), cache: c); Assert.Null(FastDecoder.TryForward(o, ones(1, 1, dtype: ScalarType.Int64), null, c)); }
        using var mixed = TestModels.Random(Presets.TinyTest, 9);
        mixed.ComputeDType = ScalarType.BFloat16;
        Assert.True(MaxDiff(Decode(mixed, true, 3, mayFallBack: true), Decode(mixed, false, 3)) == 0);
    }
}
