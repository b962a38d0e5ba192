using System.Text;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Checkpoints;

public class SafeTensorsTests
{
    [Fact]
    public void Round_trip_keeps_every_tensor_identical()
    {
        var dir = TestModels.TempDir();
        var path = Path.Combine(dir, "x.safetensors");
        var a = randn(3, 5);
        var b = randn(7).to(ScalarType.BFloat16);
        var c = arange(10, dtype: ScalarType.Int64).reshape(2, 5);
        var d = randn(2, 2).to(ScalarType.Float16);
        SafeTensorsFile.Save(path, [new("a", a), new("b", b), new("c", c), new("d", d)], new Dictionary<string, string> { ["format"] = "pt" });
        using var f = SafeTensorsFile.Open(path);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.True(TensorAssert.Same(f.Read("a"), a));
        Assert.True(TensorAssert.Same(f.Read("b"), b));
        Assert.True(TensorAssert.Same(f.Read("c"), c));
        Assert.True(TensorAssert.Same(f.Read("d"), d));
        Assert.Equal(ScalarType.BFloat16, f.Read("b").dtype);
        Assert.True(TensorAssert.Same(f.Read("b", ScalarType.Float32), b.to(ScalarType.Float32)));
    }

    [Fact]
    public void Model_save_and_sharded_load_give_identical_parameters()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 3);
        var dir = Path.Combine(TestModels.TempDir(), "sharded");
        HfCheckpoint.Save(m, dir, maxShardBytes: 40_000);
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors.index.json")));
        Assert.True(Directory.GetFiles(dir, "model-*-of-*.safetensors").Length > 2);
        using var loaded = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var want = m.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in loaded.named_parameters())
            Assert.True(TensorAssert.Same(p, want[name]), name);
    }

    [Fact]
    public void Bf16_save_loads_as_rounded_weights()
    {
        using var m = TestModels.Random(Presets.TinyTest, seed: 4);
        var dir = Path.Combine(TestModels.TempDir(), "bf16");
        HfCheckpoint.Save(m, dir, ScalarType.BFloat16);
        using var loaded = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var w = m.model.layers[0].self_attn.q_proj.weight!;
        Assert.True(TensorAssert.Same(loaded.model.layers[0].self_attn.q_proj.weight!, w.to(ScalarType.BFloat16).to(ScalarType.Float32)));
    }

    static string Write(byte[] bytes)
    {
        var p = Path.Combine(TestModels.TempDir(), "bad.safetensors");
        File.WriteAllBytes(p, bytes);
        return p;
    }

    static byte[] WithHeader(string json, int dataBytes)
    {
        var h = Encoding.UTF8.GetBytes(json);
        return [.. BitConverter.GetBytes((ulong)h.Length), .. h, .. new byte[dataBytes]];
    }

    [Theory]
    [InlineData("truncated")]
    [InlineData("header-length")]
    [InlineData("bad-json")]
    [InlineData("past-end")]
    [InlineData("size-mismatch")]
    [InlineData("bad-dtype")]
    public void Corrupted_files_fail_with_one_line_naming_the_file(string kind)
    {
        byte[] bytes = kind switch
        {
            "truncated" => [1, 2, 3],
            "header-length" => [.. BitConverter.GetBytes(1_000_000UL), .. new byte[16]],
            "bad-json" => WithHeader("{\"a\": {\"dtype\": ", 8),
            "past-end" => WithHeader("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8),
            "size-mismatch" => WithHeader("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16),
            "bad-dtype" => WithHeader("{\"w\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4),
            _ => throw new ArgumentException(kind),
        };
        var path = Write(bytes);
        var e = Assert.Throws<RecurUserException>(() => SafeTensorsFile.Open(path));
        Assert.StartsWith(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        if (kind is "past-end" or "size-mismatch" or "bad-dtype") Assert.Contains("'w'", e.Message);
    }
}
