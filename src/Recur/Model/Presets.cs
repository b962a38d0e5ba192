namespace Recur.Model;

/// <summary>
/// Named base-model shapes. The three 1B models carry the exact shapes of the released checkpoints
/// (METHOD §2.6); the stories shapes are llama2.c's TinyStories models; the tiny ones are for tests.
/// </summary>
public static class Presets
{
    /// <summary>TinyLlama-1.1B-intermediate-step-1431k-3T.</summary>
    public static ModelConfig TinyLlama11B { get; } = new()
    {
        ModelType = "llama", Architectures = ["LlamaForCausalLM"],
        HiddenSize = 2048, IntermediateSize = 5632, NumHiddenLayers = 22,
        NumAttentionHeads = 32, NumKeyValueHeads = 4, RmsNormEps = 1e-5, RopeTheta = 10000,
        MaxPositionEmbeddings = 2048, VocabSize = 32000, TieWordEmbeddings = false,
        BosTokenId = 1, EosTokenId = [2], TorchDType = "float32",
    };

    /// <summary>meta-llama/Llama-3.2-1B (tied embeddings, llama3 RoPE scaling).</summary>
    public static ModelConfig Llama32_1B { get; } = new()
    {
        ModelType = "llama", Architectures = ["LlamaForCausalLM"],
        HiddenSize = 2048, IntermediateSize = 8192, NumHiddenLayers = 16,
        NumAttentionHeads = 32, NumKeyValueHeads = 8, HeadDim = 64, RmsNormEps = 1e-5, RopeTheta = 500000,
        RopeScaling = new RopeScaling { RopeType = "llama3", Factor = 32, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 8192 },
        MaxPositionEmbeddings = 131072, VocabSize = 128256, TieWordEmbeddings = true,
        BosTokenId = 128000, EosTokenId = [128001], TorchDType = "bfloat16",
    };

    /// <summary>allenai/OLMo-2-0425-1B. The vocabulary size is METHOD's [unverified] 100352.</summary>
    public static ModelConfig Olmo2_1B { get; } = new()
    {
        ModelType = "olmo2", Architectures = ["Olmo2ForCausalLM"],
        HiddenSize = 2048, IntermediateSize = 8192, NumHiddenLayers = 16,
        NumAttentionHeads = 16, NumKeyValueHeads = 16, RmsNormEps = 1e-6, RopeTheta = 500000,
        MaxPositionEmbeddings = 4096, VocabSize = 100352, TieWordEmbeddings = false,
        BosTokenId = 100257, EosTokenId = [100257], PadTokenId = 100277, TorchDType = "float32",
    };

    /// <summary>llama2.c stories15M: dim 288, 6 layers, 6 heads.</summary>
    public static ModelConfig Stories15M { get; } = Stories(288, 768, 6, 6, 256);

    /// <summary>llama2.c stories110M: dim 768, 12 layers, 12 heads.</summary>
    public static ModelConfig Stories110M { get; } = Stories(768, 2048, 12, 12, 1024);

    /// <summary>A tiny Llama with GQA, for tests.</summary>
    public static ModelConfig TinyTest { get; } = new()
    {
        ModelType = "llama", Architectures = ["LlamaForCausalLM"],
        HiddenSize = 64, IntermediateSize = 176, NumHiddenLayers = 4, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        RmsNormEps = 1e-5, RopeTheta = 10000, MaxPositionEmbeddings = 256, VocabSize = 128,
        BosTokenId = 1, EosTokenId = [2], TorchDType = "float32",
    };

    /// <summary>A tiny OLMo-2, for tests.</summary>
    public static ModelConfig TinyOlmo2Test { get; } = TinyTest with { ModelType = "olmo2", Architectures = ["Olmo2ForCausalLM"], RmsNormEps = 1e-6, RopeTheta = 500000 };

    /// <summary>The demo's base model: small enough to pretrain on 2 CPU cores in minutes, deep enough to cut into (p, r, c).</summary>
    public static ModelConfig Demo { get; } = TinyTest with { HiddenSize = 128, IntermediateSize = 352, NumHiddenLayers = 8, NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 512 };

    static ModelConfig Stories(int dim, int hidden, int layers, int heads, int ctx) => new()
    {
        ModelType = "llama", Architectures = ["LlamaForCausalLM"],
        HiddenSize = dim, IntermediateSize = hidden, NumHiddenLayers = layers,
        NumAttentionHeads = heads, NumKeyValueHeads = heads, RmsNormEps = 1e-5, RopeTheta = 10000,
        MaxPositionEmbeddings = ctx, VocabSize = 32000, TieWordEmbeddings = true,
        BosTokenId = 1, EosTokenId = [2], TorchDType = "float32",
    };

    public static IReadOnlyDictionary<string, ModelConfig> ByName { get; } = new Dictionary<string, ModelConfig>(StringComparer.OrdinalIgnoreCase)
    {
        ["tinyllama-1.1b"] = TinyLlama11B,
        ["llama-3.2-1b"] = Llama32_1B,
        ["olmo-2-1b"] = Olmo2_1B,
        ["stories15m"] = Stories15M,
        ["stories110m"] = Stories110M,
        ["tiny"] = TinyTest,
        ["tiny-olmo2"] = TinyOlmo2Test,
        ["demo"] = Demo,
    };

    public static ModelConfig Get(string name) =>
        ByName.TryGetValue(name, out var c) ? c
        : throw new RecurUserException($"unknown model preset '{name}' (expected one of: {string.Join(", ", ByName.Keys)})");
}
