using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Adaptive;

public class AdaptiveTests
{
    static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    /// <summary>Tiny retrofitted model, shape (1, 2, 1), h = 64, V = 128.</summary>
    static RecurrentModel Tiny(long seed = 1)
    {
        using var b = TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6 }, seed);
        var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), Seed = seed });
        m.eval();
        return m;
    }

    /// <summary>Logits per step of the fixed-T path (model.Forward with a KvCache), teacher-forced on <paramref name="fed"/>.</summary>
    static List<Tensor> FixedLogits(RecurrentModel rm, int[][] prompts, List<long[]> fed, int t, ulong seed)
    {
        var m = rm.At(Recurrence.Fixed(t, new Generator(seed)));
        int b = prompts.Length, maxLen = prompts.Max(p => p.Length);
        var ids = new long[b * maxLen];
        var real = new bool[b * maxLen];
        for (int r = 0; r < b; r++)
            for (int j = 0; j < prompts[r].Length; j++)
            {
                int col = maxLen - prompts[r].Length + j;
                ids[r * maxLen + col] = prompts[r][j];
                real[r * maxLen + col] = true;
            }
        bool padded = prompts.Any(p => p.Length != maxLen);
        var pad = padded ? tensor(real, [b, maxLen]) : null;
        using var cache = new KvCache(m.CacheSlots, 64);
        var result = new List<Tensor> { m.Forward(tensor(ids, [b, maxLen]), pad, cache, lastOnly: true).squeeze(1) };
        foreach (var f in fed)
        {
            if (pad is not null) pad = cat([pad, ones([b, 1], ScalarType.Bool)], 1);
            result.Add(m.Forward(tensor(f, [b, 1]), pad, cache, lastOnly: true).squeeze(1));
        }
        return result;
    }

    static (List<Tensor> Logits, List<long[]> Fed, List<int>[] Out) RunAdaptive(RecurrentModel m, int[][] prompts, AdaptiveOptions o, int steps, ulong seed,
        AdaptiveStats? stats = null, Func<int, int, int>? depth = null)
    {
        var logits = new List<Tensor>();
        var outs = AdaptiveGeneration.Generate(m.At(Recurrence.Fixed(o.MaxIterations, new Generator(seed))), prompts, new GenerationOptions(steps), o, stats,
            onLogits: (_, l) => logits.Add(l.clone().DetachFromDisposeScope()), depthOverride: depth);
        var fed = new List<long[]>();
        for (int s = 0; s < logits.Count - 1; s++) fed.Add(logits[s].argmax(-1).data<long>().ToArray());
        return (logits, fed, outs);
    }

    public static TheoryData<string> SameDepthSpecs => new()
    {
        "adaptive:max=3",             // no criterion
        "adaptive:kl=0,max=3",        // KL ≥ 0 never goes below 0: probes at every iteration, all run to max
        "adaptive:latent=0,max=3",
        "adaptive:entropy=0,max=3",
    };

    [Theory, MemberData(nameof(SameDepthSpecs))]
    public void Every_token_at_the_same_depth_equals_the_fixed_T_path(string spec)
    {
        using var m = Tiny();
        using var _ = no_grad();
        int[][] prompts = [[1, 5, 7, 9], [2, 3]]; // padded batch
        var (logits, fed, outs) = RunAdaptive(m, prompts, AdaptiveOptions.Parse(spec), 6, 7);
        Assert.Equal(6, logits.Count);
        var fixedLogits = FixedLogits(m, prompts, fed, 3, 7);
        for (int s = 0; s < logits.Count; s++) Assert.True(MaxDiff(logits[s], fixedLogits[s]) <= 1e-5, $"step {s}: {MaxDiff(logits[s], fixedLogits[s])}");
        // And the tokens equal Generation.Generate's at T = 3 with the same s_0 seed.
        var reference = Generation.Generate(m.At(Recurrence.Fixed(3, new Generator(7))), prompts, new GenerationOptions(6));
        Assert.Equal(reference[0], outs[0]);
        Assert.Equal(reference[1], outs[1]);
    }

    [Fact]
    public void A_different_T_is_not_the_same_path()
    {
        // The comparison above can fail: T = 2 logits differ from T = 3.
        using var m = Tiny();
        using var _ = no_grad();
        int[][] prompts = [[1, 5, 7, 9]];
        var (logits, fed, _) = RunAdaptive(m, prompts, AdaptiveOptions.Parse("adaptive:max=3"), 3, 7);
        var other = FixedLogits(m, prompts, fed, 2, 7);
        Assert.True(MaxDiff(logits[1], other[1]) > 1e-3);
    }

    /// <summary>
    /// A deliberately naive cache for the last-available rule: it keeps every (token, slot) K/V and assembles the
    /// keys at query time from each earlier token's depth, independently of AdaptiveKvCache's copy-forward.
    /// </summary>
    sealed class NaiveCache(int p, int r, int max) : IKvCache
    {
        readonly Dictionary<(int Pos, int Slot), (Tensor K, Tensor V)> _kv = new();
        public readonly List<int> Depths = [];
        public int Length => Depths.Count;
        public int Slots => p + r * max + 1;

        public (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v)
        {
            int n = (int)k.shape[2];
            for (int q = 0; q < n; q++) _kv[(Length + q, slot)] = (k.narrow(2, q, 1).clone().DetachFromDisposeScope(), v.narrow(2, q, 1).clone().DetachFromDisposeScope());
            var ks = new List<Tensor>();
            var vs = new List<Tensor>();
            for (int u = 0; u < Length + n; u++)
            {
                int s = slot;
                if (u < Length && slot >= p && slot < p + r * max)
                {
                    int i = (slot - p) / r, j = (slot - p) % r;
                    s = p + Math.Min(i, Depths[u] - 1) * r + j;
                }
                ks.Add(_kv[(u, s)].K);
                vs.Add(_kv[(u, s)].V);
            }
            return (cat(ks, 2), cat(vs, 2));
        }
    }

    [Fact]
    public void Tokens_exiting_at_different_depths_see_earlier_tokens_last_available_iteration()
    {
        using var m = Tiny(3);
        using var _ = no_grad();
        const int max = 4;
        int[] depths = [1, 3, 2, 4, 1, 2]; // per decode step (step 0 is the prompt at max)
        var (logits, fed, _) = RunAdaptive(m, [[1, 5, 7]], new AdaptiveOptions(ExitCriterion.None, MaxIterations: max), depths.Length + 1, 11,
            depth: (step, _) => depths[step - 1]);

        // Reference: the model's stages driven by hand over the naive cache, same s_0 stream.
        var gen = new Generator(11);
        var cache = new NaiveCache(1, 2, max);
        var inputs = new List<long[]> { new long[] { 1, 5, 7 } };
        inputs.AddRange(fed);
        for (int s = 0; s < inputs.Count; s++)
        {
            var ids = tensor(inputs[s], [1, inputs[s].Length]);
            int d = s == 0 ? max : depths[s - 1];
            using var ctx = m.Context(ids, null, cache, gen);
            var e = m.Prelude(ids, ctx);
            var state = m.InitialState(e, gen);
            for (int i = 0; i < d; i++) state = m.Iterate(state, e, ctx, 1 + 2 * i);
            var h = m.Coda(state, ctx, 1 + 2 * max);
            var expected = m.Logits(h.narrow(1, h.shape[1] - 1, 1)).squeeze(1);
            Assert.True(MaxDiff(logits[s], expected) <= 1e-5, $"step {s}: {MaxDiff(logits[s], expected)}");
            for (int q = 0; q < inputs[s].Length; q++) cache.Depths.Add(d);
        }
        // Not vacuous: treating every earlier token as if it had run to max gives different logits.
        var (full, _, _) = RunAdaptive(m, [[1, 5, 7]], new AdaptiveOptions(ExitCriterion.None, MaxIterations: max), depths.Length + 1, 11,
            depth: (step, _) => step == depths.Length ? depths[^1] : max);
        Assert.True(MaxDiff(full[^1], logits[^1]) > 1e-4);
    }

    static float Code(int pos, int iter, int layer) => 100 * pos + 10 * iter + layer;

    static RecurConfig Shape121() => Retrofit.FromDecoder(TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6 }),
        new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1) }).Config;

    [Theory]
    [InlineData(AdaptiveCacheMode.Full)]
    [InlineData(AdaptiveCacheMode.Latest)]
    public void Cache_assembles_keys_from_each_tokens_last_available_iteration_of_the_same_layer(AdaptiveCacheMode mode)
    {
        // Shape (1, 2, 1), max 3; K/V filled with a code naming (position, iteration, layer) so the assembled keys can be read off.
        const int max = 3;
        using var cache = new AdaptiveKvCache(Shape121(), max, batch: 1, capacity: 8, mode);
        int[] depth = [3, 1, 2];
        for (int t = 0; t < depth.Length; t++)
        {
            for (int i = 0; i < depth[t]; i++)
                for (int j = 0; j < 2; j++)
                    cache.Append(1 + 2 * i + j, full([1, 2, 1, 4], Code(t, i, j)), full([1, 2, 1, 4], -Code(t, i, j)));
            cache.Commit(1, [depth[t]]);
        }
        Assert.Equal([3, 1, 2], Enumerable.Range(0, 3).Select(t => cache.Depth(0, t)));
        for (int i = 0; i < max; i++)
            for (int j = 0; j < 2; j++)
            {
                var (k, v) = cache.Append(1 + 2 * i + j, full([1, 2, 1, 4], Code(3, i, j)), full([1, 2, 1, 4], -Code(3, i, j)));
                Assert.Equal([1L, 2, 4, 4], k.shape);
                var expected = new float[4];
                for (int t = 0; t < 3; t++)
                    expected[t] = mode == AdaptiveCacheMode.Full ? Code(t, Math.Min(i, depth[t] - 1), j) : Code(t, depth[t] - 1, j);
                expected[3] = Code(3, i, j);
                Assert.Equal(expected, k[0, 1, TensorIndex.Colon, 2].data<float>().ToArray());
                Assert.Equal(expected.Select(x => -x).ToArray(), v[0, 0, TensorIndex.Colon, 0].data<float>().ToArray());
            }
    }

    [Fact]
    public void Cache_appends_only_the_active_rows()
    {
        using var cache = new AdaptiveKvCache(Shape121(), 2, batch: 3, capacity: 4);
        cache.Append(1, full([3, 1, 1, 2], 1f), full([3, 1, 1, 2], 1f));
        cache.Commit(1, [2, 2, 2]);
        cache.ActiveRows = tensor(new long[] { 2, 0 });
        var (k, _) = cache.Append(1, tensor(new float[] { 7, 7, 5, 5 }, [2, 1, 1, 2]), zeros(2, 1, 1, 2));
        Assert.Equal([2L, 1, 2, 2], k.shape);
        Assert.Equal(new float[] { 1, 7 }, k[0, 0, TensorIndex.Colon, 0].data<float>().ToArray()); // row 2
        Assert.Equal(new float[] { 1, 5 }, k[1, 0, TensorIndex.Colon, 0].data<float>().ToArray()); // row 0
    }

    [Fact]
    public void Latest_cache_stays_the_same_size_whatever_max_and_equals_full_at_T1()
    {
        using var m = Tiny();
        using var _ = no_grad();
        long Bytes(int max, AdaptiveCacheMode mode)
        {
            using var c = new AdaptiveKvCache(m.Config, max, 1, 16, mode);
            for (int s = 0; s < c.Slots; s++) c.Append(s, zeros(1, 2, 1, 16), zeros(1, 2, 1, 16));
            return c.Bytes;
        }
        Assert.Equal(Bytes(2, AdaptiveCacheMode.Latest), Bytes(16, AdaptiveCacheMode.Latest));
        Assert.True(Bytes(16, AdaptiveCacheMode.Full) > 4 * Bytes(16, AdaptiveCacheMode.Latest));

        int[][] prompts = [[1, 5, 7, 9]];
        var (latest, fed, _) = RunAdaptive(m, prompts, AdaptiveOptions.Parse("adaptive:max=1,cache=latest"), 4, 3);
        var fixedLogits = FixedLogits(m, prompts, fed, 1, 3);
        for (int s = 0; s < latest.Count; s++) Assert.True(MaxDiff(latest[s], fixedLogits[s]) <= 1e-5);
        // At T > 1 it is an approximation: earlier tokens are seen at their last iteration only.
        var (latest3, fed3, _) = RunAdaptive(m, prompts, AdaptiveOptions.Parse("adaptive:max=3,cache=latest"), 4, 3);
        var fixed3 = FixedLogits(m, prompts, fed3, 3, 3);
        Assert.True(MaxDiff(latest3[1], fixed3[1]) > 1e-4);
    }

    [Theory]
    [InlineData("adaptive:kl=1e9,max=8", 2.0)]       // a distribution criterion needs two iterations to compare
    [InlineData("adaptive:entropy=1e9,max=8", 2.0)]
    [InlineData("adaptive:latent=1e9,max=8", 1.0)]   // the latent change is compared with s_0 from the first iteration
    [InlineData("adaptive:argmax=2,max=8", 3.0)]     // unchanged for 2 iterations needs at least 3 (exactly 3 when stable)
    [InlineData("adaptive:kl=0,max=5", 5.0)]
    public void Criteria_fire_at_the_expected_iteration_when_trivially_met(string spec, double lowest)
    {
        using var m = Tiny();
        using var _ = no_grad();
        var stats = new AdaptiveStats();
        RunAdaptive(m, [[1, 5, 7], [4, 4]], AdaptiveOptions.Parse(spec), 5, 1, stats);
        Assert.Equal(8, stats.Tokens); // 4 decode steps × 2 rows
        Assert.True(stats.MeanIterations >= lowest);
        if (!spec.StartsWith("adaptive:argmax", StringComparison.Ordinal)) Assert.Equal(lowest, stats.MeanIterations);
        Assert.Equal(AdaptiveOptions.Parse(spec).NeedsDistribution, stats.Probes > 0);
    }

    [Fact]
    public void Warm_start_feeds_the_previous_final_state()
    {
        using var m = Tiny();
        using var _ = no_grad();
        int[][] prompts = [[1, 5, 7]];
        var (cold, _, _) = RunAdaptive(m, prompts, AdaptiveOptions.Parse("adaptive:max=2"), 3, 5);
        var (warm, _, _) = RunAdaptive(m, prompts, AdaptiveOptions.Parse("adaptive:max=2,warm=1"), 3, 5);
        Assert.True(MaxDiff(cold[0], warm[0]) == 0); // the prompt never warm-starts
        Assert.True(MaxDiff(cold[1], warm[1]) > 1e-4);
    }
}
