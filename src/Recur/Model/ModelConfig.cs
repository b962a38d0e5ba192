using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Recur.Model;

/// <summary>
/// Which block a decoder layer is: Llama pre-norm or OLMo-2 post-sublayer norm (METHOD §2.3), or Huginn-0125's
/// "sandwich" block (recurrent models only; seal-rg/recurrent-pretraining:recpre/raven_modeling_minimal.py).
/// </summary>
public enum BlockType { Llama, Olmo2, Sandwich }

/// <summary>HF <c>rope_scaling</c>; only the <c>llama3</c> type changes the frequencies (METHOD §2.4).</summary>
public sealed record RopeScaling
{
    [JsonPropertyName("rope_type")] public string RopeType { get; init; } = "default";
    [JsonPropertyName("factor")] public double Factor { get; init; } = 1.0;
    [JsonPropertyName("low_freq_factor")] public double LowFreqFactor { get; init; } = 1.0;
    [JsonPropertyName("high_freq_factor")] public double HighFreqFactor { get; init; } = 4.0;
    [JsonPropertyName("original_max_position_embeddings")] public int OriginalMaxPositionEmbeddings { get; init; } = 8192;
}

/// <summary>
/// A Hugging Face <c>config.json</c> for <c>model_type</c> <c>llama</c> or <c>olmo2</c>, one property per key.
/// Unknown keys are ignored; <c>eos_token_id</c> may be a number or a list, as in HF.
/// </summary>
public sealed record ModelConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "llama";
    [JsonPropertyName("architectures")] public string[]? Architectures { get; init; }
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; }
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; }
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; }
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; }
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; init; }
    [JsonPropertyName("head_dim")] public int? HeadDim { get; init; }
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; init; } = 1e-5;
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; init; } = 10000.0;
    [JsonPropertyName("rope_scaling")] public RopeScaling? RopeScaling { get; init; }
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 2048;
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; init; }
    [JsonPropertyName("eos_token_id"), JsonConverter(typeof(IntOrIntArrayConverter))] public int[]? EosTokenId { get; init; }
    [JsonPropertyName("pad_token_id")] public int? PadTokenId { get; init; }
    [JsonPropertyName("torch_dtype")] public string? TorchDType { get; init; }

    [JsonIgnore] public int KvHeads => NumKeyValueHeads ?? NumAttentionHeads;
    [JsonIgnore] public int HeadDimension => HeadDim ?? HiddenSize / NumAttentionHeads;
    [JsonIgnore] public BlockType BlockType => ModelType == "olmo2" ? BlockType.Olmo2 : BlockType.Llama;

    /// <summary>Parameters of one decoder layer, norms included (METHOD §2.6).</summary>
    [JsonIgnore]
    public long ParamsPerLayer
    {
        get
        {
            long h = HiddenSize, d = HeadDimension, q = NumAttentionHeads * d, kv = KvHeads * d;
            long attn = h * q + 2 * h * kv + q * h;
            long mlp = 3 * h * IntermediateSize;
            long norms = 2 * h + (BlockType == BlockType.Olmo2 ? q + kv : 0);
            return attn + mlp + norms;
        }
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    public static readonly string[] SupportedModelTypes = ["llama", "olmo2"];

    /// <summary>Checks that the shapes are consistent; <paramref name="source"/> names the file in errors.</summary>
    public ModelConfig Validate(string source)
    {
        if (!SupportedModelTypes.Contains(ModelType))
            throw new RecurUserException($"{source}: model_type '{ModelType}' is not supported (expected one of: {string.Join(", ", SupportedModelTypes)}, or a recurrent 'huginn_raven' folder)");
        void Positive(string key, long v) { if (v <= 0) throw new RecurUserException($"{source}: key '{key}' must be a positive integer (got {v})"); }
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("vocab_size", VocabSize);
        Positive("num_key_value_heads", KvHeads);
        if (HeadDim is null && HiddenSize % NumAttentionHeads != 0)
            throw new RecurUserException($"{source}: hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads} and no head_dim is given");
        Positive("head_dim", HeadDimension);
        if (HeadDimension % 2 != 0)
            throw new RecurUserException($"{source}: head_dim {HeadDimension} must be even for rotary embeddings");
        if (NumAttentionHeads % KvHeads != 0)
            throw new RecurUserException($"{source}: num_attention_heads {NumAttentionHeads} is not a multiple of num_key_value_heads {KvHeads}");
        if (RmsNormEps <= 0) throw new RecurUserException($"{source}: key 'rms_norm_eps' must be positive (got {RmsNormEps})");
        if (RopeTheta <= 0) throw new RecurUserException($"{source}: key 'rope_theta' must be positive (got {RopeTheta})");
        if (RopeScaling is { } rs)
        {
            string type = rs.RopeType;
            if (type is not ("default" or "llama3"))
                throw new RecurUserException($"{source}: rope_scaling.rope_type '{type}' is not supported (expected 'llama3' or 'default')");
            if (type == "llama3" && (rs.Factor <= 0 || rs.OriginalMaxPositionEmbeddings <= 0 || rs.HighFreqFactor <= rs.LowFreqFactor))
                throw new RecurUserException($"{source}: rope_scaling has invalid llama3 values (factor > 0, original_max_position_embeddings > 0, high_freq_factor > low_freq_factor)");
        }
        return this;
    }

    /// <summary>Reads and validates a HF <c>config.json</c>.</summary>
    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new RecurUserException($"{path}: config file not found");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new RecurUserException($"{path}: not valid JSON ({e.Message})"); }
        if (node is not JsonObject obj) throw new RecurUserException($"{path}: expected a JSON object");
        // HF writes rope_scaling with "type" in older files and "rope_type" in newer ones.
        if (obj["rope_scaling"] is JsonObject rso && rso["rope_type"] is null && rso["type"] is JsonNode t)
            rso["rope_type"] = t.DeepClone();
        return FromJson(obj, path).Validate(path);
    }

    internal static ModelConfig FromJson(JsonObject obj, string source)
    {
        // Through the source-generated reader: the reflection-based one spent ~0.1 s building its metadata on every
        // start, a fifth of a one-token `recur generate` (bench/RESULTS.md, "Without libtorch").
        try { return obj.Deserialize(ModelConfigJson.Default.ModelConfig) ?? throw new RecurUserException($"{source}: empty config"); }
        catch (JsonException e) { throw new RecurUserException($"{source}: key '{e.Path?.TrimStart('$', '.')}' has the wrong type ({FirstLine(e.Message)})"); }
    }

    internal static string FirstLine(string s) => s.Split('\n')[0].Trim();

    public string ToJson() => JsonSerializer.Serialize(this, Json);
}

/// <summary>The compiled JSON reader of <see cref="ModelConfig"/>, with <see cref="ModelConfig.Json"/>'s settings.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true, NumberHandling = JsonNumberHandling.AllowReadingFromString)]
[JsonSerializable(typeof(ModelConfig))]
internal sealed partial class ModelConfigJson : JsonSerializerContext;

/// <summary>HF allows <c>eos_token_id</c> to be an int or a list of ints.</summary>
public sealed class IntOrIntArrayConverter : JsonConverter<int[]?>
{
    public override int[]? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Null) return null;
        if (reader.TokenType == JsonTokenType.Number) return [reader.GetInt32()];
        if (reader.TokenType != JsonTokenType.StartArray) throw new JsonException("expected an integer or a list of integers");
        var list = new List<int>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number) throw new JsonException("expected an integer or a list of integers");
            list.Add(reader.GetInt32());
        }
        return [.. list];
    }

    public override void Write(Utf8JsonWriter writer, int[]? value, JsonSerializerOptions options)
    {
        if (value is null) { writer.WriteNullValue(); return; }
        if (value.Length == 1) { writer.WriteNumberValue(value[0]); return; }
        writer.WriteStartArray();
        foreach (var v in value) writer.WriteNumberValue(v);
        writer.WriteEndArray();
    }
}
