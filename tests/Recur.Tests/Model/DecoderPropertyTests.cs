using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>Properties of the decoder that hold for any weights.</summary>
public class DecoderPropertyTests
{
    public static TheoryData<string> Configs => new() { "tiny", "tiny-olmo2" };

    [Theory, MemberData(nameof(Configs))]
    public void Cached_step_by_step_decoding_equals_the_full_forward(string preset)
    {
        using var m = TestModels.Random(Presets.Get(preset), seed: 11);
        using var _ = no_grad();
        var ids = randint(0, 128, [2, 9], dtype: ScalarType.Int64);
        var full = m.Forward(ids);
        using var cache = new KvCache(m.CacheSlots, capacityHint: 2); // small hint: exercises buffer growth
        var first = m.Forward(ids.narrow(1, 0, 3), cache: cache);     // a 3-token prefill, then one token at a time
        var steps = new List<Tensor> { first };
        for (int t = 3; t < 9; t++) steps.Add(m.Forward(ids.narrow(1, t, 1), cache: cache));
        var stepped = cat(steps, 1);
        Assert.True(stepped.allclose(full, rtol: 0, atol: 1e-5), $"max diff {(stepped - full).abs().max().item<float>()}");
    }

    [Theory, MemberData(nameof(Configs))]
    public void Left_padded_rows_match_their_unpadded_forward(string preset)
    {
        using var m = TestModels.Random(Presets.Get(preset), seed: 12);
        using var _ = no_grad();
        var longRow = randint(0, 128, [1, 8], dtype: ScalarType.Int64);
        var shortRow = randint(0, 128, [1, 5], dtype: ScalarType.Int64);
        var batch = cat([longRow, cat([zeros(1, 3, dtype: ScalarType.Int64), shortRow], 1)], 0);
        var mask = ones(2, 8, dtype: ScalarType.Bool);
        mask[1, TensorIndex.Slice(0, 3)] = tensor(false);
        var padded = m.Forward(batch, keyPadding: mask);
        var a = m.Forward(longRow);
        var b = m.Forward(shortRow);
        Assert.True(padded[0].allclose(a[0], atol: 1e-5));
        Assert.True(padded[1].narrow(0, 3, 5).allclose(b[0], atol: 1e-5));
    }

    [Fact]
    public void Batched_generation_equals_one_prompt_at_a_time()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 13);
        int[][] prompts = [[1, 5, 9, 22, 7], [1, 40], [1, 3, 3]];
        var opts = new GenerationOptions(MaxNewTokens: 8);
        var batched = Generation.Generate(m, prompts, opts);
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(Generation.Generate(m, [prompts[i]], opts)[0], batched[i]);
    }

    [Fact]
    public void Generation_stops_at_a_stop_token()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 14);
        var free = Generation.Generate(m, [[1, 2, 3]], new GenerationOptions(MaxNewTokens: 6))[0];
        var stopped = Generation.Generate(m, [[1, 2, 3]], new GenerationOptions(MaxNewTokens: 6, StopIds: [free[2]]))[0];
        Assert.Equal(free.Take(free.IndexOf(free[2])), stopped);
    }

    [Fact]
    public void Sampling_with_a_seed_is_reproducible_and_top_k_1_is_greedy()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 15);
        var s = new SamplingOptions(Temperature: 1.0, Seed: 7);
        var a = Generation.Generate(m, [[1]], new GenerationOptions(10, s))[0];
        var b = Generation.Generate(m, [[1]], new GenerationOptions(10, s))[0];
        Assert.Equal(a, b);
        var greedy = Generation.Generate(m, [[1]], new GenerationOptions(10))[0];
        var top1 = Generation.Generate(m, [[1]], new GenerationOptions(10, new SamplingOptions(Temperature: 2.0, TopK: 1, Seed: 3)))[0];
        Assert.Equal(greedy, top1);
        var tinyP = Generation.Generate(m, [[1]], new GenerationOptions(10, new SamplingOptions(Temperature: 1.0, TopP: 1e-6, Seed: 3)))[0];
        Assert.Equal(greedy, tinyP);
    }

    [Fact]
    public void Bf16_compute_stays_close_to_fp32()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 16);
        using var _ = no_grad();
        var ids = randint(0, 128, [1, 12], dtype: ScalarType.Int64);
        var f32 = m.Forward(ids);
        m.ComputeDType = ScalarType.BFloat16;
        var bf = m.Forward(ids);
        Assert.Equal(ScalarType.Float32, bf.dtype);
        Assert.True((bf - f32).abs().max().item<float>() < 0.05, $"max diff {(bf - f32).abs().max().item<float>()}");
    }

    [Fact]
    public void Llama3_rope_scaling_keeps_high_divides_low_and_blends_middle_frequencies()
    {
        var scaling = new RopeScaling { RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 64 };
        var plain = new Rope(16, 10000, null, CPU);
        var scaled = new Rope(16, 10000, scaling, CPU);
        var pos = ones(1, 1, dtype: ScalarType.Int64); // angle = inv_freq at position 1
        var (_, sp) = plain.Tables(pos, ScalarType.Float32);
        var (_, ss) = scaled.Tables(pos, ScalarType.Float32);
        // Every inv_freq is ≤ 1, so asin recovers the angle precisely. The sin table is [−sin, +sin]: read the second half.
        var fp = sp.flatten().narrow(0, 8, 8).asin().data<float>().ToArray();
        var fs = ss.flatten().narrow(0, 8, 8).asin().data<float>().ToArray();
        Assert.Equal(sp.flatten().narrow(0, 8, 8).neg().data<float>().ToArray(), sp.flatten().narrow(0, 0, 8).data<float>().ToArray());
        bool sawKeep = false, sawDivide = false, sawBlend = false;
        for (int i = 0; i < 8; i++)
        {
            double wavelen = 2 * Math.PI / fp[i];
            if (wavelen < 16) { Assert.Equal(fp[i], fs[i], fp[i] * 1e-5); sawKeep = true; }
            else if (wavelen > 64) { Assert.Equal(fp[i] / 8, fs[i], fp[i] * 1e-5); sawDivide = true; }
            else { Assert.InRange(fs[i], fp[i] / 8, fp[i]); sawBlend = true; }
        }
        Assert.True(sawKeep && sawDivide && sawBlend);
    }
}
