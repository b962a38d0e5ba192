using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>
/// Imports karpathy/llama2.c checkpoints in the legacy (version 0) format: a header of seven int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len) followed by fp32 weights,
/// grouped by kind across layers. A positive vocab_size means the classifier shares the embedding.
/// </summary>
public static class Llama2c
{
    public static bool LooksLike(string path) =>
        File.Exists(path) && (path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".llama2c", StringComparison.OrdinalIgnoreCase));

    public static DecoderModel Load(string path, ScalarType paramDType, Device device)
    {
        if (!File.Exists(path)) throw new RecurUserException($"{path}: file not found");
        using var fs = File.OpenRead(path);
        using var br = new BinaryReader(fs);
        if (fs.Length < 28) throw new RecurUserException($"{path}: too short for a llama2.c header (28 bytes)");
        uint magic = br.ReadUInt32();
        if (magic == 0x616b3432)
            throw new RecurUserException($"{path}: llama2.c export version {br.ReadInt32()} is not supported; export with the legacy format (version 0)");
        fs.Position = 0;
        int dim = br.ReadInt32(), hidden = br.ReadInt32(), layers = br.ReadInt32(), heads = br.ReadInt32(),
            kvHeads = br.ReadInt32(), vocab = br.ReadInt32(), seqLen = br.ReadInt32();
        bool shared = vocab > 0;
        // −2^31 has no positive counterpart (Math.Abs would throw); it is no vocabulary size either.
        if (vocab == int.MinValue) throw new RecurUserException($"{path}: implausible llama2.c header (vocab_size {vocab})");
        vocab = Math.Abs(vocab);
        if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || vocab <= 0 || seqLen <= 0 || seqLen > WeightCheck.MaxContext
            || dim % heads != 0 || heads % kvHeads != 0 || (dim / heads) % 2 != 0)
            throw new RecurUserException($"{path}: implausible llama2.c header (dim {dim}, hidden {hidden}, layers {layers}, heads {heads}, kv heads {kvHeads}, vocab {vocab}, seq {seqLen})");
        int hd = dim / heads;
        long kvDim = (long)kvHeads * hd;
        long expected = 28 + 4L * (
            (long)vocab * dim + (long)layers * dim                      // embeddings, attention norms
            + (long)layers * dim * dim + 2L * layers * dim * kvDim       // wq, wk, wv
            + (long)layers * dim * dim + (long)layers * dim              // wo, ffn norms
            + 3L * layers * dim * hidden + dim                           // w1, w2, w3, final norm
            + (long)seqLen * hd                                          // freq_cis real + imag (unused)
            + (shared ? 0 : (long)vocab * dim));
        if (fs.Length != expected)
            throw new RecurUserException($"{path}: file has {fs.Length} bytes, but its header (dim {dim}, layers {layers}, vocab {vocab}, {(shared ? "shared" : "separate")} classifier) needs {expected}");

        var config = new ModelConfig
        {
            ModelType = "llama", Architectures = ["LlamaForCausalLM"],
            HiddenSize = dim, IntermediateSize = hidden, NumHiddenLayers = layers, NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads, RmsNormEps = 1e-5, RopeTheta = 10000, MaxPositionEmbeddings = seqLen,
            VocabSize = vocab, TieWordEmbeddings = shared, BosTokenId = 1, EosTokenId = [2], TorchDType = "float32",
        }.Validate(path);

        Tensor Next(params long[] shape)
        {
            long n = shape.Aggregate(1L, (a, b) => a * b);
            var buf = new float[n];
            var bytes = br.ReadBytes(checked((int)(n * 4)));
            Buffer.BlockCopy(bytes, 0, buf, 0, bytes.Length);
            return tensor(buf, shape);
        }

        var model = new DecoderModel(config);
        using (no_grad())
        using (NewDisposeScope())
        {
            var L = model.model.layers;
            model.model.embed_tokens.weight!.copy_(Next(vocab, dim));
            var attnNorm = Next(layers, dim);
            var wq = Next(layers, dim, dim);
            var wk = Next(layers, kvDim, dim);
            var wv = Next(layers, kvDim, dim);
            var wo = Next(layers, dim, dim);
            var ffnNorm = Next(layers, dim);
            var w1 = Next(layers, hidden, dim);
            var w2 = Next(layers, dim, hidden);
            var w3 = Next(layers, hidden, dim);
            var final = Next(dim);
            fs.Position += 4L * seqLen * hd; // precomputed freq_cis tables: recomputed by the model
            for (int i = 0; i < layers; i++)
            {
                L[i].input_layernorm!.weight.copy_(attnNorm[i]);
                L[i].self_attn.q_proj.weight!.copy_(PermuteForRotateHalf(wq[i], heads));
                L[i].self_attn.k_proj.weight!.copy_(PermuteForRotateHalf(wk[i], kvHeads));
                L[i].self_attn.v_proj.weight!.copy_(wv[i]);
                L[i].self_attn.o_proj.weight!.copy_(wo[i]);
                L[i].post_attention_layernorm.weight.copy_(ffnNorm[i]);
                L[i].mlp.gate_proj.weight!.copy_(w1[i]);
                L[i].mlp.down_proj.weight!.copy_(w2[i]);
                L[i].mlp.up_proj.weight!.copy_(w3[i]);
            }
            model.model.norm.weight.copy_(final);
            if (!shared) model.lm_head!.weight!.copy_(Next(vocab, dim));
        }
        model.to(paramDType).to(device);
        model.ComputeDType = paramDType;
        model.eval();
        return model;
    }

    /// <summary>
    /// Meta/llama2.c rotate adjacent pairs (x0,x1),(x2,x3)…; HF rotates the two halves of each head.
    /// Reordering each head's output rows from [pair][2] to [2][pair] turns one into the other
    /// (the same permutation as HF's convert_llama_weights_to_hf).
    /// </summary>
    public static Tensor PermuteForRotateHalf(Tensor w, int nHeads)
    {
        long rows = w.shape[0], cols = w.shape[1];
        return w.view(nHeads, rows / nHeads / 2, 2, cols).transpose(1, 2).reshape(rows, cols);
    }
}
