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
    /// <summary>Noise mixed into the state before every recurrence when &gt; 0 (official <c>_maybe_inject_noise</c>); 0 = off.</summary>
    [JsonPropertyName("test_time_noise")] public double TestTimeNoise { get; init; }
    /// <summary>How the noise level depends on the step: fixed, geom, sqrt, line or chi (official <c>_maybe_inject_noise</c>).</summary>
    [JsonPropertyName("test_time_noise_type")] public string TestTimeNoiseType { get; init; } = "fixed";

    [JsonIgnore] public int KvHeads => NumKeyValueHeads ?? NHeads;
    [JsonIgnore] public int HeadDimension => HeadDim ?? NEmbd / NHeads;
    [JsonIgnore] public int EmbeddingRows => PaddedVocabSize ?? VocabSize;
    [JsonIgnore] public BlockType BlockType => BlockTypeName switch { "olmo2" => BlockType.Olmo2, "sandwich" => BlockType.Sandwich, _ => BlockType.Llama };
    [JsonIgnore] public (int P, int R, int C) Shape => (NLayersInPrelude, NLayersInRecurrentBlock, NLayersInCoda);

    /// <summary>The block hyper-parameters as a HF config, so blocks share one constructor with the plain decoder.</summary>
    public ModelConfig ToBlockConfig() => new()
    {
        // Sandwich (Huginn) blocks have Llama's attention and MLP (no q/k norm); their head size is n_embd / n_heads.
        ModelType = BlockType == BlockType.Olmo2 ? "olmo2" : "llama",
        HiddenSize = NEmbd, IntermediateSize = IntermediateSize, NumHiddenLayers = NLayers,
        NumAttentionHeads = NHeads, NumKeyValueHeads = KvHeads, HeadDim = BlockType == BlockType.Sandwich ? NEmbd / NHeads : HeadDimension, RmsNormEps = NormEps,
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
        if (BlockTypeName is not (null or "llama" or "olmo2" or "sandwich")) throw new RecurUserException($"{source}: block_type '{BlockTypeName}' is not supported (expected llama, olmo2 or sandwich)");
        if (BlockType == BlockType.Sandwich && NEmbd % NHeads != 0) throw new RecurUserException($"{source}: n_embd {NEmbd} is not divisible by n_heads {NHeads}");
        void Positive(string key, long v) { if (v <= 0) throw new RecurUserException($"{source}: key '{key}' must be a positive integer (got {v})"); }
        void NonNegative(string key, long v) { if (v < 0) throw new RecurUserException($"{source}: key '{key}' must be ≥ 0 (got {v})"); }
        Positive("n_embd", NEmbd); Positive("n_heads", NHeads); Positive("intermediate_size", IntermediateSize);
        Positive("vocab_size", VocabSize); Positive("num_key_value_heads", KvHeads);
        NonNegative("n_layers_in_prelude", NLayersInPrelude); Positive("n_layers_in_recurrent_block", NLayersInRecurrentBlock); NonNegative("n_layers_in_coda", NLayersInCoda);
        if (EmbeddingRows < VocabSize) throw new RecurUserException($"{source}: padded_vocab_size {EmbeddingRows} is smaller than vocab_size {VocabSize}");
        if (InitValues.Std < 0) throw new RecurUserException($"{source}: init_values.std must be ≥ 0 (got {InitValues.Std})");
        if (MeanRecurrence < 1) throw new RecurUserException($"{source}: mean_recurrence must be ≥ 1 (got {MeanRecurrence})");
        if (InjectionType != "linear") throw new RecurUserException($"{source}: injection_type '{InjectionType}' is not supported (expected 'linear')");
        if (Bias) throw new RecurUserException($"{source}: bias is true (a bias on the adapter), which no released recurrent model has and Recur does not support");
        if (QkBias && KvHeads != NHeads)
            throw new RecurUserException($"{source}: qk_bias is true (the official default when the key is absent) but num_key_value_heads {KvHeads} ≠ n_heads {NHeads}; the official qk_bias [2, 1, n_heads, head_dim] cannot be added to fewer key heads. Set \"qk_bias\": false if the model has no such tensors");
        if (!(TestTimeNoise >= 0)) throw new RecurUserException($"{source}: test_time_noise must be ≥ 0 (got {TestTimeNoise})");
        if (TestTimeNoiseType is not ("fixed" or "geom" or "sqrt" or "line" or "chi"))
            throw new RecurUserException($"{source}: test_time_noise_type '{TestTimeNoiseType}' is not one of fixed, geom, sqrt, line, chi");
        if (InitValues.EmbedScale <= 0) throw new RecurUserException($"{source}: init_values.embed_scale must be > 0 (got {InitValues.EmbedScale})");
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

    /// <summary>
    /// The official <c>RavenConfig</c> constructor defaults (seal-rg/recurrent-pretraining:recpre/raven_config_minimal.py,
    /// carried unchanged into the released retrofitted checkpoints), used for keys a config.json does not have.
    /// Keys derived from others (num_key_value_heads, head_dim, padded_vocab_size, init_values) are filled by
    /// <see cref="ApplyOfficialDefaults"/>. docs/checkpoints.md lists each key with where the official code reads it.
    /// </summary>
    public static readonly IReadOnlyList<(string Key, JsonNode Value)> OfficialDefaults =
    [
        ("n_embd", 5280), ("n_heads", 55), ("n_layers", 8), ("block_size", 4096), ("vocab_size", 65536),
        ("tie_embeddings", true), ("intermediate_size", 17920), ("bias", false), ("norm_eps", 1e-6),
        ("state_init", "like-init"), ("injection_type", "linear"), ("n_layers_in_recurrent_block", 4),
        ("mean_recurrence", 32), ("sampling_scheme", "poisson-lognormal-filling"), ("mean_backprop_depth", 8),
        ("n_layers_in_prelude", 2), ("n_layers_in_coda", 2), ("qk_bias", true), ("rope_base", 50000.0),
        ("torch_dtype", "bfloat16"), ("test_time_noise", 0.0), ("test_time_noise_type", "fixed"),
    ];

    /// <summary>
    /// Fills absent keys as the official <c>RavenConfig.__init__</c> does. Derived values come from the file's own
    /// <c>n_embd</c>/<c>n_heads</c> or the defaults, never from the HF aliases: the official constructor computes
    /// them before <c>PretrainedConfig</c> applies <c>hidden_size</c>/<c>num_attention_heads</c>. A key the file
    /// gives replaces the derived value whole (init_values too: it is not merged).
    /// </summary>
    static void ApplyOfficialDefaults(JsonObject obj)
    {
        double nEmbd = obj["n_embd"]?.GetValue<double>() ?? 5280, nHeads = obj["n_heads"]?.GetValue<double>() ?? 55;
        obj["num_key_value_heads"] ??= (int)nHeads;
        obj["head_dim"] ??= (int)Math.Floor(nEmbd / nHeads);
        obj["padded_vocab_size"] ??= obj["vocab_size"]?.DeepClone() ?? 65536;
        obj["init_values"] ??= new JsonObject { ["std"] = Math.Sqrt(2 / (5 * nEmbd)), ["embed_scale"] = Math.Sqrt(nEmbd) };
        // HF aliases (RavenConfig.attribute_map) set the Raven key when the file has only the alias.
        foreach (var (alias, key) in new[] { ("hidden_size", "n_embd"), ("num_attention_heads", "n_heads"), ("num_hidden_layers", "n_layers") })
            if (obj[key] is null && obj[alias] is JsonNode v) obj[key] = v.DeepClone();
        foreach (var (key, value) in OfficialDefaults) obj[key] ??= value.DeepClone();
    }

    /// <summary>
    /// Reads a Raven config.json with the official semantics (docs/checkpoints.md): absent keys take the official
    /// defaults; keys without which the official model cannot be built are an error; <c>n_layers</c>, which the
    /// official forward never reads, may differ from p + r + c (reported through <paramref name="notice"/>).
    /// <paramref name="tensorNames"/> lets the block kind be inferred from the weights.
    /// </summary>
    public static RecurConfig Load(string path, IEnumerable<string>? tensorNames = null, Action<string>? notice = null)
    {
        if (!File.Exists(path)) throw new RecurUserException($"{path}: config file not found");
        JsonObject obj;
        try { obj = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw new RecurUserException($"{path}: not valid JSON ({ModelConfig.FirstLine(e.Message)})"); }
        try { ApplyOfficialDefaults(obj); }
        catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new RecurUserException($"{path}: n_embd and n_heads must be numbers ({ModelConfig.FirstLine(e.Message)})"); }
        // The official model reads these without a fallback: RavenForCausalLM.__init__ indexes
        // init_values["embed_scale"], initialize_state indexes init_values["std"], and the HF rotary embedding of the
        // Llama/OLMo-2 modeling files reads config.rope_theta and config.max_position_embeddings.
        if (obj["init_values"] is not JsonObject iv) throw new RecurUserException($"{path}: key 'init_values' must be an object with 'std' and 'embed_scale'");
        foreach (var k in new[] { "std", "embed_scale" })
            if (iv[k] is null) throw new RecurUserException($"{path}: init_values has no '{k}'; the official model reads init_values[\"{k}\"] (a given init_values replaces the default whole, it is not merged)");
        if (obj["rope_scaling"] is JsonObject rso && rso["rope_type"] is null && rso["type"] is JsonNode t) rso["rope_type"] = t.DeepClone();
        if (obj["block_type"] is null)
        {
            // Huginn-0125's sandwich blocks carry norm_3/norm_4 and its config has no rope_theta; the retrofitted
            // models' blocks have two norms (their modeling files build no others).
            var names = tensorNames?.ToList() ?? [];
            bool olmo = obj["auto_map"]?.ToJsonString().Contains("olmo", StringComparison.OrdinalIgnoreCase) == true
                        || names.Any(n => n.EndsWith(".attn.q_norm.weight", StringComparison.Ordinal));
            bool sandwich = !olmo && obj["rope_theta"] is null && names.Any(n => n.EndsWith(".norm_4.weight", StringComparison.Ordinal));
            obj["block_type"] = olmo ? "olmo2" : sandwich ? "sandwich" : "llama";
        }
        if (obj["block_type"]?.ToString() == "sandwich")
        {
            // Huginn's RoPE uses rope_base over block_size positions (its freqs_cis buffer), not rope_theta.
            obj["rope_theta"] ??= obj["rope_base"]!.DeepClone();
            obj["max_position_embeddings"] ??= obj["block_size"]!.DeepClone();
        }
        foreach (var k in new[] { "rope_theta", "max_position_embeddings" })
            if (obj[k] is null) throw new RecurUserException($"{path}: missing key '{k}'; the official Llama/OLMo-2 Raven modeling files read config.{k} for their rotary embedding (RavenConfig has no default for it)");
        RecurConfig cfg;
        try { cfg = obj.Deserialize<RecurConfig>(ModelConfig.Json) ?? throw new RecurUserException($"{path}: empty config"); }
        catch (JsonException e) { throw new RecurUserException($"{path}: key '{e.Path?.TrimStart('$', '.')}' has the wrong type ({ModelConfig.FirstLine(e.Message)})"); }
        cfg.Validate(path);
        if (cfg.NLayers != cfg.NLayersInPrelude + cfg.NLayersInRecurrentBlock + cfg.NLayersInCoda)
            notice?.Invoke($"{path}: n_layers {cfg.NLayers} ≠ n_layers_in_prelude + n_layers_in_recurrent_block + n_layers_in_coda ({cfg.NLayersInPrelude} + {cfg.NLayersInRecurrentBlock} + {cfg.NLayersInCoda}); the official forward does not read n_layers, so the three section sizes are used");
        return cfg;
    }

    public string ToJson() => JsonSerializer.Serialize(this, ModelConfig.Json);
}
