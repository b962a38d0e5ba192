using System.Globalization;
using System.Security.Cryptography;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using Recur.Training;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Checkpoints;

/// <summary>
/// Loading builds parameters over a private mapping of the safetensors files (StateLoader.Bind): the same values as
/// copying them in, no copy of the weights, and a model that can still be trained and saved over its own folder.
/// </summary>
public class MappedLoadTests
{
    static ModelConfig Config(bool tied) => Presets.TinyTest with { TieWordEmbeddings = tied };

    static Tensor Ids() => tensor(new long[] { 1, 5, 9, 17, 33, 65, 100, 127 }, [1, 8]);

    static string Save(DecoderModel m, ScalarType dtype, bool sharded)
    {
        var dir = Path.Combine(TestModels.TempDir(), "model");
        HfCheckpoint.Save(m, dir, dtype, maxShardBytes: sharded ? 20_000 : 4L << 30);
        Assert.Equal(sharded, File.Exists(Path.Combine(dir, "model.safetensors.index.json")));
        return dir;
    }

    /// <summary>True when the tensor's first byte lies in a mapping of a file in <paramref name="folder"/> (/proc/self/maps).</summary>
    static bool MappedFrom(Tensor t, string folder)
    {
        ulong a = (ulong)Gemv.Address(t);
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length < 6 || !parts[5].StartsWith(folder, StringComparison.Ordinal)) continue;
            var range = parts[0].Split('-');
            ulong lo = ulong.Parse(range[0], NumberStyles.HexNumber), hi = ulong.Parse(range[1], NumberStyles.HexNumber);
            if (a >= lo && a < hi) return true;
        }
        return false;
    }

    static string Hash(string folder) => string.Join(",", Directory.GetFiles(folder).Order(StringComparer.Ordinal)
        .Select(f => Path.GetFileName(f) + ":" + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))));

    [Theory]
    [InlineData(ScalarType.Float32, false, false)]
    [InlineData(ScalarType.Float32, true, true)]
    [InlineData(ScalarType.BFloat16, false, true)]
    [InlineData(ScalarType.BFloat16, true, false)]
    public void Mapped_load_gives_the_copied_load_s_parameters_and_logits_without_copying(ScalarType dtype, bool sharded, bool tied)
    {
        using var m = TestModels.Random(Config(tied), seed: 11);
        var dir = Save(m, dtype, sharded);
        using var mapped = HfCheckpoint.Load(dir, dtype, CPU, map: true);
        using var copied = HfCheckpoint.Load(dir, dtype, CPU, map: false);
        var want = copied.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(want.Keys.Order(), mapped.named_parameters().Select(p => p.name).Order());
        foreach (var (name, p) in mapped.named_parameters())
        {
            Assert.True(TensorAssert.Same(p, want[name]), name);
            Assert.True(p.requires_grad, name);
            Assert.True(MappedFrom(p, dir), $"{name} is not over the file's mapping");
            Assert.False(MappedFrom(want[name], dir), $"{name} of the copying load is over the file's mapping");
        }
        using (no_grad())
        {
            using var ids = Ids();
            Assert.True(TensorAssert.Same(mapped.Forward(ids), copied.Forward(ids)));
        }
    }

    [Fact]
    public void A_stored_dtype_other_than_the_wanted_one_is_converted_as_before()
    {
        using var m = TestModels.Random(Config(tied: false), seed: 12);
        var dir = Save(m, ScalarType.BFloat16, sharded: false);
        using var mapped = HfCheckpoint.Load(dir, ScalarType.Float32, CPU, map: true);
        using var copied = HfCheckpoint.Load(dir, ScalarType.Float32, CPU, map: false);
        var want = copied.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in mapped.named_parameters())
        {
            Assert.Equal(ScalarType.Float32, p.dtype);
            Assert.True(TensorAssert.Same(p, want[name]), name);
            Assert.False(MappedFrom(p, dir), name);
        }
    }

    [Fact]
    public void A_mapped_model_trains_and_its_file_stays_unchanged()
    {
        using var m = TestModels.Random(Config(tied: true), seed: 13);
        var dir = Save(m, ScalarType.Float32, sharded: false);
        string before = Hash(dir);
        using var model = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var original = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        model.train();
        var opt = new AdamW(model.named_parameters().Select(p => (p.name, p.parameter)), new AdamWOptions(LearningRate: 1e-2));
        for (int step = 0; step < 2; step++)
        {
            using var scope = NewDisposeScope();
            using var ids = Ids();
            var logits = model.Forward(ids);
            var loss = nn.functional.cross_entropy(logits[0, ..^1], ids[0, 1..]);
            loss.backward();
            opt.Step();
            opt.ZeroGrad();
        }
        foreach (var (name, p) in model.named_parameters())
            Assert.False(TensorAssert.Same(p, original[name]), $"{name} did not change");
        Assert.Equal(before, Hash(dir));
        using var again = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        foreach (var (name, p) in again.named_parameters())
            Assert.True(TensorAssert.Same(p, original[name]), name);
    }

    [Fact]
    public void Saving_over_the_folder_a_model_was_mapped_from_keeps_the_model_and_writes_its_values()
    {
        using var m = TestModels.Random(Config(tied: false), seed: 14);
        var dir = Save(m, ScalarType.Float32, sharded: false);
        using var model = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        using (no_grad()) model.model.layers[0].mlp.up_proj.weight.mul_(2); // written in place: copy-on-write pages
        using var ids = Ids();
        Tensor logits;
        using (no_grad()) logits = model.Forward(ids);
        HfCheckpoint.Save(model, dir, force: true);
        using (no_grad()) Assert.True(TensorAssert.Same(model.Forward(ids), logits));
        using var reloaded = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var want = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in reloaded.named_parameters())
            Assert.True(TensorAssert.Same(p, want[name]), name);
        Directory.Delete(dir, recursive: true);
        using (no_grad()) Assert.True(TensorAssert.Same(reloaded.Forward(ids), logits));
    }

    [Fact]
    public void A_recurrent_folder_maps_to_the_copied_load_s_parameters_and_logits()
    {
        using var b = TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6 }, seed: 15);
        using var r = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), StateStd = 0 });
        var dir = Path.Combine(TestModels.TempDir(), "recurrent");
        RecurrentCheckpoint.Save(r, dir, ScalarType.BFloat16);
        using var mapped = RecurrentCheckpoint.Load(dir, ScalarType.BFloat16, CPU, map: true);
        using var copied = RecurrentCheckpoint.Load(dir, ScalarType.BFloat16, CPU, map: false);
        var want = copied.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in mapped.named_parameters())
        {
            Assert.True(TensorAssert.Same(p, want[name]), name);
            Assert.True(MappedFrom(p, dir), name);
        }
        using (no_grad())
        {
            using var ids = Ids();
            Assert.True(TensorAssert.Same(mapped.Forward(ids), copied.Forward(ids)));
        }
    }

    [Fact]
    public void A_tied_recurrent_head_mapped_from_the_embedding_is_its_own_copy()
    {
        using var b = TestModels.Random(Presets.TinyTest with { NumHiddenLayers = 6 }, seed: 16);
        using var r = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), StateStd = 0 });
        var dir = Path.Combine(TestModels.TempDir(), "tied");
        RecurrentCheckpoint.Save(r, dir, ScalarType.Float32);
        var cfg = Path.Combine(dir, "config.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        json["tie_embeddings"] = true;
        File.WriteAllText(cfg, json.ToJsonString());
        using var m = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var wte = m.transformer.wte.weight!;
        var head = m.lm_head.weight!;
        Assert.True(TensorAssert.Same(head, wte));
        Assert.NotEqual(Gemv.Address(wte), Gemv.Address(head));
        using (no_grad()) head.mul_(2);
        Assert.False(TensorAssert.Same(head, wte));
    }

    [Fact]
    public void A_tensor_at_an_offset_its_element_size_does_not_divide_is_read_instead_of_mapped()
    {
        var path = Path.Combine(TestModels.TempDir(), "odd.safetensors");
        var odd = randn(3).to(ScalarType.BFloat16); // 6 bytes: the next tensor starts 2 bytes past a multiple of 4
        var w = randn(4, 5);
        SafeTensorsFile.Save(path, [new("odd", odd), new("w", w)]);
        using var f = SafeTensorsFile.Open(path);
        Assert.Null(f.Map("w"));
        Assert.True(TensorAssert.Same(f.Read("w"), w));
        using var o = f.Map("odd");
        Assert.NotNull(o);
        Assert.True(TensorAssert.Same(o!, odd));
    }

    [Fact]
    public void A_skeleton_model_has_meta_parameters_and_no_initialisation_cost_outside_its_scope()
    {
        DecoderModel skeleton;
        using (ParameterPlacement.Skeleton()) skeleton = new DecoderModel(Config(tied: false));
        using var _ = skeleton;
        Assert.All(skeleton.named_parameters(), p => Assert.Equal(TorchSharp.DeviceType.META, p.parameter.device.type));
        Assert.Equal(Presets.TinyTest.VocabSize, skeleton.model.embed_tokens.weight!.shape[0]);
        using var normal = new DecoderModel(Config(tied: false));
        Assert.All(normal.named_parameters(), p => Assert.Equal(TorchSharp.DeviceType.CPU, p.parameter.device.type));
    }
}
