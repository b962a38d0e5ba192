using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>How the adapter starts: PyTorch's default Linear init (the paper), or [0 | I] so that A(concat[s, e]) = e.</summary>
public enum AdapterInit { Default, Identity }

/// <summary>Which base layers become prelude, recurrent block and coda.</summary>
public sealed record LayerMap(int[] Prelude, int[] Core, int[] Coda)
{
    public (int P, int R, int C) Shape => (Prelude.Length, Core.Length, Coda.Length);

    /// <summary>The paper's rule (METHOD §2.2): first p layers, then the LAST r + c layers; the ones between are removed.</summary>
    public static LayerMap Default(int layers, int p, int r, int c)
    {
        CheckShape(layers, p, r, c);
        return new([.. Enumerable.Range(0, p)], [.. Enumerable.Range(layers - r - c, r)], [.. Enumerable.Range(layers - c, c)]);
    }

    static void CheckShape(int layers, int p, int r, int c)
    {
        if (p < 0 || r < 1 || c < 0) throw RecurUserException.About($"Shape {p},{r},{c}: need p ≥ 0, r ≥ 1, c ≥ 0", "Shape");
        if (p + r + c > layers) throw RecurUserException.About($"Shape {p},{r},{c} needs {p + r + c} layers, but the base model has {layers}", "Shape");
    }

    /// <summary>Parses <c>prelude=0-3,core=10-17,coda=18-21</c> (single indices and comma-free ranges) and checks it.</summary>
    public static LayerMap Parse(string text, int layers, (int P, int R, int C)? shape = null)
    {
        var parts = new Dictionary<string, int[]>();
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = item.Split('=', 2);
            if (kv.Length != 2 || kv[0] is not ("prelude" or "core" or "coda"))
                throw RecurUserException.About($"Layers: '{item}' is not of the form prelude=A-B, core=A-B or coda=A-B", "Layers");
            var range = kv[1].Split('-', 2);
            if (!int.TryParse(range[0], out int a) || !int.TryParse(range.Length > 1 ? range[1] : range[0], out int b))
                throw RecurUserException.About($"Layers: '{item}' has a range that is not A-B with integers", "Layers");
            if (b < a) throw RecurUserException.About($"Layers: '{item}' runs backwards ({a} > {b})", "Layers");
            if (parts.ContainsKey(kv[0])) throw RecurUserException.About($"Layers: '{kv[0]}' is given twice", "Layers");
            parts[kv[0]] = [.. Enumerable.Range(a, b - a + 1)];
        }
        var map = new LayerMap(parts.GetValueOrDefault("prelude", []), parts.GetValueOrDefault("core", []), parts.GetValueOrDefault("coda", []));
        if (map.Core.Length == 0) throw RecurUserException.About("Layers: the core (recurrent block) needs at least one layer", "Layers");
        var all = map.Prelude.Concat(map.Core).Concat(map.Coda).ToList();
        if (all.FirstOrDefault(i => i < 0 || i >= layers, -1) is int bad and >= 0 || all.Any(i => i < 0))
            throw RecurUserException.About($"Layers: layer {all.First(i => i < 0 || i >= layers)} is outside the base model's 0-{layers - 1}", "Layers");
        var dup = all.GroupBy(i => i).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw RecurUserException.About($"Layers: layer {dup.Key} is used twice (sections must not overlap)", "Layers");
        if (shape is { } s && s != map.Shape)
            throw RecurUserException.About($"Layers gives ({map.Shape.P},{map.Shape.R},{map.Shape.C}) layers but Shape says ({s.P},{s.R},{s.C})", "Layers", "Shape");
        return map;
    }
}

public sealed record RetrofitOptions
{
    public required LayerMap Layers { get; init; }
    public AdapterInit AdapterInit { get; init; } = AdapterInit.Default;
    public long Seed { get; init; }
    public double StateStd { get; init; } = InitValues.HuginnStd;
    public int MeanRecurrence { get; init; } = 32;
    public int MeanBackpropDepth { get; init; } = 8;
}

/// <summary>Model surgery: a pretrained decoder becomes prelude / recurrent block / coda (METHOD §2.2, §2.8).</summary>
public static class Retrofit
{
    /// <summary>The paper's shapes for the three base models, by layer count and width.</summary>
    public static (int P, int R, int C)? PresetShape(ModelConfig c) => (c.NumHiddenLayers, c.HiddenSize) switch
    {
        (22, 2048) => (4, 8, 4),   // TinyLlama-1.1B
        (16, 2048) => (4, 6, 4),   // Llama-3.2-1B, OLMo-2-1B
        _ => null,
    };

    public static (int P, int R, int C) ParseShape(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 3 || !int.TryParse(parts[0], out int p) || !int.TryParse(parts[1], out int r) || !int.TryParse(parts[2], out int c))
            throw RecurUserException.About($"Shape '{text}' must be three integers p,r,c (e.g. 4,8,4)", "Shape");
        if (p < 0 || r < 1 || c < 0) throw RecurUserException.About($"Shape {text}: need p ≥ 0, r ≥ 1, c ≥ 0", "Shape");
        return (p, r, c);
    }

    public static RecurConfig ConfigFor(ModelConfig b, RetrofitOptions o) => new()
    {
        BlockTypeName = b.BlockType == BlockType.Olmo2 ? "olmo2" : "llama",
        NEmbd = b.HiddenSize, NHeads = b.NumAttentionHeads, NumKeyValueHeads = b.KvHeads, HeadDim = b.HeadDimension,
        IntermediateSize = b.IntermediateSize,
        NLayers = o.Layers.Prelude.Length + o.Layers.Core.Length + o.Layers.Coda.Length,
        NLayersInPrelude = o.Layers.Prelude.Length, NLayersInRecurrentBlock = o.Layers.Core.Length, NLayersInCoda = o.Layers.Coda.Length,
        NormEps = b.RmsNormEps, VocabSize = b.VocabSize, PaddedVocabSize = b.VocabSize,
        RopeTheta = b.RopeTheta, RopeScaling = b.RopeScaling, MaxPositionEmbeddings = b.MaxPositionEmbeddings,
        TieEmbeddings = false, TorchDType = b.TorchDType,
        InitValues = new InitValues { Std = o.StateStd, EmbedScale = 1.0 },
        MeanRecurrence = o.MeanRecurrence, MeanBackpropDepth = o.MeanBackpropDepth,
        BosTokenId = b.BosTokenId, EosTokenId = b.EosTokenId, PadTokenId = b.PadTokenId,
    };

    /// <summary>Builds the recurrent model from <paramref name="b"/>'s weights: copy, fuse, untie, init the adapter (METHOD §2.8).</summary>
    public static RecurrentModel FromDecoder(DecoderModel b, RetrofitOptions o)
    {
        var config = ConfigFor(b.Config, o).Validate("retrofit");
        var m = new RecurrentModel(config);
        var dtype = b.model.embed_tokens.weight!.dtype;
        m.to(dtype);
        using (no_grad())
        using (NewDisposeScope())
        {
            m.transformer.wte.weight!.copy_(b.model.embed_tokens.weight!);
            m.transformer.ln_f.weight.copy_(b.model.norm.weight);
            m.lm_head.weight!.copy_(b.HeadWeight); // untied: an independent copy even when the base ties (§2.5)
            CopyBlocks(b, o.Layers.Prelude, m.transformer.prelude);
            CopyBlocks(b, o.Layers.Core, m.transformer.core_block);
            CopyBlocks(b, o.Layers.Coda, m.transformer.coda);
            SetAdapter(m, o.AdapterInit, o.Seed);
        }
        m.ComputeDType = b.ComputeDType;
        m.eval();
        return m;
    }

    static void CopyBlocks(DecoderModel b, int[] source, TorchSharp.Modules.ModuleList<RavenBlock> target)
    {
        for (int j = 0; j < source.Length; j++)
        {
            var from = b.model.layers[source[j]];
            var to = target[j];
            var a = from.self_attn;
            to.attn.Wqkv.weight!.copy_(cat([a.q_proj.weight!, a.k_proj.weight!, a.v_proj.weight!], 0));
            to.attn.proj.weight!.copy_(a.o_proj.weight!);
            if (a.q_norm is not null) { to.attn.q_norm!.weight.copy_(a.q_norm.weight); to.attn.k_norm!.weight.copy_(a.k_norm!.weight); }
            to.mlp.fc.weight!.copy_(cat([from.mlp.gate_proj.weight!, from.mlp.up_proj.weight!], 0));
            to.mlp.proj.weight!.copy_(from.mlp.down_proj.weight!);
            if (from.input_layernorm is not null)
            {
                to.norm_1.weight.copy_(from.input_layernorm.weight);           // Llama: before attention
                to.norm_2.weight.copy_(from.post_attention_layernorm.weight);  // Llama: before the MLP
            }
            else
            {
                to.norm_1.weight.copy_(from.post_attention_layernorm.weight);      // OLMo-2: on the attention output
                to.norm_2.weight.copy_(from.post_feedforward_layernorm!.weight);   // OLMo-2: on the MLP output
            }
        }
    }

    /// <summary>
    /// Default: U(±1/√(2h)), PyTorch's Linear init, which the paper's conversion leaves in place (§2.5), from a
    /// seeded generator. Identity: [0 | I], so the first iteration sees exactly the prelude output.
    /// </summary>
    public static void SetAdapter(RecurrentModel m, AdapterInit init, long seed)
    {
        var w = m.transformer.adapter.weight!;
        long h = w.shape[0];
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (init == AdapterInit.Identity)
            w.copy_(cat([zeros(h, h), eye(h)], 1));
        else
        {
            using var gen = new Generator((ulong)seed);
            double bound = 1.0 / Math.Sqrt(2 * h);
            w.copy_(Scalars.Add(Scalars.Mul(rand([h, 2 * h], generator: gen), 2 * bound), -bound));
        }
    }

    /// <summary>
    /// METHOD §2.8's equivalence check: with T = 1, s_0 = 0 and the identity adapter, the recurrent model must
    /// reproduce the base model run on the kept layers only. Returns the max |Δlogit| on a few random tokens;
    /// the model's adapter and σ are restored afterwards.
    /// </summary>
    public static double EquivalenceCheck(DecoderModel b, RecurrentModel m, LayerMap layers, int tokens = 8, long seed = 0)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var saved = m.transformer.adapter.weight!.clone();
        try
        {
            SetAdapter(m, AdapterInit.Identity, 0);
            using var gen = new Generator((ulong)seed);
            var ids = randint(0, m.Config.VocabSize, [1, tokens], generator: gen).to(m.Device);
            var kept = layers.Prelude.Concat(layers.Core).Concat(layers.Coda).ToArray();
            var baseLogits = Ops.Linear(b.Hidden(ids, layers: kept), b.HeadWeight).to(ScalarType.Float32);
            var s0 = zeros(1, tokens, m.Config.NEmbd);
            var recLogits = m.Forward(ids, 1, 0, s0: s0);
            return (recLogits - baseLogits).abs().max().item<float>();
        }
        finally { m.transformer.adapter.weight!.copy_(saved); }
    }
}
