using System.Text.RegularExpressions;
using Recur.Model;

namespace Recur.Checkpoints;

/// <summary>
/// Checks a config against the tensor headers of its weight files before any parameter is allocated: the
/// layer counts, the embedding and the first layer's shapes must be what the files hold, and the config's
/// parameters must fit in the values the files store. A config that disagrees (a typo, a hostile folder with
/// <c>num_hidden_layers: 1000000000</c> or <c>vocab_size: 4000000</c> beside an 800 KB file) fails with one line
/// naming the key instead of allocating first and failing, or running out of memory, later.
/// </summary>
public static partial class WeightCheck
{
    /// <summary>Largest context (<c>max_position_embeddings</c>) accepted; generation sizes its KV cache by it.</summary>
    public const int MaxContext = 1 << 24;

    /// <summary>Largest test-time recurrence accepted anywhere (config <c>mean_recurrence</c>, <c>--recurrences</c>, adaptive <c>max</c>).</summary>
    public const int MaxRecurrence = 1024;

    [GeneratedRegex(@"^model\.layers\.(\d+)\.")]
    private static partial Regex DecoderLayer();

    [GeneratedRegex(@"^transformer\.(prelude|core_block|coda)\.(\d+)\.")]
    private static partial Regex RecurrentLayer();

    /// <summary>A plain Llama/OLMo-2 config (<paramref name="configPath"/>) against its weights.</summary>
    public static void Decoder(ModelConfig c, WeightFiles w, string configPath)
    {
        Context(c.MaxPositionEmbeddings, configPath);
        int layers = LayerCount(w, DecoderLayer(), "");
        // A near miss is left to the loader, which names the first missing or extra tensor; a count far beyond
        // the files would allocate first.
        if (Far(c.NumHiddenLayers, layers))
            throw new RecurUserException($"{configPath}: num_hidden_layers is {c.NumHiddenLayers}, but the weights in {w.Folder} hold {Layers(layers, "model.layers")}");
        layers = Math.Min(layers, c.NumHiddenLayers);
        Shape(w, "model.embed_tokens.weight", [c.VocabSize, c.HiddenSize], configPath, "vocab_size and hidden_size");
        if (!c.TieWordEmbeddings) Shape(w, "lm_head.weight", [c.VocabSize, c.HiddenSize], configPath, "vocab_size and hidden_size");
        long q = (long)c.NumAttentionHeads * c.HeadDimension, kv = (long)c.KvHeads * c.HeadDimension;
        Shape(w, "model.layers.0.self_attn.q_proj.weight", [q, c.HiddenSize], configPath, "num_attention_heads, head_dim and hidden_size");
        Shape(w, "model.layers.0.self_attn.k_proj.weight", [kv, c.HiddenSize], configPath, "num_key_value_heads, head_dim and hidden_size");
        Shape(w, "model.layers.0.mlp.gate_proj.weight", [c.IntermediateSize, c.HiddenSize], configPath, "intermediate_size and hidden_size");
        Fits(w, configPath, (double)c.VocabSize * c.HiddenSize + (double)c.NumHiddenLayers * Matrices(c.HiddenSize, q, kv, c.IntermediateSize));
    }

    /// <summary>A recurrent (Raven layout) config against its weights.</summary>
    public static void Recurrent(RecurConfig c, WeightFiles w, string configPath)
    {
        Context(c.MaxPositionEmbeddings, configPath);
        if (c.MeanRecurrence > MaxRecurrence)
            throw new RecurUserException($"{configPath}: key 'mean_recurrence' is {c.MeanRecurrence}; at most {MaxRecurrence} is supported");
        foreach (var (part, key, want) in new[] { ("prelude", "n_layers_in_prelude", c.NLayersInPrelude), ("core_block", "n_layers_in_recurrent_block", c.NLayersInRecurrentBlock), ("coda", "n_layers_in_coda", c.NLayersInCoda) })
        {
            int have = LayerCount(w, RecurrentLayer(), part);
            if (Far(want, have))
                throw new RecurUserException($"{configPath}: {key} is {want}, but the weights in {w.Folder} hold {Layers(have, $"transformer.{part}")}");
        }
        Shape(w, "transformer.wte.weight", [c.EmbeddingRows, c.NEmbd], configPath, "padded_vocab_size (or vocab_size) and n_embd");
        long q = (long)c.NHeads * c.HeadDimension, kv = (long)c.KvHeads * c.HeadDimension;
        Shape(w, "transformer.core_block.0.attn.Wqkv.weight", [q + 2 * kv, c.NEmbd], configPath, "n_heads, num_key_value_heads, head_dim and n_embd");
        Shape(w, "transformer.core_block.0.mlp.fc.weight", [2L * c.IntermediateSize, c.NEmbd], configPath, "intermediate_size and n_embd");
        long layers = (long)c.NLayersInPrelude + c.NLayersInRecurrentBlock + c.NLayersInCoda;
        Fits(w, configPath, (double)c.EmbeddingRows * c.NEmbd + layers * Matrices(c.NEmbd, q, kv, c.IntermediateSize));
    }

    /// <summary>A context length a model can have: 1 to <see cref="MaxContext"/> positions.</summary>
    public static void Context(int positions, string source)
    {
        if (positions < 1 || positions > MaxContext)
            throw new RecurUserException($"{source}: key 'max_position_embeddings' must be between 1 and {MaxContext} (got {positions})");
    }

    // The weight matrices of one layer (attention and MLP), without norms: a lower bound on what a layer stores.
    static double Matrices(double h, double q, double kv, double inter) => h * q + 2 * h * kv + q * h + 3 * h * inter;

    static bool Far(int want, int have) => want > 2L * have + 8;

    static string Layers(int n, string prefix) => n == 0 ? $"no {prefix}.* tensors" : $"{prefix}.0 to {prefix}.{n - 1} only";

    // How many layers the files hold under a prefix without a gap: indices 0..n-1 all present.
    static int LayerCount(WeightFiles w, Regex pattern, string part)
    {
        var seen = new HashSet<long>();
        foreach (var name in w.Names)
        {
            var m = pattern.Match(name);
            if (!m.Success) continue;
            if (part.Length > 0 && m.Groups[1].Value != part) continue;
            var digits = m.Groups[^1].Value;
            if (digits.Length > 9 || !long.TryParse(digits, out long i))
                throw new RecurUserException($"{w.FileOf(name)}: tensor '{name}' has an implausible layer index");
            seen.Add(i);
        }
        int n = 0;
        while (seen.Contains(n)) n++;
        return n;
    }

    // The stored shape of a tensor must be the one the config implies; a tensor that is absent is reported later,
    // by the loader, with its full name.
    static void Shape(WeightFiles w, string name, long[] expected, string configPath, string keys)
    {
        if (!w.Contains(name)) return;
        var have = w.Entry(name).Shape;
        if (!have.SequenceEqual(expected))
            throw new RecurUserException($"{w.FileOf(name)}: tensor '{name}' has shape [{string.Join(", ", have)}], but {configPath} ({keys}) needs [{string.Join(", ", expected)}]");
    }

    // Every parameter is read from the files, so the config cannot need many more values than the files store.
    // A small shortfall (a missing tensor) is left to the loader, which names the tensor; allocating up to twice
    // what the files hold before that is harmless.
    static void Fits(WeightFiles w, string configPath, double needed)
    {
        double stored = w.Names.Sum(n => (double)w.Entry(n).Elements);
        if (needed > 2 * stored + (1 << 20))
            throw new RecurUserException($"{configPath}: the config describes at least {needed:G4} weights, but the files in {w.Folder} store {stored:G4}; check its sizes (hidden_size, intermediate_size, layer counts, vocab_size)");
    }
}
