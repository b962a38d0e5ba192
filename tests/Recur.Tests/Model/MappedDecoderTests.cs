using System.Text;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// The libtorch-free generation path (Engine/MappedDecoder.cs) against the op-by-op forward, the fast decoder and
/// Generation.Generate, on tiny random Llama and OLMo-2 folders; and what it does with folders it cannot or must not read.
/// </summary>
public class MappedDecoderTests
{
    static ModelConfig Config(string name) => name switch
    {
        "tied" => Presets.TinyTest with { TieWordEmbeddings = true },
        "llama3-rope" => Presets.TinyTest with { RopeScaling = new RopeScaling { RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 16 } },
        "olmo2" => Presets.TinyOlmo2Test,
        "olmo2-tied" => Presets.TinyOlmo2Test with { TieWordEmbeddings = true },
        _ => Presets.TinyTest, // "gqa" and "sharded": 4 query heads over 2 KV heads
    };

    /// <summary>A random model of <paramref name="name"/>'s config saved in <paramref name="dtype"/> (several shards for "sharded").</summary>
    static string Folder(string name, ScalarType dtype, long seed = 3)
    {
        string dir = Path.Combine(TestModels.TempDir(), "model");
        using var m = TestModels.Random(Config(name), seed);
        HfCheckpoint.Save(m, dir, dtype, maxShardBytes: name == "sharded" ? 40_000 : 4L << 30);
        return dir;
    }

    static MappedDecoder Open(string dir, bool bf16)
    {
        var m = MappedDecoder.TryOpen(dir, bf16, out string reason);
        Assert.True(m is not null, $"did not open: {reason}");
        return m!;
    }

    static readonly int[] Tokens = [1, 7, 3, 9, 4, 100, 11, 58, 2, 127, 0, 33, 64, 5];

    public static TheoryData<string> Models => new() { "gqa", "tied", "llama3-rope", "olmo2", "olmo2-tied", "sharded" };

    [Theory, MemberData(nameof(Models))]
    public void Fp32_logits_match_the_op_by_op_forward_at_every_position(string name)
    {
        string dir = Folder(name, ScalarType.Float32);
        using var reference = HfCheckpoint.Load(dir, ScalarType.Float32, CPU);
        using var mapped = Open(dir, bf16: false);
        using var session = mapped.Begin(4); // small: the cache grows during the test
        using var _ = no_grad();
        using var all = reference.Forward(tensor(Tokens.Select(t => (long)t).ToArray()).reshape(1, Tokens.Length)); // [1, S, V]
        for (int t = 0; t < Tokens.Length; t++)
        {
            var got = session.Forward(Tokens[t]);
            var want = all[0, t].data<float>().ToArray();
            float diff = got.Zip(want).Max(p => Math.Abs(p.First - p.Second));
            Assert.True(diff <= 1e-4, $"{name}, position {t}: max |Δlogit| {diff}");
        }
    }

    /// <summary>
    /// In bf16 both fast paths keep fp32 activations over the same weight bytes: the mapped decoder's logits are the fast
    /// decoder's bit for bit (fed one token at a time), and close to the op-by-op forward, which rounds after every op.
    /// </summary>
    [Theory]
    [InlineData("gqa")]
    [InlineData("olmo2")]
    [InlineData("tied")]
    public void Bf16_logits_are_the_fast_decoders_bit_for_bit(string name)
    {
        string dir = Folder(name, ScalarType.BFloat16);
        using var reference = HfCheckpoint.Load(dir, ScalarType.BFloat16, CPU);
        using var mapped = Open(dir, bf16: true);
        using var session = mapped.Begin(64);
        using var _ = no_grad();
        using var cache = new KvCache(reference.CacheSlots, 64);
        using var all = reference.Forward(tensor(Tokens.Select(t => (long)t).ToArray()).reshape(1, Tokens.Length));
        float scale = all.abs().max().item<float>();
        for (int t = 0; t < Tokens.Length; t++)
        {
            var got = session.Forward(Tokens[t]);
            using var fast = FastDecoder.TryForward(reference, tensor(new long[] { Tokens[t] }).reshape(1, 1), null, cache);
            Assert.NotNull(fast);
            Assert.Equal(fast!.reshape(-1).data<float>().ToArray(), got);
            var op = all[0, t].data<float>().ToArray();
            float diff = got.Zip(op).Max(p => Math.Abs(p.First - p.Second));
            Assert.True(diff <= 0.05f * scale, $"{name}, position {t}: max |Δlogit| {diff} at logit scale {scale}");
        }
    }

    public static TheoryData<string, string, int, int> GreedyCases => new()
    {
        { "gqa", "fp32", 1, 1 }, { "gqa", "fp32", 4, 20 }, { "tied", "fp32", 9, 40 }, { "olmo2", "fp32", 4, 30 }, { "olmo2-tied", "fp32", 1, 12 },
        { "gqa", "bf16", 4, 20 }, { "olmo2", "bf16", 1, 30 }, { "tied", "bf16", 9, 16 },
    };

    /// <summary>The tokens `recur generate` prints today through libtorch (prefill op by op, then the fast decoder), for several prompts and lengths.</summary>
    [Theory, MemberData(nameof(GreedyCases))]
    public void Greedy_ids_equal_generation_through_libtorch(string name, string dtype, int promptLength, int maxNew)
    {
        var dt = dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
        string dir = Folder(name, dt, seed: 11);
        var prompt = Enumerable.Range(0, promptLength).Select(i => (i * 37 + 1) % 128).ToArray();
        int[] stops = [2];
        using var reference = HfCheckpoint.Load(dir, dt, CPU);
        var want = Generation.Generate(reference, [prompt], new GenerationOptions(maxNew, null, stops))[0];
        using var mapped = Open(dir, dt == ScalarType.BFloat16);
        var seen = new List<int>();
        var got = mapped.Generate(prompt, maxNew, stops, seen.Add);
        Assert.Equal(want, got);
        Assert.Equal(got, seen);
    }

    [Theory]
    [InlineData("gqa", "fp32")]
    [InlineData("olmo2", "bf16")]
    public void A_prompt_in_rows_leaves_what_one_token_at_a_time_leaves(string name, string dtype)
    {
        string dir = Folder(name, dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32);
        using var mapped = Open(dir, dtype == "bf16");
        using var rows = mapped.Begin(4);
        using var single = mapped.Begin(4);
        float[] want = [];
        foreach (int t in Tokens[..9]) want = single.Forward(t);
        Assert.Equal(want, rows.Prompt(Tokens[..9]));
        foreach (int t in Tokens[9..]) Assert.Equal(single.Forward(t).ToArray(), rows.Forward(t));
    }

    [Fact]
    public void A_cache_that_grows_mid_generation_keeps_what_it_held()
    {
        string dir = Folder("gqa", ScalarType.Float32);
        using var mapped = Open(dir, bf16: false);
        using var small = mapped.Begin(1);
        using var large = mapped.Begin(64);
        foreach (int t in Tokens) Assert.Equal(large.Forward(t), small.Forward(t));
    }

    [Fact]
    public void Weights_in_another_dtype_are_left_to_the_libtorch_loader()
    {
        string dir = Folder("gqa", ScalarType.BFloat16);
        Assert.Null(MappedDecoder.TryOpen(dir, bf16: false, out string reason));
        Assert.Contains("stored as BF16", reason);
        string fp32 = Folder("olmo2", ScalarType.Float32);
        Assert.Null(MappedDecoder.TryOpen(fp32, bf16: true, out reason));
        Assert.Contains("stored as F32", reason);
    }

    [Fact]
    public void A_tied_models_extra_head_copy_is_ignored_with_a_note()
    {
        string dir = Folder("tied", ScalarType.Float32);
        var tensors = ReadAll(dir);
        tensors.Add(new("lm_head.weight", tensors.First(kv => kv.Key == "model.embed_tokens.weight").Value.clone()));
        SafeTensorsFile.Save(Path.Combine(dir, "model.safetensors"), tensors);
        var notes = new List<string>();
        using var mapped = MappedDecoder.TryOpen(dir, false, out _, notes.Add);
        Assert.NotNull(mapped);
        Assert.Equal(["ignored 1 tensor(s) the model does not use: lm_head.weight"], notes);
        foreach (var (_, t) in tensors) t.Dispose();
    }

    // ---- hostile folders: one error naming the file and the tensor, the libtorch loader's message ----

    static List<KeyValuePair<string, Tensor>> ReadAll(string dir)
    {
        using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        return [.. f.Entries.Keys.Select(k => new KeyValuePair<string, Tensor>(k, f.Read(k)))];
    }

    /// <summary>The message of the error opening <paramref name="dir"/> through each loader; they must agree.</summary>
    static string Refusal(string dir, bool bf16 = false)
    {
        var mapped = Assert.Throws<RecurUserException>(() => MappedDecoder.TryOpen(dir, bf16, out _));
        var torch = Assert.Throws<RecurUserException>(() => HfCheckpoint.Load(dir, bf16 ? ScalarType.BFloat16 : ScalarType.Float32, CPU).Dispose());
        Assert.Equal(torch.Message, mapped.Message);
        Assert.DoesNotContain('\n', mapped.Message);
        return mapped.Message;
    }

    /// <summary>Rewrites the JSON header of a folder's model.safetensors (the data section stays as it was).</summary>
    static void EditHeader(string dir, Action<JsonObject> edit)
    {
        string file = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        long n = BitConverter.ToInt64(bytes, 0);
        var header = (JsonObject)JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n))!;
        edit(header);
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - json.Length % 8) % 8;
        using var fs = File.Create(file);
        fs.Write(BitConverter.GetBytes((long)(json.Length + pad)));
        fs.Write(json);
        for (int i = 0; i < pad; i++) fs.WriteByte((byte)' ');
        fs.Write(bytes, (int)(8 + n), (int)(bytes.Length - 8 - n));
    }

    [Fact]
    public void A_truncated_file_is_refused_naming_the_file_and_tensor()
    {
        string dir = Folder("gqa", ScalarType.Float32);
        string file = Path.Combine(dir, "model.safetensors");
        using (var fs = File.OpenWrite(file)) fs.SetLength(fs.Length - 1000);
        string message = Refusal(dir);
        Assert.Contains(file, message);
        Assert.Contains("run past the end", message);
    }

    [Fact]
    public void An_absurd_offset_is_refused_naming_the_file_and_tensor()
    {
        string dir = Folder("gqa", ScalarType.Float32);
        EditHeader(dir, h => h["model.layers.3.mlp.up_proj.weight"]!["data_offsets"] = new JsonArray(1L << 50, (1L << 50) + 176 * 64 * 4));
        string message = Refusal(dir);
        Assert.Contains("model.layers.3.mlp.up_proj.weight", message);
        Assert.Contains("model.safetensors", message);
    }

    [Fact]
    public void A_dtype_that_disagrees_with_the_bytes_is_refused()
    {
        string dir = Folder("gqa", ScalarType.Float32);
        EditHeader(dir, h => h["model.layers.2.self_attn.o_proj.weight"]!["dtype"] = "F64");
        string message = Refusal(dir);
        Assert.Contains("model.layers.2.self_attn.o_proj.weight", message);
    }

    [Fact]
    public void A_deep_tensor_of_the_wrong_shape_is_refused_naming_it()
    {
        // Layer 0's shapes are checked against the config before loading (WeightCheck); a later layer's by the loaders.
        string dir = Folder("gqa", ScalarType.Float32);
        var tensors = ReadAll(dir);
        int i = tensors.FindIndex(kv => kv.Key == "model.layers.2.mlp.down_proj.weight");
        tensors[i] = new(tensors[i].Key, tensors[i].Value.t().contiguous());
        SafeTensorsFile.Save(Path.Combine(dir, "model.safetensors"), tensors);
        foreach (var (_, t) in tensors) t.Dispose();
        string message = Refusal(dir);
        Assert.Contains("tensor 'model.layers.2.mlp.down_proj.weight' has shape [176, 64], expected [64, 176]", message);
    }

    [Fact]
    public void Missing_and_unexpected_tensors_are_refused_as_the_libtorch_loader_refuses_them()
    {
        string dir = Folder("olmo2", ScalarType.BFloat16);
        EditHeader(dir, h => h.Remove("model.layers.1.self_attn.k_norm.weight"));
        Assert.Contains("missing tensor 'model.layers.1.self_attn.k_norm.weight'", Refusal(dir, bf16: true));
        string other = Folder("gqa", ScalarType.Float32);
        var tensors = ReadAll(other);
        tensors.Add(new("model.layers.0.self_attn.q_proj.bias", zeros(64)));
        SafeTensorsFile.Save(Path.Combine(other, "model.safetensors"), tensors);
        foreach (var (_, t) in tensors) t.Dispose();
        Assert.Contains("unexpected tensor 'model.layers.0.self_attn.q_proj.bias'", Refusal(other));
    }
}
