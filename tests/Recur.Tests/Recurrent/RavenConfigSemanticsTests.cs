using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Recurrent;

/// <summary>
/// config.json read with the official <c>RavenConfig</c> semantics (docs/checkpoints.md): absent keys take the
/// official defaults, keys the official model cannot do without are an error, n_layers is not checked.
/// </summary>
public class RavenConfigSemanticsTests
{
    static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    /// <summary>A saved (1, 2, 1) retrofit of a random 6-layer model; <paramref name="kvHeads"/> 4 makes qk_bias possible.</summary>
    static (string Dir, RecurrentModel Model) Saved(int kvHeads = 2, long seed = 5)
    {
        using var b = TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6, NumKeyValueHeads = kvHeads }, seed);
        var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), Seed = seed });
        var dir = Path.Combine(TestModels.TempDir(), "rec");
        RecurrentCheckpoint.Save(m, dir);
        return (dir, m);
    }

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        var p = Path.Combine(dir, "config.json");
        var o = (JsonObject)JsonNode.Parse(File.ReadAllText(p))!;
        edit(o);
        File.WriteAllText(p, o.ToJsonString());
    }

    static void EditTensors(string dir, Action<List<KeyValuePair<string, Tensor>>> edit)
    {
        var p = Path.Combine(dir, "model.safetensors");
        List<KeyValuePair<string, Tensor>> list;
        using (var f = SafeTensorsFile.Open(p)) list = f.Entries.Keys.Select(k => new KeyValuePair<string, Tensor>(k, f.Read(k))).ToList();
        edit(list);
        SafeTensorsFile.Save(p, list);
    }

    static RecurConfig LoadConfig(string dir, List<string>? notes = null) => RecurConfig.Load(Path.Combine(dir, "config.json"), notice: notes is null ? null : notes.Add);

    [Fact]
    public void Absent_init_values_give_the_official_std_and_sqrt_h_embedding_scale()
    {
        var (dir, m) = Saved(); m.Dispose();
        EditConfig(dir, o => o.Remove("init_values"));
        var c = LoadConfig(dir);
        Assert.Equal(Math.Sqrt(2.0 / (5 * 64)), c.InitValues.Std, 12);
        Assert.Equal(8.0, c.InitValues.EmbedScale, 12);
    }

    [Fact]
    public void Derived_defaults_come_from_n_embd_not_from_the_hidden_size_alias()
    {
        // The official constructor derives init_values, head_dim and num_key_value_heads from its own n_embd/n_heads
        // arguments (defaults 5280/55) before PretrainedConfig applies hidden_size/num_attention_heads.
        var (dir, m) = Saved(); m.Dispose();
        EditConfig(dir, o => { o.Remove("init_values"); o["hidden_size"] = o["n_embd"]!.DeepClone(); o.Remove("n_embd"); });
        var c = LoadConfig(dir);
        Assert.Equal(64, c.NEmbd);
        Assert.Equal(Math.Sqrt(5280.0), c.InitValues.EmbedScale, 9);
    }

    [Fact]
    public void Init_values_given_without_embed_scale_is_an_error_as_in_the_official_model()
    {
        var (dir, m) = Saved(); m.Dispose();
        EditConfig(dir, o => o["init_values"] = new JsonObject { ["std"] = 0.01 });
        var e = Assert.Throws<RecurUserException>(() => LoadConfig(dir));
        Assert.Contains("init_values has no 'embed_scale'", e.Message);
    }

    [Fact]
    public void Absent_norm_eps_is_the_official_1e_minus_6()
    {
        var (dir, m) = Saved(); m.Dispose();
        Assert.Equal(1e-5, LoadConfig(dir).NormEps);
        EditConfig(dir, o => o.Remove("norm_eps"));
        Assert.Equal(1e-6, LoadConfig(dir).NormEps);
    }

    [Theory]
    [InlineData("rope_theta")]
    [InlineData("max_position_embeddings")]
    public void A_key_the_official_rotary_embedding_needs_is_an_error_when_absent(string key)
    {
        var (dir, m) = Saved(); m.Dispose();
        EditConfig(dir, o => o.Remove(key));
        var e = Assert.Throws<RecurUserException>(() => LoadConfig(dir));
        Assert.Contains($"missing key '{key}'", e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void N_layers_that_differs_from_the_sections_loads_with_a_notice()
    {
        var (dir, m) = Saved();
        using var _m = m;
        EditConfig(dir, o => o["n_layers"] = 7);
        var notes = new List<string>();
        using var loaded = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU, notes.Add);
        Assert.Contains(notes, n => n.Contains("n_layers 7") && n.Contains("(1 + 2 + 1)"));
        using var __ = no_grad();
        var ids = randint(0, 128, [1, 5], dtype: ScalarType.Int64);
        var s0 = randn(1, 5, 64) * 0.1;
        Assert.Equal(0f, MaxDiff(loaded.Forward(ids, 3, 0, s0: s0), m.Forward(ids, 3, 0, s0: s0)));
    }

    [Fact]
    public void Absent_tie_embeddings_means_tied_so_the_head_is_the_embedding()
    {
        var (dir, m) = Saved();
        using var _m = m;
        EditConfig(dir, o => o.Remove("tie_embeddings"));
        EditTensors(dir, l => l.RemoveAll(kv => kv.Key == "lm_head.weight"));
        using var tied = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        Assert.True(tied.Config.TieEmbeddings);
        Assert.Equal(0f, MaxDiff(tied.lm_head.weight!, m.transformer.wte.weight!));
        // A file that also carries lm_head.weight: the official tie_weights makes the head the embedding anyway.
        var (dir2, m2) = Saved(seed: 6);
        using var _m2 = m2;
        EditConfig(dir2, o => o["tie_embeddings"] = true);
        var notes = new List<string>();
        using var tied2 = RecurrentCheckpoint.Load(dir2, ScalarType.Float32, CPU, notes.Add);
        Assert.Equal(0f, MaxDiff(tied2.lm_head.weight!, m2.transformer.wte.weight!));
        Assert.True(MaxDiff(m2.lm_head.weight!, m2.transformer.wte.weight!) > 1e-3);
        Assert.Contains(notes, n => n.Contains("lm_head.weight"));
        // Recur saves what it holds: an untied head, written out, with tie_embeddings false.
        var again = Path.Combine(TestModels.TempDir(), "again");
        RecurrentCheckpoint.Save(tied, again);
        Assert.False(JsonNode.Parse(File.ReadAllText(Path.Combine(again, "config.json")))!["tie_embeddings"]!.GetValue<bool>());
        using var reloaded = RecurrentCheckpoint.Load(again, ScalarType.Float32, CPU);
        Assert.Equal(0f, MaxDiff(reloaded.lm_head.weight!, m.transformer.wte.weight!));
    }

    [Fact]
    public void Absent_qk_bias_means_biases_that_the_file_must_carry()
    {
        var (dir, m) = Saved(kvHeads: 4);
        using var _m = m;
        EditConfig(dir, o => o.Remove("qk_bias"));
        var e = Assert.Throws<RecurUserException>(() => RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU));
        Assert.Contains("missing tensor 'transformer.prelude.0.attn.qk_bias'", e.Message);
        // With zero biases the model is the bias-free one; a non-zero key bias changes the logits.
        EditTensors(dir, l =>
        {
            foreach (var sec in new[] { "prelude.0", "core_block.0", "core_block.1", "coda.0" })
                l.Add(new($"transformer.{sec}.attn.qk_bias", zeros(2, 1, 4, 16)));
        });
        using var __ = no_grad();
        var ids = randint(0, 128, [2, 6], dtype: ScalarType.Int64);
        var s0 = randn(2, 6, 64) * 0.1;
        using (var zero = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU))
        {
            Assert.True(zero.Config.QkBias);
            Assert.True(MaxDiff(zero.Forward(ids, 2, 0, s0: s0), m.Forward(ids, 2, 0, s0: s0)) <= 1e-5);
        }
        EditTensors(dir, l =>
        {
            int i = l.FindIndex(kv => kv.Key == "transformer.core_block.1.attn.qk_bias");
            l[i] = new(l[i].Key, randn(2, 1, 4, 16));
        });
        using var biased = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        Assert.True(MaxDiff(biased.Forward(ids, 2, 0, s0: s0), m.Forward(ids, 2, 0, s0: s0)) > 1e-3);
    }

    [Fact]
    public void Qk_bias_with_fewer_key_heads_is_refused_because_the_official_bias_cannot_broadcast()
    {
        var (dir, m) = Saved(kvHeads: 2); m.Dispose();
        EditConfig(dir, o => o.Remove("qk_bias"));
        var e = Assert.Throws<RecurUserException>(() => LoadConfig(dir));
        Assert.Contains("qk_bias is true", e.Message);
    }

    [Fact]
    public void Test_time_noise_mixes_the_state_with_gaussian_noise_before_each_recurrence()
    {
        var (dir, m) = Saved();
        using var _m = m;
        const double level = 0.5;
        EditConfig(dir, o => o["test_time_noise"] = level);
        using var noisy = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        Assert.Equal(level, noisy.Config.TestTimeNoise);
        using var __ = no_grad();
        var ids = randint(0, 128, [1, 5], dtype: ScalarType.Int64);
        var s0 = randn(1, 5, 64) * 0.1;
        var got = noisy.Forward(ids, Recurrence.Fixed(1, new Generator(11)), s0: s0);
        // "fixed": s ← s·(1 − n) + ε·n with n = test_time_noise · std · embed_scale, ε from the same generator.
        double n = level * m.Config.InitValues.Std * m.Config.InitValues.EmbedScale;
        using var gen = new Generator(11);
        var mixed = s0 * (1 - n) + randn([1, 5, 64], generator: gen) * n;
        Assert.True(MaxDiff(got, m.Forward(ids, 1, 0, s0: mixed)) <= 1e-5);
        Assert.True(MaxDiff(got, m.Forward(ids, 1, 0, s0: s0)) > 1e-4);
    }

    [Fact]
    public void Test_time_noise_off_by_default_and_unknown_types_are_refused()
    {
        var (dir, m) = Saved(); m.Dispose();
        EditConfig(dir, o => { o.Remove("test_time_noise"); o.Remove("test_time_noise_type"); });
        var c = LoadConfig(dir);
        Assert.Equal(0, c.TestTimeNoise);
        Assert.Equal("fixed", c.TestTimeNoiseType);
        EditConfig(dir, o => o["test_time_noise_type"] = "pink");
        Assert.Contains("test_time_noise_type 'pink'", Assert.Throws<RecurUserException>(() => LoadConfig(dir)).Message);
    }

    [Fact]
    public void Initial_state_is_scaled_by_the_embedding_scale_when_it_is_not_one()
    {
        var (dir, m) = Saved(); m.Dispose();
        EditConfig(dir, o => o["init_values"] = new JsonObject { ["std"] = 0.01, ["embed_scale"] = 8.0 });
        using var scaled = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var s = scaled.InitialState(zeros(400, 256), new Generator(3));
        Assert.True(s.abs().max().item<float>() <= 3 * 0.01 * 8 + 1e-7);
        Assert.InRange(s.std().item<float>(), 0.98658 * 0.08 * 0.99, 0.98658 * 0.08 * 1.01);
    }

    [Fact]
    public void A_model_recur_writes_spells_out_every_key_instead_of_relying_on_defaults()
    {
        var (dir, m) = Saved(); m.Dispose();
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        foreach (var (key, _) in RecurConfig.OfficialDefaults)
            Assert.True(cfg.ContainsKey(key), key);
        foreach (var key in new[] { "num_key_value_heads", "head_dim", "padded_vocab_size", "rope_theta", "max_position_embeddings" })
            Assert.True(cfg.ContainsKey(key), key);
        Assert.Equal(1.0, cfg["init_values"]!["embed_scale"]!.GetValue<double>());
        Assert.True(cfg["init_values"]!["std"] is not null);
        Assert.False(cfg["tie_embeddings"]!.GetValue<bool>());
        Assert.False(cfg["qk_bias"]!.GetValue<bool>());
        Assert.False(cfg.ContainsKey("tie_word_embeddings")); // breaks the official RavenConfig (RR README)
    }

    [Fact]
    public void The_docs_table_lists_every_official_default()
    {
        var root = SharedAssets.RepoRoot ?? throw new InvalidOperationException("Recur.sln not found above the test binaries");
        var text = File.ReadAllText(Path.Combine(root, "docs", "checkpoints.md"));
        foreach (var (key, _) in RecurConfig.OfficialDefaults)
            Assert.Contains($"`{key}`", text);
    }
}
