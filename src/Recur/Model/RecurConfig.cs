using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Recur.Model;

/// <summary><c>init_values</c> of a Raven config: the s_0 standard deviation and the embedding scale (METHOD §2.5).</summary>
public sealed record InitValues
{
    /// <summary>Huginn's √(2/(5·5280)), carried over by the retrofitted models.</summary>
    public const double HuginnStd = 0.008703882797784892;
    [JsonPropertyName("std")] public double Std { get; init; } = HuginnStd;
    [JsonPropertyName("embed_scale")] public double EmbedScale { get; init; } = 1.0;
}

/// <summary>
/// The <c>config.json</c> of a recurrent model in the Raven/Huginn layout used by the paper's released
/// checkpoints (METHOD §2.7). HF aliases (<c>hidden_size</c>, <c>num_attention_heads</c>,
/// <c>num_hidden_layers</c>) are accepted; <c>tie_embeddings</c> wins over a stray <c>tie_word_embeddings</c>.
/// <c>block_type</c> and the token ids are Recur's additions; without <c>block_type</c>, the block kind
/// is read from <c>auto_map</c> or from the tensors (OLMo-2 blocks carry q/k norms).
/// </summary>
public sealed record RecurConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "huginn_raven";
    [JsonPropertyName("architectures")] public string[] Architectures { get; init; } = ["RavenForCausalLM"];
    [JsonPropertyName("auto_map")] public Dictionary<string, string>? AutoMap { get; init; }
    [JsonPropertyName("block_type")] public string? BlockTypeName { get; init; }
    [JsonPropertyName("n_embd")] public int NEmbd { get; init; }
    [JsonPropertyName("n_heads")] public int NHeads { get; init; }
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; init; }
    [JsonPropertyName("head_dim")] public int? HeadDim { get; init; }
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; }
    [JsonPropertyName("n_layers")] public int NLayers { get; init; }
    [JsonPropertyName("n_layers_in_prelude")] public int NLayersInPrelude { get; init; }
    [JsonPropertyName("n_layers_in_recurrent_block")] public int NLayersInRecurrentBlock { get; init; }
    [JsonPropertyName("n_layers_in_coda")] public int NLayersInCoda { get; init; }
    [JsonPropertyName("norm_eps")] public double NormEps { get; init; } = 1e-5;
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }
    [JsonPropertyName("padded_vocab_size")] public int? PaddedVocabSize { get; init; }
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; init; } = 10000;
    [JsonPropertyName("rope_scaling")] public RopeScaling? RopeScaling { get; init; }
    /// <summary>Huginn leftover, unused by the retrofitted models (METHOD §2.4).</summary>
    [JsonPropertyName("rope_base")] public double RopeBase { get; init; } = 500000;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 4096;
    [JsonPropertyName("tie_embeddings")] public bool TieEmbeddings { get; init; }
    [JsonPropertyName("qk_bias")] public bool QkBias { get; init; }
    [JsonPropertyName("bias")] public bool Bias { get; init; }
    [JsonPropertyName("torch_dtype")] public string? TorchDType { get; init; } = "float32";
    [JsonPropertyName("init_values")] public InitValues InitValues { get; init; } = new();
    [JsonPropertyName("mean_recurrence")] public int MeanRecurrence { get; init; } = 32;
    [JsonPropertyName("mean_backprop_depth")] public int MeanBackpropDepth { get; init; } = 8;
    [JsonPropertyName("sampling_scheme")] public string SamplingScheme { get; init; } = "poisson-lognormal-filling";
    [JsonPropertyName("injection_type")] public string InjectionType { get; init; } = "linear";
    [JsonPropertyName("state_init")] public string StateInit { get; init; } = "like-init";
    [JsonPropertyName("block_size")] public int BlockSize { get; init; } = 4096;
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; init; }
    [JsonPropertyName("eos_token_id"), JsonConverter(typeof(IntOrIntArrayConverter))] public int[]? EosTokenId { get; init; }
    [JsonPropertyName("pad_token_id")] public int? PadTokenId { get; init; }

    [JsonIgnore] public int KvHeads => NumKeyValueHeads ?? NHeads;
    [JsonIgnore] public int HeadDimension => HeadDim ?? NEmbd / NHeads;
    [JsonIgnore] public int EmbeddingRows => PaddedVocabSize ?? VocabSize;
    [JsonIgnore] public BlockType BlockType => BlockTypeName == "olmo2" ? BlockType.Olmo2 : BlockType.Llama;
    [JsonIgnore] public (int P, int R, int C) Shape => (NLayersInPrelude, NLayersInRecurrentBlock, NLayersInCoda);

    /// <summary>The block hyper-parameters as a HF config, so blocks share one constructor with the plain decoder.</summary>
    public ModelConfig ToBlockConfig() => new()
    {
        ModelType = BlockType == BlockType.Olmo2 ? "olmo2" : "llama",
        HiddenSize = NEmbd, IntermediateSize = IntermediateSize, NumHiddenLayers = NLayers,
        NumAttentionHeads = NHeads, NumKeyValueHeads = KvHeads, HeadDim = HeadDimension, RmsNormEps = NormEps,
        RopeTheta = RopeTheta, RopeScaling = RopeScaling, MaxPositionEmbeddings = MaxPositionEmbeddings,
        VocabSize = EmbeddingRows, TieWordEmbeddings = false, BosTokenId = BosTokenId, EosTokenId = EosTokenId,
    };

    /// <summary>Effective depth p + r·T + c (METHOD §1).</summary>
    public int EffectiveDepth(int t) => NLayersInPrelude + NLayersInRecurrentBlock * t + NLayersInCoda;

    /// <summary>Effective parameters (p + c + r·T) × params-per-layer; excludes embeddings, head, adapter, ln_f (METHOD §1).</summary>
    public long EffectiveParameters(int t) => EffectiveDepth(t) * ToBlockConfig().ParamsPerLayer;

    public RecurConfig Validate(string source)
    {
        if (ModelType != "huginn_raven") throw new RecurUserException($"{source}: model_type '{ModelType}' is not a recurrent (huginn_raven) model");
        if (BlockTypeName is not (null or "llama" or "olmo2")) throw new RecurUserException($"{source}: block_type '{BlockTypeName}' is not supported (expected llama or olmo2)");
        void Positive(string key, long v) { if (v <= 0) throw new RecurUserException($"{source}: key '{key}' must be a positive integer (got {v})"); }
        void NonNegative(string key, long v) { if (v < 0) throw new RecurUserException($"{source}: key '{key}' must be ≥ 0 (got {v})"); }
        Positive("n_embd", NEmbd); Positive("n_heads", NHeads); Positive("intermediate_size", IntermediateSize);
        Positive("vocab_size", VocabSize); Positive("num_key_value_heads", KvHeads);
        NonNegative("n_layers_in_prelude", NLayersInPrelude); Positive("n_layers_in_recurrent_block", NLayersInRecurrentBlock); NonNegative("n_layers_in_coda", NLayersInCoda);
        if (NLayers != NLayersInPrelude + NLayersInRecurrentBlock + NLayersInCoda)
            throw new RecurUserException($"{source}: n_layers {NLayers} ≠ n_layers_in_prelude + n_layers_in_recurrent_block + n_layers_in_coda ({NLayersInPrelude} + {NLayersInRecurrentBlock} + {NLayersInCoda})");
        if (EmbeddingRows < VocabSize) throw new RecurUserException($"{source}: padded_vocab_size {EmbeddingRows} is smaller than vocab_size {VocabSize}");
        if (InitValues.Std < 0) throw new RecurUserException($"{source}: init_values.std must be ≥ 0 (got {InitValues.Std})");
        if (MeanRecurrence < 1) throw new RecurUserException($"{source}: mean_recurrence must be ≥ 1 (got {MeanRecurrence})");
        if (InjectionType != "linear") throw new RecurUserException($"{source}: injection_type '{InjectionType}' is not supported (expected 'linear')");
        if (TieEmbeddings) throw new RecurUserException($"{source}: tie_embeddings is true, but retrofitted recurrent models always have an untied lm_head (METHOD §2.5)");
        if (QkBias || Bias) throw new RecurUserException($"{source}: biases (qk_bias/bias) are not supported; the retrofitted models have none");
        ToBlockConfig().Validate(source);
        return this;
    }

    public static bool IsRecurrentFolder(string folder)
    {
        var p = Path.Combine(folder, "config.json");
        if (!File.Exists(p)) return false;
        try { return (JsonNode.Parse(File.ReadAllText(p)) as JsonObject)?["model_type"]?.GetValue<string>() == "huginn_raven"; }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { return false; }
    }

    /// <summary>Reads a Raven config.json. <paramref name="tensorNames"/> lets the block kind be inferred from the weights.</summary>
    public static RecurConfig Load(string path, IEnumerable<string>? tensorNames = null)
    {
        if (!File.Exists(path)) throw new RecurUserException($"{path}: config file not found");
        JsonObject obj;
        try { obj = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw new RecurUserException($"{path}: not valid JSON ({ModelConfig.FirstLine(e.Message)})"); }
        // HF aliases, used when the Raven key is absent (RavenConfig.attribute_map).
        foreach (var (alias, key) in new[] { ("hidden_size", "n_embd"), ("num_attention_heads", "n_heads"), ("num_hidden_layers", "n_layers") })
            if (obj[key] is null && obj[alias] is JsonNode v) obj[key] = v.DeepClone();
        if (obj["rope_scaling"] is JsonObject rso && rso["rope_type"] is null && rso["type"] is JsonNode t) rso["rope_type"] = t.DeepClone();
        if (obj["block_type"] is null)
        {
            bool olmo = obj["auto_map"]?.ToJsonString().Contains("olmo", StringComparison.OrdinalIgnoreCase) == true
                        || (tensorNames?.Any(n => n.EndsWith(".attn.q_norm.weight", StringComparison.Ordinal)) ?? false);
            obj["block_type"] = olmo ? "olmo2" : "llama";
        }
        RecurConfig cfg;
        try { cfg = obj.Deserialize<RecurConfig>(ModelConfig.Json) ?? throw new RecurUserException($"{path}: empty config"); }
        catch (JsonException e) { throw new RecurUserException($"{path}: key '{e.Path?.TrimStart('$', '.')}' has the wrong type ({ModelConfig.FirstLine(e.Message)})"); }
        return cfg.Validate(path);
    }

    public string ToJson() => JsonSerializer.Serialize(this, ModelConfig.Json);
}
