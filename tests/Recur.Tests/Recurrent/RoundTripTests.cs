using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Recurrent;

/// <summary>
/// Save → load gives identical logits for every model family Recur writes, and the written folder has the tensor
/// names, dtypes and config keys of the paper's conversion (mcleish7/retrofitting-recurrence:
/// convert_pretrained_model/convert_llama.py, convert_olmo.py; METHOD §2.7).
/// </summary>
public class RoundTripTests
{
    public static TheoryData<string, string> Families => new()
    {
        { "llama", "float32" }, { "llama", "bfloat16" }, { "olmo2", "float32" }, { "olmo2", "bfloat16" },
    };

    static ModelConfig Base(string type) => (type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest) with { NumHiddenLayers = 6 };

    /// <summary>Parameters and compute in <paramref name="dtype"/>, as a folder saved in that dtype loads.</summary>
    static void CastTo(ICausalLM m, ScalarType dtype)
    {
        ((nn.Module)m).to(dtype);
        m.ComputeDType = dtype;
    }

    /// <summary>The saved weights, every tensor checked to be stored in <paramref name="dtype"/>.</summary>
    static SafeTensorsFile StoredIn(string dir, ScalarType dtype)
    {
        var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        Assert.All(f.Entries.Values, e => Assert.Equal(dtype == ScalarType.BFloat16 ? "BF16" : "F32", e.DType));
        return f;
    }

    static JsonObject Config(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();

    [Theory, MemberData(nameof(Families))]
    public void Recurrent_folder_round_trips_with_the_official_conversion_layout(string type, string dtypeName)
    {
        var dtype = HfCheckpoint.ParseDType(dtypeName);
        var b0 = Base(type);
        using var b = TestModels.Random(b0, 8);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), Seed = 8, MeanRecurrence = 4 });
        CastTo(m, dtype);
        var dir = Path.Combine(TestModels.TempDir(), "rec");
        RecurrentCheckpoint.Save(m, dir);

        using var loaded = RecurrentCheckpoint.Load(dir, dtype, CPU);
        using (no_grad())
        {
            var ids = randint(0, 128, [2, 7], dtype: ScalarType.Int64);
            var s0 = (randn(2, 7, 64) * 0.1).to(dtype);
            foreach (int t in new[] { 1, 3 })
                Assert.True(loaded.Forward(ids, t, 0, s0: s0).eq(m.Forward(ids, t, 0, s0: s0)).all().item<bool>(), $"T = {t}");
        }

        // Tensors: exactly the Raven names, in the stored dtype, with the conversion's shapes.
        using var f = StoredIn(dir, dtype);
        var expected = new List<string> { "transformer.wte.weight", "transformer.adapter.weight", "transformer.ln_f.weight", "lm_head.weight" };
        foreach (var (sec, n) in new[] { ("prelude", 1), ("core_block", 2), ("coda", 1) })
            for (int j = 0; j < n; j++)
            {
                expected.AddRange(new[] { "attn.Wqkv.weight", "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight", "norm_1.weight", "norm_2.weight" }.Select(k => $"transformer.{sec}.{j}.{k}"));
                if (type == "olmo2") expected.AddRange(new[] { "attn.q_norm.weight", "attn.k_norm.weight" }.Select(k => $"transformer.{sec}.{j}.{k}"));
            }
        Assert.Equal(expected.OrderBy(x => x, StringComparer.Ordinal), f.Entries.Keys.OrderBy(x => x, StringComparer.Ordinal));
        Assert.Equal([(4 + 2 * 2) * 16, 64], f.Entries["transformer.core_block.0.attn.Wqkv.weight"].Shape);
        Assert.Equal([2 * 176, 64], f.Entries["transformer.coda.0.mlp.fc.weight"].Shape);
        Assert.Equal([64, 128], f.Entries["transformer.adapter.weight"].Shape);

        // config.json: the keys convert_llama.py / convert_olmo.py set, with the values they would write.
        var c = Config(dir);
        void Is<T>(string key, T value) => Assert.True(Equals(c[key]!.GetValue<T>(), value), $"{key}: {c[key]} ≠ {value}");
        Is("model_type", "huginn_raven");
        Is("n_embd", 64); Is("n_heads", 4); Is("num_key_value_heads", 2); Is("head_dim", 16); Is("intermediate_size", 176);
        Is("n_layers", 4); Is("n_layers_in_prelude", 1); Is("n_layers_in_recurrent_block", 2); Is("n_layers_in_coda", 1);
        Is("mean_recurrence", 4); Is("mean_backprop_depth", 8); Is("block_size", 4096);
        Is("vocab_size", 128); Is("padded_vocab_size", 128);
        Is("tie_embeddings", false); Is("qk_bias", false); Is("bias", false);
        Is("norm_eps", b0.RmsNormEps); Is("rope_theta", b0.RopeTheta); Is("rope_base", 500000.0);
        Is("max_position_embeddings", b0.MaxPositionEmbeddings);
        Is("torch_dtype", dtypeName);
        Is("injection_type", "linear"); Is("sampling_scheme", "poisson-lognormal-filling"); Is("state_init", "like-init");
        Assert.Equal(1.0, c["init_values"]!["embed_scale"]!.GetValue<double>());
        Assert.Equal(InitValues.HuginnStd, c["init_values"]!["std"]!.GetValue<double>());
        Is("block_type", type);
    }

    public static TheoryData<string, string> Decoders => new()
    {
        { "llama", "float32" }, { "llama", "bfloat16" }, { "olmo2", "float32" },
    };

    [Theory, MemberData(nameof(Decoders))]
    public void Plain_decoder_folder_round_trips_with_hf_names(string type, string dtypeName)
    {
        var dtype = HfCheckpoint.ParseDType(dtypeName);
        using var m = TestModels.Random(Base(type), 9);
        CastTo(m, dtype);
        var dir = Path.Combine(TestModels.TempDir(), "hf");
        HfCheckpoint.Save(m, dir);
        using var loaded = HfCheckpoint.Load(dir, dtype, CPU);
        using (no_grad())
        {
            var ids = randint(0, 128, [2, 7], dtype: ScalarType.Int64);
            Assert.True(loaded.Forward(ids).eq(m.Forward(ids)).all().item<bool>());
        }
        using var f = StoredIn(dir, dtype);
        Assert.Contains("model.layers.5.self_attn.q_proj.weight", f.Entries.Keys);
        Assert.Contains("model.embed_tokens.weight", f.Entries.Keys);
        var c = Config(dir);
        Assert.Equal(type, c["model_type"]!.GetValue<string>());
        Assert.Equal(dtypeName, c["torch_dtype"]!.GetValue<string>());
    }
}
