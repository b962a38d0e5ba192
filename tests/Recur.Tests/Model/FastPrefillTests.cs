using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// The fast path's prefill (Model/FastRows.cs): one sequence's prompt run as rows through each block leaves bit for bit
/// the logits and KV cache that feeding it one token at a time through the fast decoder's step leaves, and agrees with
/// the op-by-op forward it replaces (same s_0).
/// </summary>
public class FastPrefillTests
{
    /// <summary>A tiny random model: a plain decoder, or a (2, 2, 2) recurrent model seen at T = 3 with a seeded s_0 generator.</summary>
    sealed class Subject : IDisposable
    {
        readonly nn.Module _owned;
        readonly Func<Generator, ICausalLM> _view;

        public Subject(string type, string dtype, bool recurrent, long seed = 21)
        {
            var config = type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest;
            if (recurrent)
            {
                using var b = TestModels.Random(config with { NumHiddenLayers = 6 }, seed);
                var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 2, 2, 2), Seed = seed });
                Assert.True(m.Config.InitValues.Std > 0); // s_0 is random: both sides must draw the same states
                if (dtype == "bf16") { m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16; }
                _owned = m;
                _view = g => m.At(Recurrence.Fixed(3, g));
            }
            else
            {
                var m = TestModels.Random(config, seed);
                if (dtype == "bf16") { m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16; }
                _owned = m;
                _view = _ => m;
            }
        }

        public ICausalLM View(Generator g) => _view(g);
        public void Dispose() => _owned.Dispose();
    }

    static long[] Prompt(int n, int vocab) => [.. Enumerable.Range(0, n).Select(i => (long)((i * 37 + 11) % vocab))];

    /// <summary>
    /// The prompt into a fresh cache — as one [1, S] call (<paramref name="asRows"/>) or S one-token calls through the
    /// fast decoder, or op by op through the model's Forward (<paramref name="opPath"/>) — then <paramref name="more"/>
    /// one-token fast steps: the logits after the prompt and after each step, and the cache.
    /// </summary>
    static (List<Tensor> Logits, KvCache Cache) Run(Subject s, long[] prompt, bool asRows, bool opPath = false, int more = 3)
    {
        using var _ = no_grad();
        using var gen = new Generator(11);
        var m = s.View(gen);
        var cache = new KvCache(m.CacheSlots, 4) { MatVec = true }; // small: the cache grows during the prefill
        var outs = new List<Tensor>();
        if (opPath) outs.Add(m.Forward(tensor(prompt, [1, prompt.Length]), null, cache, lastOnly: true));
        else if (asRows) outs.Add(FastDecoder.TryForward(m, tensor(prompt, [1, prompt.Length]), null, cache) ?? throw new Xunit.Sdk.XunitException("the fast prefill did not apply"));
        else
        {
            Tensor? last = null;
            foreach (long id in prompt) last = FastDecoder.TryForward(m, tensor(new[] { id }, [1, 1]), null, cache);
            outs.Add(last ?? throw new Xunit.Sdk.XunitException("the fast step did not apply"));
        }
        for (int i = 0; i < more; i++)
            outs.Add(FastDecoder.TryForward(m, tensor(new[] { (long)((i * 13 + 5) % m.VocabSize) }, [1, 1]), null, cache)
                ?? throw new Xunit.Sdk.XunitException("the fast step did not apply"));
        return (outs, cache);
    }

    public static TheoryData<string, string, bool, int> Cases()
    {
        var data = new TheoryData<string, string, bool, int>();
        foreach (var type in new[] { "llama", "olmo2" })
            foreach (var dtype in new[] { "fp32", "bf16" })
                foreach (var recurrent in new[] { false, true })
                    foreach (int n in new[] { 1, 2, 9, FastRows.Chunk + 6 }) // the last one spans two chunks
                        data.Add(type, dtype, recurrent, n);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void A_prompt_as_rows_leaves_the_logits_and_cache_of_one_token_steps_bit_for_bit(string type, string dtype, bool recurrent, int length)
    {
        using var s = new Subject(type, dtype, recurrent);
        var prompt = Prompt(length, Presets.TinyTest.VocabSize);
        var (rows, rowCache) = Run(s, prompt, asRows: true);
        var (steps, stepCache) = Run(s, prompt, asRows: false);
        using (rowCache)
        using (stepCache)
        {
            for (int i = 0; i < rows.Count; i++)
                Assert.True(TensorAssert.Same(rows[i], steps[i]), $"logits after {(i == 0 ? "the prompt" : $"step {i}")} differ");
            Assert.Equal(stepCache.Slots, rowCache.Slots);
            for (int slot = 0; slot < rowCache.Slots; slot++)
            {
                Assert.Equal(length + 3, rowCache.Filled(slot));
                Assert.Equal(stepCache.Filled(slot), rowCache.Filled(slot));
                var (k1, v1) = rowCache.Entries(slot)!.Value;
                var (k2, v2) = stepCache.Entries(slot)!.Value;
                Assert.True(TensorAssert.Same(k1, k2) && TensorAssert.Same(v1, v2), $"slot {slot} differs");
            }
        }
    }

    [Theory]
    [InlineData("llama", false)]
    [InlineData("llama", true)]
    [InlineData("olmo2", false)]
    [InlineData("olmo2", true)]
    public void The_prefill_agrees_with_the_op_path_it_replaces(string type, bool recurrent)
    {
        // fp32: rounding only, with the same s_0 (the op path draws it as one [1, S, h] tensor, as the prefill does).
        using (var s = new Subject(type, "fp32", recurrent))
        {
            var prompt = Prompt(9, Presets.TinyTest.VocabSize);
            var (fast, c1) = Run(s, prompt, asRows: true);
            var (slow, c2) = Run(s, prompt, asRows: false, opPath: true);
            c1.Dispose(); c2.Dispose();
            float diff = fast.Zip(slow).Max(p => (p.First - p.Second).abs().max().item<float>());
            Assert.True(diff <= 1e-4, $"fp32: max |Δlogit| {diff}");
        }
        // bf16: the op path rounds to bf16 after every op, the fast path keeps fp32 activations: close, not equal.
        using (var s = new Subject(type, "bf16", recurrent))
        {
            var prompt = Prompt(9, Presets.TinyTest.VocabSize);
            var (fast, c1) = Run(s, prompt, asRows: true);
            var (slow, c2) = Run(s, prompt, asRows: false, opPath: true);
            c1.Dispose(); c2.Dispose();
            float scale = slow.Max(t => t.abs().max().item<float>());
            float diff = fast.Zip(slow).Max(p => (p.First - p.Second).abs().max().item<float>());
            Assert.True(diff <= 0.05f * scale, $"bf16: max |Δlogit| {diff} at logit scale {scale}");
        }
    }

    [Fact]
    public void A_prompts_one_initial_state_draw_holds_the_per_token_draws_in_position_order()
    {
        // Why the prefill (one [1, S, h] draw, as the op path) and one-token steps ([1, 1, h] each) see the same s_0.
        using var s = new Subject("llama", "fp32", recurrent: true);
        using var gen1 = new Generator(4);
        using var gen2 = new Generator(4);
        var m = (RecurrentModelAt)s.View(gen1);
        var whole = m.Model.InitialState(zeros(1, 7, 64), gen1);
        var parts = cat(Enumerable.Range(0, 7).Select(_ => m.Model.InitialState(zeros(1, 1, 64), gen2)).ToArray(), 1);
        Assert.True(whole.abs().max().item<float>() > 0);
        Assert.True(TensorAssert.Same(whole, parts));
    }

    [Fact]
    public void Greedy_generation_gives_the_op_paths_tokens()
    {
        foreach (bool recurrent in new[] { false, true })
        {
            using var s = new Subject("llama", "fp32", recurrent);
            using var g1 = new Generator(3);
            using var g2 = new Generator(3);
            int[] prompt = [1, 7, 3, 9, 4, 2, 8];
            var fast = Generation.Generate(s.View(g1), [prompt], new GenerationOptions(12))[0];
            var slow = Generation.Generate(new OpPathOnly(s.View(g2)), [prompt], new GenerationOptions(12))[0];
            Assert.Equal(slow, fast);
        }
    }

    /// <summary>A model seen through a type FastDecoder does not know, so every step goes op by op.</summary>
    sealed class OpPathOnly(ICausalLM inner) : DelegatingModel(inner, ownsInner: false);
}

/// <summary>What keeps a prompt on the op path: a batch, a padding mask, the switches.</summary>
[Collection(ProcessSwitchesCollection.Name)]
public class FastPrefillSwitchTests
{
    [Fact]
    public void Batches_masks_and_the_switches_keep_prompts_on_the_op_path()
    {
        using var m = TestModels.Random(Presets.TinyTest, 22);
        using var _ = no_grad();
        Tensor? Try(Tensor ids, Tensor? mask = null)
        {
            using var cache = new KvCache(m.CacheSlots, 8);
            return FastDecoder.TryForward(m, ids, mask, cache);
        }
        var one = tensor(new long[] { 1, 5, 9 }, [1, 3]);
        Assert.NotNull(Try(one));
        Assert.Null(Try(tensor(new long[] { 1, 5, 9, 2, 6, 7 }, [2, 3])));      // a batch: op path (its steps are fast)
        Assert.Null(Try(one, tensor(new[] { false, true, true }, [1, 3])));    // a padding mask: op path
        bool rows = FastDecode.MultiRowPrefill, enabled = FastDecode.Enabled;
        try
        {
            FastDecode.MultiRowPrefill = false;
            Assert.Null(Try(one));
            Assert.NotNull(Try(tensor(new long[] { 1 }, [1, 1]))); // one token still steps fast
            FastDecode.MultiRowPrefill = true;
            FastDecode.Enabled = false; // RECUR_FAST_DECODE=0
            Assert.Null(Try(one));
        }
        finally
        {
            FastDecode.MultiRowPrefill = rows;
            FastDecode.Enabled = enabled;
        }
    }
}
