using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Recurrent;

/// <summary>Bad shapes, layer maps and recurrent checkpoints fail with one clear line.</summary>
public class RetrofitInputTests
{
    [Theory]
    [InlineData("prelude=0-3,core=3-5,coda=6-7", "layer 3 is used twice")]
    [InlineData("prelude=0-1,core=4-9", "layer 8 is outside the base model's 0-7")]
    [InlineData("prelude=0-1,coda=6-7", "needs at least one layer")]
    [InlineData("prelude=3-1,core=4", "runs backwards")]
    [InlineData("head=0-1,core=4", "is not of the form")]
    [InlineData("prelude=a-b,core=4", "not A-B with integers")]
    public void Bad_layer_maps_are_refused(string text, string expected)
    {
        var e = Assert.Throws<RecurUserException>(() => LayerMap.Parse(text, 8));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Layer_map_must_agree_with_the_shape()
    {
        var e = Assert.Throws<RecurUserException>(() => LayerMap.Parse("prelude=0-1,core=4-5,coda=6-7", 8, (1, 2, 2)));
        Assert.Contains("Shape says (1,2,2)", e.Message);
        Assert.Equal(new[] { 4, 5 }, LayerMap.Parse("prelude=0-1,core=4-5,coda=6-7", 8, (2, 2, 2)).Core);
    }

    [Theory]
    [InlineData("4,8,4", 8, "needs 16 layers, but the base model has 8")]
    [InlineData("1,0,1", 8, "need p ≥ 0, r ≥ 1, c ≥ 0")]
    public void Shapes_that_do_not_fit_are_refused(string shape, int layers, string expected)
    {
        var e = Assert.Throws<RecurUserException>(() => { var (p, r, c) = Retrofit.ParseShape(shape); LayerMap.Default(layers, p, r, c); });
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("4,8", "must be three integers")]
    [InlineData("x,y,z", "must be three integers")]
    public void Malformed_shapes_are_refused(string shape, string expected) =>
        Assert.Contains(expected, Assert.Throws<RecurUserException>(() => Retrofit.ParseShape(shape)).Message);

    static string SavedRecurrent()
    {
        using var b = TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6 }, 5);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1) });
        var dir = Path.Combine(TestModels.TempDir(), "rec");
        RecurrentCheckpoint.Save(m, dir);
        return dir;
    }

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        var p = Path.Combine(dir, "config.json");
        var o = (JsonObject)JsonNode.Parse(File.ReadAllText(p))!;
        edit(o);
        File.WriteAllText(p, o.ToJsonString());
    }

    [Fact]
    public void A_config_with_more_blocks_than_the_file_is_an_error_naming_the_missing_tensor()
    {
        var dir = SavedRecurrent();
        EditConfig(dir, o => { o["n_layers_in_coda"] = 2; o["n_layers"] = 5; });
        var e = Assert.Throws<RecurUserException>(() => RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU));
        Assert.Contains("missing tensor 'transformer.coda.1.", e.Message);
    }

    [Fact]
    public void A_config_with_fewer_blocks_than_the_file_is_an_error_naming_the_extra_tensor()
    {
        var dir = SavedRecurrent();
        EditConfig(dir, o => { o["n_layers_in_recurrent_block"] = 1; o["n_layers"] = 3; });
        var e = Assert.Throws<RecurUserException>(() => RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU));
        Assert.Contains("unexpected tensor 'transformer.core_block.1.", e.Message);
    }

    [Fact]
    public void Inconsistent_widths_are_refused()
    {
        var dir = SavedRecurrent();
        EditConfig(dir, o => { o["n_layers"] = 4; o["n_embd"] = 32; });
        Assert.Contains("has shape", Assert.Throws<RecurUserException>(() => RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU)).Message);
    }

    [Fact]
    public void Huginn_leftover_tensors_are_ignored_with_a_notice()
    {
        var dir = SavedRecurrent();
        var p = Path.Combine(dir, "model.safetensors");
        List<KeyValuePair<string, Tensor>> list;
        using (var f = SafeTensorsFile.Open(p)) list = f.Entries.Keys.Select(k => new KeyValuePair<string, Tensor>(k, f.Read(k))).ToList();
        list.Add(new("transformer.core_block.0.norm_3.weight", ones(64)));
        list.Add(new("freqs_cis", zeros(4, 8)));
        SafeTensorsFile.Save(p, list);
        var notes = new List<string>();
        using var m = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU, notes.Add);
        Assert.Contains(notes, n => n.Contains("ignored 2 tensor(s)"));
    }

    [Fact]
    public void The_released_checkpoint_layout_has_exactly_the_documented_names()
    {
        var dir = SavedRecurrent();
        using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var names = f.Entries.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        Assert.Contains("transformer.wte.weight", names);
        Assert.Contains("transformer.adapter.weight", names);
        Assert.Contains("transformer.ln_f.weight", names);
        Assert.Contains("lm_head.weight", names);
        Assert.Equal([64, 128], f.Entries["transformer.adapter.weight"].Shape);
        Assert.Equal([(4 + 2 * 2) * 16, 64], f.Entries["transformer.core_block.1.attn.Wqkv.weight"].Shape);
        Assert.Equal([2 * 176, 64], f.Entries["transformer.coda.0.mlp.fc.weight"].Shape);
        foreach (var n in names.Where(n => n.Contains(".prelude.") || n.Contains(".core_block.") || n.Contains(".coda.")))
            Assert.Matches(@"^transformer\.(prelude|core_block|coda)\.\d+\.(attn\.(Wqkv|proj)|mlp\.(fc|proj)|norm_1|norm_2)\.weight$", n);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        foreach (var key in new[] { "n_embd", "n_heads", "num_key_value_heads", "n_layers", "n_layers_in_prelude", "n_layers_in_recurrent_block",
                     "n_layers_in_coda", "mean_recurrence", "mean_backprop_depth", "init_values", "norm_eps", "rope_theta", "tie_embeddings", "model_type" })
            Assert.True(cfg.ContainsKey(key), key);
        Assert.Equal("huginn_raven", cfg["model_type"]!.GetValue<string>());
    }
}
