// A Llama-family decoder with Hugging Face parameter names, written once, top to bottom.
//
// Features:
//  - Llama blocks (pre-norm) and OLMo-2 blocks (norm on each sub-layer's output, q/k RMSNorm over the
//    full projected q and k before the head reshape and RoPE) — METHOD §2.3;
//  - RMSNorm statistics in fp32, rotate-half RoPE with llama3 frequency scaling — METHOD §2.4;
//  - grouped-query attention through SDPA, causal, or with an explicit mask for left-padded batches;
//  - SwiGLU MLP; tied or untied lm_head; logits returned in fp32;
//  - one compute dtype per model: activations and matmuls run in it, norm statistics and RoPE angles
//    in fp32, weights cast at use when they are stored in another dtype (METHOD §4.2, STYLE §6);
//  - an optional KV cache with one slot per layer (the plain decoder's unrolled depth is its depth).
//
// Field names are the HF state-dict names (model.layers.N.self_attn.q_proj.weight, …), so safetensors
// files load without a rename table.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recur.Model;

#pragma warning disable IDE1006 // field names are HF state-dict names

public sealed class SelfAttention : nn.Module
{
    public readonly Linear q_proj, k_proj, v_proj, o_proj;
    public readonly RMSNorm? q_norm, k_norm; // OLMo-2 only
    readonly int _nh, _nkv, _d;

    public SelfAttention(ModelConfig c) : base("SelfAttention")
    {
        _nh = c.NumAttentionHeads; _nkv = c.KvHeads; _d = c.HeadDimension;
        q_proj = nn.Linear(c.HiddenSize, _nh * _d, hasBias: false, device: ParameterPlacement.Device);
        k_proj = nn.Linear(c.HiddenSize, _nkv * _d, hasBias: false, device: ParameterPlacement.Device);
        v_proj = nn.Linear(c.HiddenSize, _nkv * _d, hasBias: false, device: ParameterPlacement.Device);
        o_proj = nn.Linear(_nh * _d, c.HiddenSize, hasBias: false, device: ParameterPlacement.Device);
        if (c.BlockType == BlockType.Olmo2)
        {
            q_norm = new RMSNorm(_nh * _d, c.RmsNormEps, castBeforeWeight: false);
            k_norm = new RMSNorm(_nkv * _d, c.RmsNormEps, castBeforeWeight: false);
        }
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionContext ctx, int slot)
    {
        using var scope = NewDisposeScope();
        var q = ctx.Linear(x, q_proj.weight!);
        var k = ctx.Linear(x, k_proj.weight!);
        var v = ctx.Linear(x, v_proj.weight!);
        var o = Ops.Attention(q, k, v, q_norm, k_norm, _nh, _nkv, _d, ctx, slot);
        return ctx.Linear(o, o_proj.weight!).MoveToOuterDisposeScope();
    }
}

public sealed class SwiGlu : nn.Module
{
    public readonly Linear gate_proj, up_proj, down_proj;

    public SwiGlu(int hidden, int intermediate) : base("SwiGlu")
    {
        gate_proj = nn.Linear(hidden, intermediate, hasBias: false, device: ParameterPlacement.Device);
        up_proj = nn.Linear(hidden, intermediate, hasBias: false, device: ParameterPlacement.Device);
        down_proj = nn.Linear(intermediate, hidden, hasBias: false, device: ParameterPlacement.Device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionContext ctx)
    {
        using var scope = NewDisposeScope();
        var h = F.silu(ctx.Linear(x, gate_proj.weight!)) * ctx.Linear(x, up_proj.weight!);
        return ctx.Linear(h, down_proj.weight!).MoveToOuterDisposeScope();
    }
}

public sealed class DecoderLayer : nn.Module
{
    public readonly SelfAttention self_attn;
    public readonly SwiGlu mlp;
    public readonly RMSNorm? input_layernorm;            // Llama: before attention
    public readonly RMSNorm post_attention_layernorm;    // Llama: before the MLP; OLMo-2: on the attention output
    public readonly RMSNorm? post_feedforward_layernorm; // OLMo-2: on the MLP output
    readonly BlockType _type;

    public DecoderLayer(ModelConfig c) : base("DecoderLayer")
    {
        _type = c.BlockType;
        self_attn = new SelfAttention(c);
        mlp = new SwiGlu(c.HiddenSize, c.IntermediateSize);
        bool llama = _type == BlockType.Llama;
        if (llama) input_layernorm = new RMSNorm(c.HiddenSize, c.RmsNormEps);
        post_attention_layernorm = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: llama);
        if (!llama) post_feedforward_layernorm = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: false);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, AttentionContext ctx, int slot) =>
        _type == BlockType.Llama
            ? Ops.Block(x, _type, h => self_attn.Forward(h, ctx, slot), h => mlp.Forward(h, ctx), input_layernorm!, post_attention_layernorm)
            : Ops.Block(x, _type, h => self_attn.Forward(h, ctx, slot), h => mlp.Forward(h, ctx), post_attention_layernorm, post_feedforward_layernorm!);
}

public sealed class DecoderBody : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<DecoderLayer> layers;
    public readonly RMSNorm norm;

    public DecoderBody(ModelConfig c) : base("DecoderBody")
    {
        embed_tokens = ParameterPlacement.Embedding(c.VocabSize, c.HiddenSize);
        layers = new ModuleList<DecoderLayer>();
        for (int i = 0; i < c.NumHiddenLayers; i++) layers.append(new DecoderLayer(c));
        norm = new RMSNorm(c.HiddenSize, c.RmsNormEps, castBeforeWeight: c.BlockType == BlockType.Llama);
        RegisterComponents();
    }
}

/// <summary>A Llama or OLMo-2 causal LM with HF parameter names.</summary>
public sealed class DecoderModel : nn.Module, ICausalLM
{
    public readonly DecoderBody model;
    public readonly Linear? lm_head; // null when the embeddings are tied

    public ModelConfig Config { get; }
    /// <summary>Dtype of activations and matmuls; parameters may be stored in another (e.g. fp32 master weights).</summary>
    public ScalarType ComputeDType { get; set; } = ScalarType.Float32;
    Rope? _rope;

    public DecoderModel(ModelConfig config) : base("DecoderModel")
    {
        Config = config;
        model = new DecoderBody(config);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device: ParameterPlacement.Device);
        RegisterComponents();
    }

    /// <summary>The output projection: lm_head, or the input embedding when tied.</summary>
    public Tensor HeadWeight => lm_head?.weight ?? model.embed_tokens.weight!;

    internal Rope RopeFor(Device device)
    {
        // Built lazily so that it lives on the device the parameters were moved to.
        if (_rope is null || _ropeDevice != device.ToString()) { _rope = new Rope(Config, device); _ropeDevice = device.ToString(); }
        return _rope;
    }
    string? _ropeDevice;

    /// <summary>
    /// Logits [B, S, V] in fp32 for token ids [B, S]. With a cache, the ids follow the cached tokens.
    /// <paramref name="keyPadding"/> [B, past + S] marks real tokens of left-padded rows.
    /// <paramref name="lastOnly"/> computes logits for the last position only ([B, 1, V]).
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false)
    {
        using var scope = NewDisposeScope();
        var h = Hidden(inputIds, keyPadding, cache);
        if (lastOnly) h = h.narrow(1, h.shape[1] - 1, 1);
        return Ops.Linear(h, HeadWeight, cache?.MatVec == true).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public Tensor Logits(Tensor hidden)
    {
        // A scope holds the product while to() reads it, also for callers that have none (Model/Scalars.cs).
        using var scope = NewDisposeScope();
        return Ops.Linear(hidden, HeadWeight).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    Tensor ICausalLM.Hidden(Tensor inputIds, Tensor? keyPadding, IKvCache? cache) => Hidden(inputIds, keyPadding, cache);

    /// <summary>
    /// The final-norm hidden states [B, S, h] in the compute dtype. <paramref name="layers"/> runs only the
    /// listed layers, in order (the retrofit equivalence check skips the removed ones, METHOD §2.8).
    /// </summary>
    public Tensor Hidden(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, IReadOnlyList<int>? layers = null)
    {
        using var scope = NewDisposeScope();
        long b = inputIds.shape[0], s = inputIds.shape[1];
        var device = inputIds.device;
        long past = cache?.Length ?? 0;
        var (positions, mask, causal) = Ops.Layout(b, s, past, keyPadding, device);
        var (cos, sin) = RopeFor(device).Tables(positions, ComputeDType);
        using var weights = new WeightCast(ComputeDType);
        var ctx = new AttentionContext { Cos = cos, Sin = sin, Mask = mask, Causal = causal, Cache = cache, Weights = weights };
        var x = model.embed_tokens.call(inputIds).to(ComputeDType);
        var order = layers ?? Enumerable.Range(0, model.layers.Count).ToArray();
        for (int i = 0; i < order.Count; i++) x = model.layers[order[i]].Forward(x, ctx, i);
        return model.norm.call(x).MoveToOuterDisposeScope();
    }

    /// <summary>Number of KV-cache slots a forward call uses: one per layer.</summary>
    public int CacheSlots => Config.NumHiddenLayers;
    public int VocabSize => Config.VocabSize;
    public int MaxPositions => Config.MaxPositionEmbeddings;
    public Device Device => model.embed_tokens.weight!.device;
    public IReadOnlyList<int> EosTokenIds => Config.EosTokenId ?? [];
}
