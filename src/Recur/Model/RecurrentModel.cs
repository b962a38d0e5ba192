// The retrofitted depth-recurrent model (arXiv 2511.07384), written once, top to bottom.
//
// Features (METHOD §2):
//  - prelude P (p blocks) → recurrent block R (r blocks, run T times) → coda C (c blocks);
//  - adapter A = Linear(2h → h, no bias) on concat[state, prelude output], STATE FIRST, at the start of
//    every iteration including the first (§2.1, §2.5);
//  - initial state s_0 ~ TruncNormal(0, σ², cut at ±3σ), σ = init_values.std (no √h factor), drawn anew
//    on every forward call from a seedable generator; σ = 0 gives zeros (§2.5);
//  - embeddings scaled by init_values.embed_scale (1.0 for the retrofitted models: no scaling);
//  - ln_f exactly once, after the coda; the lm_head is always untied (§2.5);
//  - Llama (pre-norm) or OLMo-2 (post-sublayer norm, q/k norm) blocks with fused attn.Wqkv (rows q, k, v)
//    and mlp.fc (rows gate, up) — the Raven/Huginn tensor layout of the released checkpoints (§2.7);
//  - T given as (n iterations without grad, k with grad): truncated backpropagation (§3.2);
//  - a KV cache with one slot per unrolled layer application, p + r·T + c slots (§7.2);
//  - optional activation checkpointing of the grad iterations (IterationCheckpoint.cs).
// This is the reference forward; the fast decode path lives beside it (Engine/FastDecoder.cs), and single-row
// products use the GEMV kernel only when the caller's KV cache asks for it (IKvCache.MatVec).
//
// Field names are the Raven state-dict names (transformer.core_block.3.attn.Wqkv.weight, …).
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recur.Model;

#pragma warning disable IDE1006 // field names are Raven state-dict names

public sealed class RavenAttention : nn.Module
{
    public readonly Linear Wqkv, proj;
    public readonly RMSNorm? q_norm, k_norm; // OLMo-2 blocks only
    /// <summary>Official <c>qk_bias</c> [2, 1, n_heads, head_dim] (rows q, k), added per head before RoPE; null when the config has qk_bias false.</summary>
    public readonly Parameter? qk_bias;
    readonly int _nh, _nkv, _d;

    public RavenAttention(ModelConfig c, bool qkBias = false) : base("RavenAttention")
    {
        _nh = c.NumAttentionHeads; _nkv = c.KvHeads; _d = c.HeadDimension;
        Wqkv = nn.Linear(c.HiddenSize, (_nh + 2 * _nkv) * _d, hasBias: false, device: ParameterPlacement.Device);
        proj = nn.Linear(_nh * _d, c.HiddenSize, hasBias: false, device: ParameterPlacement.Device);
        if (c.BlockType == BlockType.Olmo2)
        {
            q_norm = new RMSNorm(_nh * _d, c.RmsNormEps, castBeforeWeight: false);
            k_norm = new RMSNorm(_nkv * _d, c.RmsNormEps, castBeforeWeight: false);
        }
        if (qkBias) qk_bias = nn.Parameter(zeros(2, 1, _nh, _d));
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionContext ctx, int slot)
    {
        using var scope = NewDisposeScope();
        var qkv = ctx.Linear(x, Wqkv.weight!).split([_nh * _d, _nkv * _d, _nkv * _d], -1);
        if (qk_bias is not null)
        {
            // Official order: q/k norm on the full vectors, then the per-head bias, then RoPE (inside Attention).
            // A bias [heads, d] added after the head view equals its flattened [heads·d] added before it.
            if (q_norm is not null) { qkv[0] = q_norm.call(qkv[0]); qkv[1] = k_norm!.call(qkv[1]); }
            var b = ctx.W(qk_bias).reshape(2, _nh * _d);
            qkv[0] = Scalars.Add(qkv[0], b[0]);
            qkv[1] = Scalars.Add(qkv[1], b[1]);
        }
        var o = Ops.Attention(qkv[0], qkv[1], qkv[2], qk_bias is null ? q_norm : null, qk_bias is null ? k_norm : null, _nh, _nkv, _d, ctx, slot);
        return ctx.Linear(o, proj.weight!).MoveToOuterDisposeScope();
    }
}

public sealed class RavenMlp : nn.Module
{
    public readonly Linear fc, proj;

    public RavenMlp(ModelConfig c) : base("RavenMlp")
    {
        fc = nn.Linear(c.HiddenSize, 2 * c.IntermediateSize, hasBias: false, device: ParameterPlacement.Device);
        proj = nn.Linear(c.IntermediateSize, c.HiddenSize, hasBias: false, device: ParameterPlacement.Device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionContext ctx)
    {
        using var scope = NewDisposeScope();
        return ctx.Linear(Ops.SwiGluFused(ctx.Linear(x, fc.weight!)), proj.weight!).MoveToOuterDisposeScope();
    }
}

/// <summary>One block; norm_1/norm_2 mean input/post-attention norms (Llama) or post-attention/post-MLP norms (OLMo-2).</summary>
public sealed class RavenBlock : nn.Module
{
    public readonly RavenAttention attn;
    public readonly RavenMlp mlp;
    public readonly RMSNorm norm_1, norm_2;
    public readonly RMSNorm? norm_3, norm_4; // Huginn sandwich blocks only
    readonly BlockType _type;

    public RavenBlock(ModelConfig c, bool qkBias = false, bool sandwich = false) : base("RavenBlock")
    {
        _type = sandwich ? BlockType.Sandwich : c.BlockType;
        attn = new RavenAttention(c, qkBias);
        mlp = new RavenMlp(c);
        bool castFirst = _type != BlockType.Olmo2;
        norm_1 = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: castFirst);
        norm_2 = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: castFirst);
        if (sandwich)
        {
            norm_3 = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: true);
            norm_4 = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: true);
        }
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionContext ctx, int slot)
    {
        if (_type != BlockType.Sandwich)
            return Ops.Block(x, _type, h => attn.Forward(h, ctx, slot), h => mlp.Forward(h, ctx), norm_1, norm_2);
        // Huginn's sandwich: x = norm_2(x + attn(norm_1(x))); x = norm_4(x + mlp(norm_3(x))).
        using var scope = NewDisposeScope();
        x = norm_2.call(Scalars.Add(x, attn.Forward(norm_1.call(x), ctx, slot)));
        return norm_4!.call(Scalars.Add(x, mlp.Forward(norm_3!.call(x), ctx))).MoveToOuterDisposeScope();
    }
}

public sealed class RavenBody : nn.Module
{
    public readonly Embedding wte;
    public readonly ModuleList<RavenBlock> prelude;
    public readonly Linear adapter;
    public readonly ModuleList<RavenBlock> core_block;
    public readonly ModuleList<RavenBlock> coda;
    public readonly RMSNorm ln_f;

    public RavenBody(RecurConfig rc) : base("RavenBody")
    {
        var c = rc.ToBlockConfig();
        wte = ParameterPlacement.Embedding(rc.EmbeddingRows, rc.NEmbd);
        bool sandwich = rc.BlockType == BlockType.Sandwich;
        prelude = Blocks(c, rc.NLayersInPrelude, rc.QkBias, sandwich);
        adapter = nn.Linear(2 * rc.NEmbd, rc.NEmbd, hasBias: false, device: ParameterPlacement.Device); // PyTorch's default init, U(±1/√(2h)) (§2.5)
        core_block = Blocks(c, rc.NLayersInRecurrentBlock, rc.QkBias, sandwich);
        coda = Blocks(c, rc.NLayersInCoda, rc.QkBias, sandwich);
        ln_f = new RMSNorm(rc.NEmbd, rc.NormEps, castBeforeWeight: c.BlockType == BlockType.Llama);
        RegisterComponents();
    }

    static ModuleList<RavenBlock> Blocks(ModelConfig c, int n, bool qkBias, bool sandwich)
    {
        var list = new ModuleList<RavenBlock>();
        for (int i = 0; i < n; i++) list.append(new RavenBlock(c, qkBias, sandwich));
        return list;
    }
}

/// <summary>One forward call's shared inputs (rotary tables, mask, cache, weight casts, noise generator); dispose it when the call ends.</summary>
public sealed class ForwardContext(AttentionContext attention, WeightCast weights, Generator? stateGenerator) : IDisposable
{
    public AttentionContext Attention { get; } = attention;
    /// <summary>Generator of this call's s_0 and test-time noise; null: libtorch's default generator.</summary>
    public Generator? StateGenerator { get; } = stateGenerator;
    public void Dispose() => weights.Dispose();
}

/// <summary>A retrofitted recurrent causal LM in the Raven layout.</summary>
public sealed class RecurrentModel : nn.Module, ICausalLM
{
    public readonly RavenBody transformer;
    public readonly Linear lm_head;

    public RecurConfig Config { get; }
    public ScalarType ComputeDType { get; set; } = ScalarType.Float32;
    /// <summary>
    /// T of a forward call that names none (the <see cref="ICausalLM"/> members): the config's mean_recurrence.
    /// Per-call T travels in a <see cref="Recurrence"/> (<see cref="At"/>); the model holds no test-time T of its own.
    /// </summary>
    public int DefaultRecurrences => Config.MeanRecurrence;
    /// <summary>
    /// Activation checkpointing through the recurrence: each grad iteration keeps only its inputs and is recomputed
    /// during backward. Same gradients; activation memory of one iteration instead of k; one extra core forward per
    /// grad iteration. For training 1B-scale models in limited memory.
    /// </summary>
    public bool RecomputeIterations { get; set; }
    /// <summary>Grad iterations that went through activation checkpointing so far (tests check that it engaged).</summary>
    internal long CheckpointedIterations { get; private set; }

    Rope? _rope;
    string? _ropeDevice;

    public RecurrentModel(RecurConfig config) : base("RecurrentModel")
    {
        Config = config;
        transformer = new RavenBody(config);
        lm_head = nn.Linear(config.NEmbd, config.EmbeddingRows, hasBias: false, device: ParameterPlacement.Device);
        RegisterComponents();
    }

    public int CacheSlots => Config.EffectiveDepth(DefaultRecurrences);

    /// <summary>This model seen at <paramref name="recurrence"/>, for code that takes any <see cref="ICausalLM"/>.</summary>
    public RecurrentModelAt At(Recurrence recurrence) => new(this, recurrence);
    public int VocabSize => Config.EmbeddingRows;
    public int MaxPositions => Config.MaxPositionEmbeddings;
    public Device Device => transformer.wte.weight!.device;
    public IReadOnlyList<int> EosTokenIds => Config.EosTokenId ?? [];

    internal Rope RopeFor(Device device)
    {
        if (_rope is null || _ropeDevice != device.ToString())
        {
            var c = Config.ToBlockConfig();
            _rope = _rope?.Table is { } t ? new Rope(t.Cos, t.Sin, c.HeadDimension, c.RopeTheta, device) : new Rope(c, device);
            _ropeDevice = device.ToString();
        }
        return _rope;
    }

    /// <summary>
    /// Uses a checkpoint's rotary table (Huginn's <c>freqs_cis</c>: cos and sin [P, d/2]) instead of computing one
    /// from rope_theta; the q/k rows must be in rotate-half order (<see cref="HuginnLayout"/>).
    /// </summary>
    public void UseRotaryTable(Tensor cos, Tensor sin)
    {
        var c = Config.ToBlockConfig();
        _rope = new Rope(cos, sin, c.HeadDimension, c.RopeTheta, Device);
        _ropeDevice = Device.ToString();
    }

    /// <summary>The checkpoint's rotary table set by <see cref="UseRotaryTable"/>, if any.</summary>
    public (Tensor Cos, Tensor Sin)? RotaryTable => _rope?.Table;

    /// <summary>Inference forward at T = <see cref="DefaultRecurrences"/>, s_0 from libtorch's default generator.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false) =>
        Forward(inputIds, Recurrence.Fixed(DefaultRecurrences), keyPadding: keyPadding, cache: cache, lastOnly: lastOnly);

    /// <summary>Logits after n iterations without grad followed by k with grad (T = n + k); see the <see cref="Recurrence"/> overload.</summary>
    public Tensor Forward(Tensor inputIds, int n, int k, Tensor? s0 = null, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false) =>
        Forward(inputIds, new Recurrence(n, k), s0, keyPadding, cache, lastOnly);

    /// <summary>
    /// Logits [B, S, V] (fp32) at <paramref name="recurrence"/>. <paramref name="s0"/> fixes the initial state
    /// [B, S, h]; otherwise it is drawn from the recurrence's generator.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Recurrence recurrence, Tensor? s0 = null, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false)
    {
        using var scope = NewDisposeScope();
        var h = Hidden(inputIds, recurrence, s0, keyPadding, cache);
        if (lastOnly) h = h.narrow(1, h.shape[1] - 1, 1);
        return Ops.Linear(h, lm_head.weight!, cache?.MatVec == true).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public Tensor Logits(Tensor hidden)
    {
        // A scope holds the product while to() reads it, also for callers that have none (Model/Scalars.cs).
        using var scope = NewDisposeScope();
        return Ops.Linear(hidden, lm_head.weight!).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>fp32 logits of hidden states from a stage-by-stage forward, through the kernel its cache chose (<see cref="IKvCache.MatVec"/>).</summary>
    public Tensor Logits(Tensor hidden, ForwardContext ctx)
    {
        using var scope = NewDisposeScope();
        return Ops.Linear(hidden, lm_head.weight!, ctx.Attention.Cache?.MatVec == true).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public Tensor Hidden(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null) =>
        Hidden(inputIds, Recurrence.Fixed(DefaultRecurrences), keyPadding: keyPadding, cache: cache);

    /// <summary>Hidden states after the coda and ln_f, [B, S, h] in the compute dtype, at <paramref name="recurrence"/>.</summary>
    public Tensor Hidden(Tensor inputIds, Recurrence recurrence, Tensor? s0 = null, Tensor? keyPadding = null, IKvCache? cache = null)
    {
        var (p, r, _) = Config.Shape;
        int n = recurrence.NoGrad, t = recurrence.Iterations;
        if (cache is not null && cache.Slots != Config.EffectiveDepth(t))
            throw new ArgumentException($"KV cache has {cache.Slots} slots but T = {t} needs p + r·T + c = {Config.EffectiveDepth(t)}");
        using var scope = NewDisposeScope();
        using var ctx = Context(inputIds, keyPadding, cache, recurrence.StateGenerator);
        var e = Prelude(inputIds, ctx);
        var state = s0 is null ? InitialState(e, recurrence.StateGenerator) : s0.to(ComputeDType).to(inputIds.device);
        for (int i = 0; i < t; i++)
        {
            // Truncated backprop (§3.2): the first n iterations build no graph, so s_0 and their iterates
            // are constants; e still receives gradient through the adapter in each of the last k.
            using var noGrad = i < n ? no_grad() : null;
            if (i >= n && RecomputeIterations && cache is null && is_grad_enabled() && (state.requires_grad || e.requires_grad))
            {
                state = IterationCheckpoint.Apply(this, state, e, ctx.Attention, ctx, p + i * r);
                CheckpointedIterations++;
            }
            else state = Iterate(state, e, ctx, p + i * r);
            if (i == n - 1) state = state.detach();
        }
        return Coda(state, ctx, p + r * t).MoveToOuterDisposeScope();
    }

    // The three stages of the forward, also used step by step by engines that choose T per token (adaptive exit).
    // Slots: prelude 0 … p−1; iteration i's core layers start at `firstSlot` = p + i·r; the coda starts after the last iteration.

    /// <summary>Positions, mask, rotary tables, the per-call weight casts and the noise generator for a forward over <paramref name="inputIds"/>.</summary>
    public ForwardContext Context(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, Generator? stateGenerator = null)
    {
        long b = inputIds.shape[0], s = inputIds.shape[1];
        var device = inputIds.device;
        var (positions, mask, causal) = Ops.Layout(b, s, cache?.Length ?? 0, keyPadding, device);
        var (cos, sin) = RopeFor(device).Tables(positions, ComputeDType);
        var weights = new WeightCast(ComputeDType);
        return new ForwardContext(new AttentionContext { Cos = cos, Sin = sin, Mask = mask, Causal = causal, Cache = cache, Weights = weights }, weights, stateGenerator);
    }

    /// <summary>e = P(Embed(x)), the prelude output every iteration is injected with.</summary>
    public Tensor Prelude(Tensor inputIds, ForwardContext ctx)
    {
        using var scope = NewDisposeScope();
        var x = transformer.wte.call(inputIds).to(ComputeDType);
        if (Config.InitValues.EmbedScale != 1.0) x = Scalars.Mul(x, Config.InitValues.EmbedScale);
        for (int j = 0; j < Config.NLayersInPrelude; j++) x = transformer.prelude[j].Forward(x, ctx.Attention, j);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>One recurrence: s ← R(A(concat[s, e])), state first (§2.1); the core's layers use slots firstSlot … firstSlot + r − 1.</summary>
    public Tensor Iterate(Tensor state, Tensor e, ForwardContext ctx, int firstSlot)
    {
        if (Config.TestTimeNoise > 0)
        {
            state = TestTimeNoise.Apply(Config, state, (firstSlot - Config.NLayersInPrelude) / Config.NLayersInRecurrentBlock, ctx.StateGenerator);
            // Huginn renormalises the noisy state with the last core block's norm_4 (its _maybe_inject_noise, renorm=True).
            if (Config.BlockType == BlockType.Sandwich) state = transformer.core_block[Config.NLayersInRecurrentBlock - 1].norm_4!.call(state);
        }
        state = ctx.Attention.Linear(cat([state, e], -1), transformer.adapter.weight!);
        for (int j = 0; j < Config.NLayersInRecurrentBlock; j++) state = transformer.core_block[j].Forward(state, ctx.Attention, firstSlot + j);
        return state;
    }

    /// <summary>ln_f(C(s)): the coda from slot <paramref name="firstSlot"/>, then the final norm, once (§2.1).</summary>
    public Tensor Coda(Tensor state, ForwardContext ctx, int firstSlot)
    {
        // Huginn applies ln_f to the last state before the coda as well (its iterate_forward); the retrofitted models do not (§2.1).
        var x = Config.BlockType == BlockType.Sandwich ? transformer.ln_f.call(state) : state;
        for (int j = 0; j < Config.NLayersInCoda; j++) x = transformer.coda[j].Forward(x, ctx.Attention, firstSlot + j);
        return transformer.ln_f.call(x);
    }

    // Φ(−3) and Φ(3): the truncation points of s_0's normal distribution, as CDF values.
    const double CdfMinus3 = 0.0013498980316300946, CdfPlus3 = 0.9986501019683699;

    /// <summary>
    /// s_0 shaped like <paramref name="like"/>, drawn from <paramref name="generator"/> (null: libtorch's default): TruncNormal(0, σ², ±3σ) by inverse-CDF sampling, times
    /// init_values.embed_scale when that is not 1 (official <c>initialize_state</c>; Huginn's √h).
    /// </summary>
    public Tensor InitialState(Tensor like, Generator? generator = null)
    {
        double std = Config.InitValues.Std;
        if (std == 0) return zeros_like(like);
        using var scope = NewDisposeScope();
        var u = Scalars.Add(Scalars.Mul(rand(like.shape, ScalarType.Float64, generator: generator), CdfPlus3 - CdfMinus3), CdfMinus3);
        var z = Scalars.Mul(Scalars.Add(Scalars.Mul(u, 2), -1).erfinv(), Math.Sqrt(2.0));
        var s = Scalars.Mul(Scalars.Clamp(z, -3.0, 3.0), std);
        if (Config.InitValues.EmbedScale != 1.0) s = Scalars.Mul(s, Config.InitValues.EmbedScale);
        return s.to(like.dtype).to(like.device).MoveToOuterDisposeScope();
    }
}
