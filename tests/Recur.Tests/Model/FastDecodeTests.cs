using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>The fast decode path (FastDecode.cs), one sequence and left-padded batches, against the op-by-op forward it replaces.</summary>
public class FastDecodeTests
{
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
        Assert.Throws<InvalidOperationException>(() => cache.AppendColumn(0, 1, 2, 8, ScalarType.Float32));
        Assert.Equal(3, cache.AppendColumn(0, 2, 2, 8, ScalarType.Float32).Position);
        using var bf = new KvCache(1, 4);
        bf.Append(0, zeros(1, 2, 3, 8, ScalarType.BFloat16), zeros(1, 2, 3, 8, ScalarType.BFloat16));
        Assert.Throws<InvalidOperationException>(() => bf.AppendColumn(0, 1, 2, 8, ScalarType.Float32));
        var (_, _, cap, pos) = bf.AppendColumn(0, 1, 2, 8, ScalarType.BFloat16);
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
    public void Fp32_masters_with_bf16_compute_sandwich_blocks_and_batched_prompts_take_the_op_path()
    {
        var cache = new KvCache(2);
        using (no_grad())
        {
            var one = ones(1, 1, dtype: ScalarType.Int64);
            Assert.True(FastDecode.Applies(one, null, cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.True(FastDecode.Applies(one, null, cache, ScalarType.Float32, BlockType.Olmo2, CPU));
            Assert.True(FastDecode.Applies(ones(2, 1, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.True(FastDecode.Applies(ones(2, 1, dtype: ScalarType.Int64), ones(2, 1, ScalarType.Bool), cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.False(FastDecode.Applies(one, null, cache, ScalarType.Float32, BlockType.Sandwich, CPU));
            Assert.True(FastDecode.Applies(ones(1, 2, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Llama, CPU)); // one prompt: as rows
            Assert.False(FastDecode.Applies(ones(2, 2, dtype: ScalarType.Int64), null, cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.False(FastDecode.Applies(ones(1, 2, dtype: ScalarType.Int64), ones(1, 2, ScalarType.Bool), cache, ScalarType.Float32, BlockType.Llama, CPU));
            Assert.False(FastDecode.Applies(one, ones(1, 2, ScalarType.Bool), cache, ScalarType.Float32, BlockType.Llama, CPU)); // mask not [B, past + 1]
            Assert.False(FastDecode.Applies(ones(2, 1, dtype: ScalarType.Int64), ones(1, 1, ScalarType.Bool), cache, ScalarType.Float32, BlockType.Llama, CPU));
        }
        FastDecode.Plan<int>? plan = null;
        Assert.Null(FastDecode.Reuse(ref plan, [randn(4, 4)], ScalarType.BFloat16, () => 1));   // fp32 tensor, bf16 compute
        Assert.Null(FastDecode.Reuse(ref plan, [randn(4, 4).t()], ScalarType.Float32, () => 1)); // not contiguous
        var w = randn(4, 4);
        var first = FastDecode.Reuse(ref plan, [w], ScalarType.Float32, () => 1);
        Assert.Same(first, FastDecode.Reuse(ref plan, [w], ScalarType.Float32, () => 2));       // same tensors: reused
        Assert.NotSame(first, FastDecode.Reuse(ref plan, [randn(4, 4)], ScalarType.Float32, () => 3)); // replaced: rebuilt
        // A bf16-compute model with fp32 weights still decodes (op path) and agrees with itself.
        using var mixed = TestModels.Random(Presets.TinyTest, 9);
        mixed.ComputeDType = ScalarType.BFloat16;
        Assert.True(MaxDiff(Decode(mixed, true, 3, mayFallBack: true), Decode(mixed, false, 3)) == 0);
        using (no_grad()) using (var c = new KvCache(mixed.CacheSlots)) { mixed.Forward(ones(1, 2, dtype: ScalarType.Int64), cache: c); Assert.Null(FastDecoder.TryForward(mixed, ones(1, 1, dtype: ScalarType.Int64), null, c)); }
    }

    [Fact]
    public void Olmo2_decoder_fp32_matches_the_op_path()
    {
        using var m = TestModels.Random(Presets.TinyOlmo2Test, 9);
        float diff = MaxDiff(Decode(m, true), Decode(m, false));
        Assert.True(diff <= 1e-4, $"max |Δlogit| {diff}");
    }

    // Left-padded batches: rows of 7, 3, 5, 1, 6 tokens (pads before the shorter ones), as eval and serve batch them.
    static readonly int[][] Ragged = [[1, 7, 3, 9, 4, 2, 8], [5, 6, 11], [12, 3, 3, 7, 1], [9], [4, 4, 8, 2, 10, 6]];

    /// <summary>
    /// <paramref name="prompts"/> left-padded through the reference forward with their padding mask, then
    /// <paramref name="steps"/> one-token columns (the mask grown by a real column each step, as Generation does)
    /// through the fast decoder (which must apply) or the reference forward.
    /// </summary>
    static List<Tensor> DecodeBatch(ICausalLM m, bool fast, int[][] prompts, int steps = 9, bool padded = true)
    {
        using var _ = no_grad();
        int b = prompts.Length, len = prompts.Max(p => p.Length);
        var ids = new long[b * len];
        var real = new bool[b * len];
        for (int r = 0; r < b; r++)
            for (int j = 0; j < prompts[r].Length; j++) { ids[r * len + len - prompts[r].Length + j] = prompts[r][j]; real[r * len + len - prompts[r].Length + j] = true; }
        using var cache = new KvCache(m.CacheSlots, 4); // small: the cache grows during the test
        var mask = padded ? tensor(real, [b, len]) : null;
        var outs = new List<Tensor> { m.Forward(tensor(ids, [b, len]), mask, cache, lastOnly: true) };
        for (int i = 0; i < steps; i++)
        {
            if (mask is not null) mask = cat([mask, ones([b, 1], ScalarType.Bool)], 1);
            var next = tensor(Enumerable.Range(0, b).Select(r => (long)((i * 37 + r * 11 + 5) % m.VocabSize)).ToArray(), [b, 1]);
            var logits = fast ? FastDecoder.TryForward(m, next, mask, cache) : m.Forward(next, mask, cache, lastOnly: true);
            Assert.True(logits is not null, "the fast decoder did not apply");
            Assert.Equal(new long[] { b, 1, m.VocabSize }, logits!.shape);
            outs.Add(logits);
        }
        return outs;
    }

    public static TheoryData<string, int> BatchedDecoders => new()
    {
        { "llama", 5 }, { "llama", 4 }, { "llama", 2 }, { "olmo2", 5 }, { "olmo2", 3 },
    };

    [Theory, MemberData(nameof(BatchedDecoders))]
    public void Left_padded_batch_fp32_matches_the_op_path(string type, int rows)
    {
        using var m = TestModels.Random(type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest, 14);
        var prompts = Ragged[..rows];
        var fast = DecodeBatch(m, true, prompts);
        var slow = DecodeBatch(m, false, prompts);
        float diff = MaxDiff(fast, slow);
        Assert.True(diff <= 1e-4, $"{type}, {rows} rows: max |Δlogit| {diff}");
        // The same greedy token in every row at every step.
        Assert.Equal(slow.Select(t => t.argmax(-1).data<long>().ToArray()).SelectMany(x => x), fast.Select(t => t.argmax(-1).data<long>().ToArray()).SelectMany(x => x));
    }

    [Fact]
    public void A_batch_without_padding_matches_the_op_path()
    {
        using var m = TestModels.Random(Presets.TinyTest, 15);
        int[][] prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15], [16, 17, 18]];
        float diff = MaxDiff(DecodeBatch(m, true, prompts, padded: false), DecodeBatch(m, false, prompts, padded: false));
        Assert.True(diff <= 1e-4, $"max |Δlogit| {diff}");
    }

    [Theory]
    [InlineData("llama", 1)]
    [InlineData("llama", 3)]
    [InlineData("olmo2", 1)]
    [InlineData("olmo2", 3)]
    public void Recurrent_left_padded_batch_fp32_matches_the_op_path_with_the_same_initial_states(string type, int t)
    {
        using var b = TestModels.Random((type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest) with { NumHiddenLayers = 6 }, 16);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), Seed = 7 });
        Assert.True(m.Config.InitValues.Std > 0); // s_0 is random: both paths must draw the same states
        var fast = DecodeBatch(m.At(Recurrence.Fixed(t, new Generator(11))), true, Ragged);
        var slow = DecodeBatch(m.At(Recurrence.Fixed(t, new Generator(11))), false, Ragged);
        float diff = MaxDiff(fast, slow);
        Assert.True(diff <= 1e-4, $"{type}, T = {t}: max |Δlogit| {diff}");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("olmo2")]
    public void Left_padded_batch_bf16_stays_close_to_the_op_path(string type)
    {
        using var m = TestModels.Random(type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest, 17);
        m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16;
        var fast = DecodeBatch(m, true, Ragged);
        var slow = DecodeBatch(m, false, Ragged);
        float scale = slow.Max(x => x.abs().max().item<float>());
        float diff = MaxDiff(fast, slow);
        Assert.True(diff <= 0.05f * scale, $"max |Δlogit| {diff} at logit scale {scale}");
        Assert.True(diff > 0, "the fast path did not run");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("olmo2")]
    public void Batched_generation_gives_the_op_paths_tokens(string type)
    {
        // Through the generation engine (which takes the fast path), against the same generation with the fast path
        // refused by a model wrapper that hides the concrete type from FastDecoder.
        using var m = TestModels.Random(type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest, 18);
        var options = new GenerationOptions(MaxNewTokens: 10);
        var fast = Generation.Generate(m, Ragged, options);
        var slow = Generation.Generate(new OpPathOnly(m), Ragged, options);
        Assert.Equal(slow.Select(r => string.Join(' ', r)), fast.Select(r => string.Join(' ', r)));
    }

    /// <summary>A model seen through a type FastDecoder does not know, so every step goes op by op.</summary>
    sealed class OpPathOnly(ICausalLM inner) : DelegatingModel(inner, ownsInner: false);

    [Fact]
    public void The_per_token_helpers_are_compiled_optimised_from_their_first_call()
    {
        // A short run (a hundred tokens of a small model) would otherwise spend its first tokens in unoptimised tiers that
        // call the vector intrinsics as functions (seen in a profile of `recur generate` on the stories15M shape).
        var flags = System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Instance
            | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.DeclaredOnly;
        var methods = typeof(FastDecode).GetMethods(flags).Concat(typeof(FastDecode).GetNestedTypes(flags).SelectMany(t => t.GetMethods(flags))).ToList();
        foreach (var name in new[] { "Residual", "RmsNorm", "Rotate", "SwiGlu", "DotRow", "AddScaledRow", "Write", "g__Head" })
        {
            var m = Assert.Single(methods, m => m.Name == name || m.Name.Contains(name, StringComparison.Ordinal) && name.StartsWith("g__", StringComparison.Ordinal));
            Assert.True(m.MethodImplementationFlags.HasFlag(System.Reflection.MethodImplAttributes.AggressiveOptimization), $"{m.Name} is tiered");
        }
    }
}
