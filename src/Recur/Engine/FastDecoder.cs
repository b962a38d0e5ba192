// The fast decode path, beside the models' reference Forward (STYLE §16).
//
// RecurrentModel.Forward and DecoderModel.Forward are the reference: op by op through libtorch, for any batch,
// mask, dtype and device. Generating one token per sequence spends much of that time in libtorch's per-op dispatch
// (bench/RESULTS.md), so the generation loop asks this decoder first and falls back to Forward when it does not
// apply (Model/FastDecode.cs lists when it does): one sequence or a left-padded batch, Llama or OLMo-2 blocks; one
// sequence's prompt runs there too, its positions as rows through each block (Model/FastRows.cs). The
// weights by address ("plan") and the activation buffers are made once per KV cache, i.e. once per generation, and
// kept on the cache. tests/Recur.Tests/Model/FastDecodeTests.cs checks both models against their Forward.
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

public static class FastDecoder
{
    /// <summary>
    /// Logits [B, 1, V] (fp32) for one new token per row, or of the last position of one sequence's prompt [1, S] (run as
    /// rows, bit for bit as S one-token calls: Model/FastRows.cs), through the fast path, or null when the path does not apply
    /// (then call <see cref="ICausalLM.Forward"/>). <paramref name="keyPadding"/> is the generation's padding mask
    /// [B, past + 1] or null. <paramref name="model"/> is a <see cref="DecoderModel"/>, a <see cref="RecurrentModel"/>
    /// (at its default T) or a recurrent model seen at a recurrence.
    /// </summary>
    public static Tensor? TryForward(ICausalLM model, Tensor inputIds, Tensor? keyPadding, IKvCache? cache) => model switch
    {
        DecoderModel d => TryDecoder(d, inputIds, keyPadding, cache),
        RecurrentModelAt v => TryRecurrent(v.Model, v.Recurrence, inputIds, keyPadding, cache),
        RecurrentModel r => TryRecurrent(r, Recurrence.Fixed(r.DefaultRecurrences), inputIds, keyPadding, cache),
        _ => null,
    };

    /// <summary>What one generation keeps on its cache: the model's weights by address and the activation buffers.</summary>
    sealed class State<T>(object model, ScalarType dtype, T payload)
    {
        public object Model { get; } = model;
        public ScalarType DType { get; } = dtype;
        public T Payload { get; } = payload;
        FastDecode.Workspace? _work;

        public bool For(object model, ScalarType dtype) => ReferenceEquals(Model, model) && DType == dtype;
        public FastDecode.Workspace Work(int batch, FastDecode.Shape shape) =>
            _work is { } w && w.Batch == batch ? w : _work = new FastDecode.Workspace(batch, shape);
    }

    sealed record DecoderMatrices(FastDecode.Block[] Blocks, Gemv.Matrix Embedding, Gemv.Matrix Norm, Gemv.Matrix Head);

    sealed record RecurrentMatrices(FastDecode.Block[] Prelude, FastDecode.Block[] Core, FastDecode.Block[] Coda,
        Gemv.Matrix Embedding, Gemv.Matrix Adapter, Gemv.Matrix Norm, Gemv.Matrix Head);

    /// <summary>
    /// One block from its tensors in the order q, k, v (or Wqkv), o, gate, up (or fc), down, norm 1, norm 2[, q norm,
    /// k norm]: <paramref name="qkv"/> and <paramref name="gateUp"/> say how many tensors the fused groups take.
    /// </summary>
    static FastDecode.Block BlockOf(BlockType type, Gemv.Matrix[] t, int qkv, int gateUp)
    {
        int at = 0;
        var q = t[at..(at += qkv)];
        var o = t[at++];
        var gu = t[at..(at += gateUp)];
        var down = t[at++];
        var n1 = t[at++];
        var n2 = t[at++];
        return type == BlockType.Olmo2 ? new FastDecode.Block(type, q, o, gu, down, n1, n2, t[at], t[at + 1]) : new FastDecode.Block(type, q, o, gu, down, n1, n2);
    }

    static long[] Tokens(Tensor ids) => ids.to(ScalarType.Int64).contiguous().data<long>().ToArray();

    static Tensor? TryDecoder(DecoderModel m, Tensor inputIds, Tensor? keyPadding, IKvCache? cache)
    {
        var type = m.Config.BlockType;
        if (!FastDecode.Applies(inputIds, keyPadding, cache, m.ComputeDType, type, m.Device) || cache is not KvCache kv) return null;
        if (kv.DecodePlan is not State<DecoderMatrices> w || !w.For(m, m.ComputeDType))
        {
            var perLayer = m.model.layers.Select(l => type == BlockType.Olmo2
                ? new[] { l.self_attn.q_proj.weight!, l.self_attn.k_proj.weight!, l.self_attn.v_proj.weight!, l.self_attn.o_proj.weight!,
                          l.mlp.gate_proj.weight!, l.mlp.up_proj.weight!, l.mlp.down_proj.weight!, l.post_attention_layernorm.weight,
                          l.post_feedforward_layernorm!.weight, l.self_attn.q_norm!.weight, l.self_attn.k_norm!.weight }
                : [l.self_attn.q_proj.weight!, l.self_attn.k_proj.weight!, l.self_attn.v_proj.weight!, l.self_attn.o_proj.weight!,
                   l.mlp.gate_proj.weight!, l.mlp.up_proj.weight!, l.mlp.down_proj.weight!, l.input_layernorm!.weight, l.post_attention_layernorm.weight]).ToArray();
            var tensors = perLayer.SelectMany(t => t).Concat([m.model.embed_tokens.weight!, m.model.norm.weight, m.HeadWeight]).ToArray();
            FastDecode.Plan<DecoderMatrices>? plan = null;
            plan = FastDecode.Reuse(ref plan, tensors, m.ComputeDType, () =>
            {
                var blocks = perLayer.Select(ts => BlockOf(type, ts.Select(FastDecode.M).ToArray(), 3, 2)).ToArray();
                return new DecoderMatrices(blocks, FastDecode.M(tensors[^3]), FastDecode.M(tensors[^2]), FastDecode.M(tensors[^1]));
            });
            if (plan is null) return null;
            kv.DecodePlan = w = new State<DecoderMatrices>(m, m.ComputeDType, plan.Payload);
        }
        var p = w.Payload;
        var shape = FastDecode.ShapeOf(m.Config, m.RopeFor(m.Device), m.ComputeDType);
        int b = (int)inputIds.shape[0];
        var work = w.Work(b, shape);
        if (inputIds.shape[1] > 1) // one sequence's prompt, as rows (FastRows.cs)
            return FastDecode.Logits(FastRows.Decoder(p.Blocks, p.Embedding, shape, kv, Tokens(inputIds), work), p.Norm, p.Head, shape.Eps, work);
        var rows = FastDecode.Rows.Of(b, keyPadding, kv.Length, shape.InvFreq);
        var x = FastDecode.Embed(p.Embedding, inputIds);
        for (int i = 0; i < p.Blocks.Length; i++) FastDecode.Step(x, p.Blocks[i], shape, kv, i, rows, work);
        return FastDecode.Logits(x, p.Norm, p.Head, shape.Eps, work);
    }

    static Tensor? TryRecurrent(RecurrentModel m, Recurrence recurrence, Tensor inputIds, Tensor? keyPadding, IKvCache? cache)
    {
        var c = m.Config;
        int t = recurrence.Iterations;
        // The fast path knows neither q/k biases nor test-time noise (nor Huginn's sandwich blocks: Applies).
        if (cache?.Slots != c.EffectiveDepth(t) || c.QkBias || c.TestTimeNoise != 0
            || !FastDecode.Applies(inputIds, keyPadding, cache, m.ComputeDType, c.BlockType, m.Device) || cache is not KvCache kv) return null;
        if (kv.DecodePlan is not State<RecurrentMatrices> w || !w.For(m, m.ComputeDType))
        {
            var tf = m.transformer;
            var blocks = tf.prelude.Concat(tf.core_block).Concat(tf.coda).ToArray();
            var perBlock = blocks.Select(k =>
            {
                Tensor[] ts = [k.attn.Wqkv.weight!, k.attn.proj.weight!, k.mlp.fc.weight!, k.mlp.proj.weight!, k.norm_1.weight, k.norm_2.weight];
                return c.BlockType == BlockType.Olmo2 ? [.. ts, k.attn.q_norm!.weight, k.attn.k_norm!.weight] : ts;
            }).ToArray();
            var tensors = perBlock.SelectMany(x => x).Concat([tf.wte.weight!, tf.adapter.weight!, tf.ln_f.weight, m.lm_head.weight!]).ToArray();
            FastDecode.Plan<RecurrentMatrices>? plan = null;
            plan = FastDecode.Reuse(ref plan, tensors, m.ComputeDType, () =>
            {
                var all = perBlock.Select(ts => BlockOf(c.BlockType, ts.Select(FastDecode.M).ToArray(), 1, 1)).ToArray();
                int pre = c.NLayersInPrelude, rec = c.NLayersInRecurrentBlock;
                return new RecurrentMatrices(all[..pre], all[pre..(pre + rec)], all[(pre + rec)..],
                    FastDecode.M(tensors[^4]), FastDecode.M(tensors[^3]), FastDecode.M(tensors[^2]), FastDecode.M(tensors[^1]));
            });
            if (plan is null) return null;
            kv.DecodePlan = w = new State<RecurrentMatrices>(m, m.ComputeDType, plan.Payload);
        }
        var p = w.Payload;
        var shape = FastDecode.ShapeOf(c.ToBlockConfig(), m.RopeFor(m.Device), m.ComputeDType);
        int h = shape.Hidden, slot = 0, b = (int)inputIds.shape[0], n = (int)inputIds.shape[1];
        var work = w.Work(b, shape);
        float[] state;
        using (var scope = NewDisposeScope())
        {
            // s_0 drawn as the reference forward draws it (same generator, same shape [B, S, h]), so both paths see the same
            // noise. libtorch's CPU sampler fills a tensor element by element from the generator, so a prompt's one
            // [1, S, h] draw holds the values of S one-token [1, 1, h] draws in position order: the prefill below sees the
            // s_0 of one-token steps too (FastPrefillTests checks both).
            var s = m.InitialState(zeros([b, n, h], m.ComputeDType), recurrence.StateGenerator);
            state = s.to(ScalarType.Float32).reshape(-1).data<float>().ToArray();
        }
        if (n > 1) // one sequence's prompt, as rows (FastRows.cs)
            return FastDecode.Logits(FastRows.Recurrent(p.Prelude, p.Core, p.Coda, p.Embedding, p.Adapter, c.InitValues.EmbedScale, t, shape, kv, Tokens(inputIds), state, work),
                p.Norm, p.Head, shape.Eps, work);
        var rows = FastDecode.Rows.Of(b, keyPadding, kv.Length, shape.InvFreq);
        var e = FastDecode.Embed(p.Embedding, inputIds, c.InitValues.EmbedScale);
        foreach (var blk in p.Prelude) FastDecode.Step(e, blk, shape, kv, slot++, rows, work);
        var joined = work.Joined;
        for (int i = 0; i < t; i++)
        {
            // Adapter on concat[state, e], state first (§2.1), row by row; then the core's layers.
            for (int r = 0; r < b; r++)
            {
                Array.Copy(state, r * h, joined, r * 2 * h, h);
                Array.Copy(e, r * h, joined, r * 2 * h + h, h);
            }
            FastDecode.Project([p.Adapter], joined, state, b);
            foreach (var blk in p.Core) FastDecode.Step(state, blk, shape, kv, slot++, rows, work);
        }
        foreach (var blk in p.Coda) FastDecode.Step(state, blk, shape, kv, slot++, rows, work);
        return FastDecode.Logits(state, p.Norm, p.Head, shape.Eps, work);
    }
}
