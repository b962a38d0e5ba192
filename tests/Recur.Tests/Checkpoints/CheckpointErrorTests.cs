using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Checkpoints;

public class CheckpointErrorTests
{
    static RecurUserException LoadFails(string dir) =>
        Assert.Throws<RecurUserException>(() => { using var _ = ModelLoader.Load(dir, ScalarType.Float32, CPU); });

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        var p = Path.Combine(dir, "config.json");
        var o = (JsonObject)JsonNode.Parse(File.ReadAllText(p))!;
        edit(o);
        File.WriteAllText(p, o.ToJsonString());
    }

    static void EditWeights(string dir, Func<List<KeyValuePair<string, Tensor>>, List<KeyValuePair<string, Tensor>>> edit)
    {
        var p = Path.Combine(dir, "model.safetensors");
        List<KeyValuePair<string, Tensor>> list;
        using (var f = SafeTensorsFile.Open(p)) list = f.Entries.Keys.Select(k => new KeyValuePair<string, Tensor>(k, f.Read(k))).ToList();
        SafeTensorsFile.Save(p, edit(list));
    }

    [Fact]
    public void Missing_config_is_named()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        File.Delete(Path.Combine(dir, "config.json"));
        Assert.Contains("config.json", LoadFails(dir).Message);
    }

    [Fact]
    public void Missing_weights_are_named()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        File.Delete(Path.Combine(dir, "model.safetensors"));
        Assert.Contains("no weights found", LoadFails(dir).Message);
    }

    [Fact]
    public void Unsupported_model_type_is_named()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        EditConfig(dir, o => o["model_type"] = "gpt2");
        var e = LoadFails(dir);
        Assert.Contains("model_type 'gpt2'", e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Wrongly_typed_config_key_is_named()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        EditConfig(dir, o => o["hidden_size"] = "wide");
        Assert.Contains("hidden_size", LoadFails(dir).Message);
    }

    [Fact]
    public void Inconsistent_heads_are_refused()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        EditConfig(dir, o => o["num_key_value_heads"] = 3);
        Assert.Contains("num_key_value_heads", LoadFails(dir).Message);
    }

    [Fact]
    public void Missing_tensor_is_named()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        EditWeights(dir, l => l.Where(kv => kv.Key != "model.layers.1.mlp.up_proj.weight").ToList());
        Assert.Contains("missing tensor 'model.layers.1.mlp.up_proj.weight'", LoadFails(dir).Message);
    }

    [Fact]
    public void Extra_tensor_is_named()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        EditWeights(dir, l => [.. l, new("model.layers.9.mlp.up_proj.weight", zeros(2, 2))]);
        Assert.Contains("unexpected tensor 'model.layers.9.mlp.up_proj.weight'", LoadFails(dir).Message);
    }

    [Fact]
    public void Misshaped_tensor_is_named_with_both_shapes()
    {
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        EditWeights(dir, l => l.Select(kv => kv.Key == "model.norm.weight" ? new KeyValuePair<string, Tensor>(kv.Key, ones(65)) : kv).ToList());
        var e = LoadFails(dir);
        Assert.Contains("'model.norm.weight' has shape [65], expected [64]", e.Message);
    }

    [Fact]
    public void Missing_shard_is_named()
    {
        using var m = TestModels.Random(Presets.TinyTest);
        var dir = Path.Combine(TestModels.TempDir(), "sharded");
        HfCheckpoint.Save(m, dir, maxShardBytes: 40_000);
        File.Delete(Directory.GetFiles(dir, "model-00002-of-*.safetensors")[0]);
        Assert.Contains("model-00002-of-", LoadFails(dir).Message);
    }

    [Fact]
    public void Saving_refuses_to_overwrite_without_force()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 99);
        var dir = TestModels.SaveRandom(Presets.TinyTest);
        var before = File.ReadAllBytes(Path.Combine(dir, "model.safetensors"));
        Assert.Throws<RecurUserException>(() => HfCheckpoint.Save(m, dir));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        HfCheckpoint.Save(m, dir, force: true);
        Assert.NotEqual(before, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
    }

    [Fact]
    public void Llama2c_file_of_wrong_size_is_refused()
    {
        var p = Path.Combine(TestModels.TempDir(), "bad.bin");
        var header = new[] { 64, 172, 5, 8, 4, 512, 512 };
        File.WriteAllBytes(p, [.. header.SelectMany(BitConverter.GetBytes), .. new byte[1000]]);
        var e = LoadFails(p);
        Assert.Contains("bytes", e.Message);
        Assert.StartsWith(p, e.Message);
    }
}
