// The fast batch-1 decode path, beside the models' reference Forward (STYLE §16).
//
// RecurrentModel.Forward and DecoderModel.Forward are the reference: op by op through libtorch, for any batch,
// mask, dtype and device. Generating one token for one sequence spends most of that time in libtorch's per-op
// dispatch (bench/RESULTS.md), so the generation loop asks this decoder first and falls back to Forward when it
// does not apply (Model/FastDecode.cs lists when it does). The weights by address ("plan") are collected once per
// KV cache, i.e. once per generation, and kept on the cache. tests/Recur.Tests/Model/FastDecodeTests.cs checks
// both models against their Forward.
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

public static class FastDecoder
{
    /// <summary>
    /// Logits [1, 1, V] (fp32) for one new token of one sequence through the fast path, or null when the path does not
    /// apply (then call <see cref="ICausalLM.Forward"/>). <paramref name="model"/> is a <see cref="DecoderModel"/>, a
    /// <see cref="RecurrentModel"/> (at its default T) or a recurrent model seen at a recurrence.
    /// </summary>
    public static Tensor? TryForward(ICausalLM model, Tensor inputIds, Tensor? keyPadding, IKvCache? cache) => model switch
    {
        DecoderModel d => TryDecoder(d, inputIds, keyPadding, cache),
        RecurrentModelAt v => TryRecurrent(v.Model, v.Recurrence, inputIds, keyPadding, cache),
        RecurrentModel r => TryRecurrent(r, Recurrence.Fixed(r.DefaultRecurrences), inputIds, keyPadding, cache),
        _ => null,
    };

    sealed record DecoderWeights(DecoderModel Model, ScalarType DType, DecoderWeights.Matrices Payload)
    {
        public sealed record Matrices(FastDecode.Block[] Blocks, Gemv.Matrix Embedding, Gemv.Matrix Norm, Gemv.Matrix Head);
    }

    sealed record RecurrentWeights(RecurrentModel Model, ScalarType DType, RecurrentWeights.Matrices Payload)
    {
        public sealed record Matrices(FastDecode.Block[] Prelude, FastDecode.Block[] Core, FastDecode.Block[] Coda,
            Gemv.Matrix Embedding, Gemv.Matrix Adapter, Gemv.Matrix Norm, Gemv.Matrix Head);
    }

    static Tensor? TryDecoder(DecoderModel m, Tensor inputIds, Tensor? keyPadding, IKvCache? cache)
    {
        if (!FastDecode.Applies(inputIds, keyPadding, cache, m.ComputeDType, m.Config.BlockType, m.Device) || cache is not KvCache kv) return null;
        if (kv.DecodePlan is not DecoderWeights w || !ReferenceEquals(w.Model, m) || w.DType != m.ComputeDType)
        {
            var tensors = m.model.layers.SelectMany(l => new[]
            {
                l.self_attn.q_proj.weight!, l.self_attn.k_proj.weight!, l.self_attn.v_proj.weight!, l.self_attn.o_proj.weight!,
                l.mlp.gate_proj.weight!, l.mlp.up_proj.weight!, l.mlp.down_proj.weight!, l.input_layernorm!.weight, l.post_attention_layernorm.weight,
            }).Concat([m.model.embed_tokens.weight!, m.model.norm.weight, m.HeadWeight]).ToArray();
            FastDecode.Plan<DecoderWeights.Matrices>? plan = null;
            plan = FastDecode.Reuse(ref plan, tensors, m.ComputeDType, () =>
            {
                var mx = tensors.Select(FastDecode.M).ToArray();
                var blocks = Enumerable.Range(0, m.model.layers.Count).Select(i => mx.AsSpan(9 * i, 9).ToArray())
                    .Select(b => new FastDecode.Block([b[0], b[1], b[2]], b[3], [b[4], b[5]], b[6], b[7], b[8])).ToArray();
                return new DecoderWeights.Matrices(blocks, mx[^3], mx[^2], mx[^1]);
            });
            if (plan is null) return null;
            kv.DecodePlan = w = new DecoderWeights(m, m.ComputeDType, plan.Payload);
        }
        var p = w.Payload;
        var shape = FastDecode.ShapeOf(m.Config, m.RopeFor(m.Device), m.ComputeDType);
        var x = FastDecode.Embed(p.Embedding, inputIds);
        for (int i = 0; i < p.Blocks.Length; i++) FastDecode.Step(x, p.Blocks[i], shape, kv, i);
        return FastDecode.Logits(x, p.Norm, p.Head, shape.Eps, shape.Bf16);
    }

    static Tensor? TryRecurrent(RecurrentModel m, Recurrence recurrence, Tensor inputIds, Tensor? keyPadding, IKvCache? cache)
    {
        var c = m.Config;
        int t = recurrence.Iterations;
        // The fast path knows neither q/k biases nor test-time noise.
        if (cache?.Slots != c.EffectiveDepth(t) || c.QkBias || c.TestTimeNoise != 0
            || !FastDecode.Applies(inputIds, keyPadding, cache, m.ComputeDType, c.BlockType, m.Device) || cache is not KvCache kv) return null;
        if (kv.DecodePlan is not RecurrentWeights w || !ReferenceEquals(w.Model, m) || w.DType != m.ComputeDType)
        {
            var tf = m.transformer;
            var blocks = tf.prelude.Concat(tf.core_block).Concat(tf.coda).ToArray();
            var tensors = blocks.SelectMany(b => new[] { b.attn.Wqkv.weight!, b.attn.proj.weight!, b.mlp.fc.weight!, b.mlp.proj.weight!, b.norm_1.weight, b.norm_2.weight })
                .Concat([tf.wte.weight!, tf.adapter.weight!, tf.ln_f.weight, m.lm_head.weight!]).ToArray();
            FastDecode.Plan<RecurrentWeights.Matrices>? plan = null;
            plan = FastDecode.Reuse(ref plan, tensors, m.ComputeDType, () =>
            {
                var mx = tensors.Select(FastDecode.M).ToArray();
                var all = Enumerable.Range(0, blocks.Length).Select(i => mx.AsSpan(6 * i, 6).ToArray())
                    .Select(b => new FastDecode.Block([b[0]], b[1], [b[2]], b[3], b[4], b[5])).ToArray();
                int pre = c.NLayersInPrelude, rec = c.NLayersInRecurrentBlock;
                return new RecurrentWeights.Matrices(all[..pre], all[pre..(pre + rec)], all[(pre + rec)..], mx[^4], mx[^3], mx[^2], mx[^1]);
            });
            if (plan is null) return null;
            kv.DecodePlan = w = new RecurrentWeights(m, m.ComputeDType, plan.Payload);
        }
        var b = w.Payload;
        var shape = FastDecode.ShapeOf(c.ToBlockConfig(), m.RopeFor(m.Device), m.ComputeDType);
        int h = shape.Hidden, slot = 0;
        var e = FastDecode.Embed(b.Embedding, inputIds, c.InitValues.EmbedScale);
        foreach (var blk in b.Prelude) FastDecode.Step(e, blk, shape, kv, slot++);
        float[] state;
        using (var scope = NewDisposeScope())
        {
            // s_0 drawn as the reference forward draws it (same generator, same shape), so both paths see the same noise.
            var s = m.InitialState(zeros([1, 1, h], m.ComputeDType), recurrence.StateGenerator);
            state = s.to(ScalarType.Float32).reshape(-1).data<float>().ToArray();
        }
        var se = new float[2 * h];
        for (int i = 0; i < t; i++)
        {
            // Adapter on concat[state, e], state first (§2.1); then the core's layers.
            state.CopyTo(se, 0); e.CopyTo(se, h);
            state = FastDecode.Project([b.Adapter], se, h, shape.Bf16);
            foreach (var blk in b.Core) FastDecode.Step(state, blk, shape, kv, slot++);
        }
        foreach (var blk in b.Coda) FastDecode.Step(state, blk, shape, kv, slot++);
        return FastDecode.Logits(state, b.Norm, b.Head, shape.Eps, shape.Bf16);
    }
}
