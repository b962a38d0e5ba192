using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Checkpoints;

/// <summary>Tests that measure this process's peak memory: nothing else may allocate beside them.</summary>
[CollectionDefinition("PeakMemory", DisableParallelization = true)]
public sealed class PeakMemoryCollection;

/// <summary>Peak resident memory of this process, resettable (Linux: /proc/self/clear_refs, VmHWM).</summary>
static class PeakMemory
{
    /// <summary>Resets the peak to the current resident size; false where the kernel does not allow it.</summary>
    public static bool Reset()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>Peak resident bytes since the last reset (VmHWM), or the current working set where unavailable.</summary>
    public static long Bytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        return Environment.WorkingSet;
    }
}

/// <summary>
/// Model folders written to make the loader allocate before it checks: every one must fail with one line naming
/// the file and key, quickly and without growing memory. The fuzz test runs alone (no other test's allocations
/// move the peak it measures).
/// </summary>
[Collection("PeakMemory")]
public sealed class HostileFolderTests
{
    const long MemoryCap = 400L << 20; // far below what any of the hostile configs would allocate (GBs)

    static string Decoder() => TestModels.SaveRandom(Presets.TinyTest, seed: 1);

    static void SetConfig(string dir, string key, JsonNode? value)
    {
        var path = Path.Combine(dir, "config.json");
        var cfg = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        cfg[key] = value;
        File.WriteAllText(path, cfg.ToJsonString());
    }

    /// <summary>The load fails with a one-line user error, within 10 s and without the peak RSS growing past the cap.</summary>
    static string FailsCheaply(string path)
    {
        PeakMemory.Reset();
        long before = PeakMemory.Bytes();
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<RecurUserException>(() => { using var m = ModelLoader.Load(path, ScalarType.Float32, CPU); });
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed}");
        long grew = PeakMemory.Bytes() - before;
        Assert.True(grew < MemoryCap, $"peak memory grew by {grew >> 20} MiB before the error: {e.Message}");
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void A_billion_layers_fail_on_the_key_before_allocating()
    {
        string dir = Decoder();
        SetConfig(dir, "num_hidden_layers", 1_000_000_000);
        string msg = FailsCheaply(dir);
        Assert.Contains("num_hidden_layers is 1000000000", msg);
        Assert.Contains("config.json", msg);
    }

    [Fact]
    public void A_vocab_size_the_file_does_not_hold_fails_on_the_key_before_allocating()
    {
        string dir = Decoder();
        SetConfig(dir, "vocab_size", 4_000_000);
        string msg = FailsCheaply(dir);
        Assert.Contains("vocab_size", msg);
        Assert.Contains("[4000000, 64]", msg);
    }

    [Fact]
    public void An_intermediate_size_the_file_does_not_hold_fails_on_the_key()
    {
        string dir = Decoder();
        SetConfig(dir, "intermediate_size", 1 << 30);
        Assert.Contains("intermediate_size", FailsCheaply(dir));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    [InlineData(2_000_000_000)]
    public void Max_position_embeddings_out_of_range_is_refused(int positions)
    {
        string dir = Decoder();
        SetConfig(dir, "max_position_embeddings", positions);
        Assert.Contains("'max_position_embeddings'", FailsCheaply(dir));
    }

    [Fact]
    public void A_recurrent_config_with_mean_recurrence_2e9_is_refused()
    {
        string dir = ChatModels.Recurrent();
        SetConfig(dir, "mean_recurrence", 2_000_000_000);
        Assert.Contains("'mean_recurrence'", FailsCheaply(dir));
        SetConfig(dir, "mean_recurrence", 4);
        SetConfig(dir, "n_layers_in_recurrent_block", 100_000_000);
        Assert.Contains("n_layers_in_recurrent_block", FailsCheaply(dir));
    }

    [Theory]
    [InlineData("1000000000")]
    [InlineData("adaptive:kl=5e-4,max=1000000000")]
    [InlineData("4,2000")]
    public void Recurrences_beyond_the_limit_are_refused_when_parsed(string text)
    {
        // The library names its parameter; a CLI verb passes its flag's name.
        var e = Assert.Throws<RecurUserException>(() => RecurrenceSetting.ParseList(text));
        Assert.StartsWith("recurrences", e.Message);
        Assert.Contains(WeightCheck.MaxRecurrence.ToString(), e.Message);
        var cli = Assert.Throws<RecurUserException>(() => RecurrenceSetting.ParseList(text, "--recurrences"));
        Assert.StartsWith("--recurrences", cli.Message);
    }

    [Fact]
    public void A_llama2c_vocab_of_int_min_is_an_implausible_header()
    {
        string path = Path.Combine(TestModels.TempDir(), "m.bin");
        using (var w = new BinaryWriter(File.Create(path)))
        {
            foreach (int v in new[] { 64, 176, 2, 4, 4, int.MinValue, 256 }) w.Write(v);
            w.Write(new byte[1024]);
        }
        string msg = FailsCheaply(path);
        Assert.Contains(path, msg);
        Assert.Contains("vocab_size -2147483648", msg);
    }

    /// <summary>Rewrites model.safetensors with a new JSON header and the same data bytes.</summary>
    static void WriteHeader(string file, string json, byte[] data)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        using var fs = File.Create(file);
        fs.Write(BitConverter.GetBytes((ulong)bytes.Length));
        fs.Write(bytes);
        fs.Write(data);
    }

    static (string Header, byte[] Data) Split(string file)
    {
        var all = File.ReadAllBytes(file);
        int n = (int)BitConverter.ToUInt64(all, 0);
        return (Encoding.UTF8.GetString(all, 8, n), all[(8 + n)..]);
    }

    [Theory]
    [InlineData("duplicate")]
    [InlineData("null shape")]
    [InlineData("null offset")]
    [InlineData("overlap")]
    [InlineData("nul name")]
    public void Malformed_safetensors_headers_name_the_file_and_tensor(string kind)
    {
        string dir = Decoder();
        string file = Path.Combine(dir, "model.safetensors");
        var (header, data) = Split(file);
        var obj = JsonNode.Parse(header)!.AsObject();
        string first = obj.Select(kv => kv.Key).First(k => k != "__metadata__");
        string entry = obj[first]!.ToJsonString();
        string json = kind switch
        {
            // Written as text: JsonObject cannot hold a key twice.
            "duplicate" => header.TrimEnd().TrimEnd('}') + $",\"{first}\":{entry}}}",
            "null shape" => Set(obj, first, "shape", null),
            "null offset" => Set(obj, first, "data_offsets", new JsonArray(null, 4)),
            "overlap" => Overlap(obj),
            "nul name" => header.TrimEnd().TrimEnd('}') + ",\"bad\\u0000name\":" + entry + "}",
            _ => throw new ArgumentException(kind),
        };
        WriteHeader(file, json, data);
        string msg = FailsCheaply(dir);
        Assert.Contains(file, msg);

        static string Set(JsonObject o, string name, string key, JsonNode? value)
        {
            o[name]![key] = value;
            return o.ToJsonString();
        }
        // The second tensor's range is moved onto the first's (same size: both are norms of one width).
        static string Overlap(JsonObject o)
        {
            var norms = o.Where(kv => kv.Key.EndsWith("input_layernorm.weight", StringComparison.Ordinal)).Take(2).ToList();
            var a = norms[0].Value!["data_offsets"]!.DeepClone();
            norms[1].Value!["data_offsets"] = a;
            return o.ToJsonString();
        }
    }

    [Theory]
    [InlineData("5")]
    [InlineData("null")]
    [InlineData("\"a\\u0000b.safetensors\"")]
    [InlineData("\"../model.safetensors\"")]
    public void Weight_map_values_that_are_not_safe_file_names_are_refused(string value)
    {
        string dir = Decoder();
        File.Move(Path.Combine(dir, "model.safetensors"), Path.Combine(dir, "model-00001-of-00001.safetensors"));
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), "{\"weight_map\": {\"model.embed_tokens.weight\": " + value + "}}");
        string msg = FailsCheaply(dir);
        Assert.Contains("model.safetensors.index.json", msg);
        Assert.Contains("model.embed_tokens.weight", msg);
    }

    // ---- fuzz ----

    static readonly JsonNode?[] Hostile =
    [
        0, -1, 1, 3, 7, int.MaxValue, int.MinValue, 1_000_000_000, 4_000_000, 1L << 40, -(1L << 40), 1.5, 1e300, -0.0,
        "x", "", null, new JsonArray(), new JsonObject(), true, false, new JsonArray(1, 2), "1e9", long.MaxValue,
    ];

    static readonly string[] ConfigKeys =
    [
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "eos_token_id",
        "model_type", "rope_scaling", "bos_token_id",
    ];

    static JsonNode? Pick(Random rng) => Hostile[rng.Next(Hostile.Length)]?.DeepClone();

    /// <summary>One malformed folder: a broken config, a broken safetensors header, or a broken shard index.</summary>
    static void Mutate(string dir, int i, Random rng, JsonObject config, string header, byte[] data)
    {
        string file = Path.Combine(dir, "model.safetensors");
        foreach (var f in Directory.GetFiles(dir)) File.Delete(f);
        var cfg = config.DeepClone().AsObject();
        var hdr = JsonNode.Parse(header)!.AsObject();
        var names = hdr.Select(kv => kv.Key).Where(k => k != "__metadata__").ToList();
        string headerText = header;
        switch (i % 3)
        {
            case 0: // config: one to three keys set to hostile values
                for (int k = rng.Next(1, 4); k > 0; k--) cfg[ConfigKeys[rng.Next(ConfigKeys.Length)]] = Pick(rng);
                break;
            case 1: // header: one field of one tensor, or the tensor itself
                var t = hdr[names[rng.Next(names.Count)]]!.AsObject();
                switch (rng.Next(7))
                {
                    case 0: t["shape"] = rng.Next(2) == 0 ? Pick(rng) : new JsonArray(Pick(rng), Pick(rng)); break;
                    case 1: t["dtype"] = rng.Next(2) == 0 ? Pick(rng) : new[] { "F8", "C64", "f32", "U64" }[rng.Next(4)]; break;
                    case 2: t["data_offsets"] = rng.Next(2) == 0 ? Pick(rng) : new JsonArray(Pick(rng), Pick(rng)); break;
                    case 3: t.Remove(new[] { "shape", "dtype", "data_offsets" }[rng.Next(3)]); break;
                    case 4: hdr.Remove(names[rng.Next(names.Count)]); break;
                    case 5: // another tensor's bytes
                        t["data_offsets"] = hdr[names[rng.Next(names.Count)]]!["data_offsets"]!.DeepClone();
                        t["shape"] = hdr[names[rng.Next(names.Count)]]!["shape"]!.DeepClone();
                        break;
                    default:
                        hdr[names[rng.Next(names.Count)]] = Pick(rng);
                        break;
                }
                headerText = hdr.ToJsonString();
                if (rng.Next(10) == 0) headerText = headerText[..rng.Next(headerText.Length)]; // truncated JSON
                break;
            default: // shard index with a hostile weight_map
                var map = new JsonObject();
                foreach (var n in names) map[n] = "model-00001-of-00001.safetensors";
                map[names[rng.Next(names.Count)]] = rng.Next(3) switch
                {
                    0 => Pick(rng),
                    1 => new[] { "../x.safetensors", ".hidden", "a\u0000b", "missing.safetensors", "/etc/passwd", "" }[rng.Next(6)],
                    _ => "model-00001-of-00001.safetensors",
                };
                if (rng.Next(2) == 0) map["not.in.the.shard.weight"] = "model-00001-of-00001.safetensors";
                File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
                    rng.Next(8) == 0 ? "{\"weight_map\": 5}" : new JsonObject { ["weight_map"] = map }.ToJsonString());
                file = Path.Combine(dir, "model-00001-of-00001.safetensors");
                break;
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var bytes = Encoding.UTF8.GetBytes(headerText);
        using var fs = File.Create(file);
        // Now and then a header length that lies.
        ulong length = rng.Next(15) == 0 ? (ulong)rng.NextInt64() : (ulong)bytes.Length;
        fs.Write(BitConverter.GetBytes(length));
        fs.Write(bytes);
        fs.Write(data);
    }

    [Fact]
    public void Fuzz_1200_malformed_folders_each_end_in_one_clean_error_line_within_a_memory_cap()
    {
        string source = Decoder();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        var (header, data) = Split(Path.Combine(source, "model.safetensors"));
        string dir = Path.Combine(TestModels.TempDir(), "fuzz");
        Directory.CreateDirectory(dir);
        var rng = new Random(19);
        int errors = 0, loaded = 0;
        var sw = Stopwatch.StartNew();
        bool resettable = PeakMemory.Reset();
        long baseline = PeakMemory.Bytes(), worst = 0;
        for (int i = 0; i < 1200; i++)
        {
            Mutate(dir, i, rng, config, header, data);
            if (resettable) PeakMemory.Reset();
            long before = PeakMemory.Bytes();
            try
            {
                using var m = ModelLoader.Load(dir, ScalarType.Float32, CPU);
                loaded++; // a mutation that happens to be harmless (e.g. rms_norm_eps 3)
            }
            catch (RecurUserException e)
            {
                errors++;
                Assert.False(e.Message.Contains('\n'), $"case {i}: more than one line: {e.Message}");
                Assert.True(e.Message.Contains(dir, StringComparison.Ordinal), $"case {i}: the error does not name the file: {e.Message}");
            }
            catch (Exception e)
            {
                Assert.Fail($"case {i}: {e.GetType().Name} instead of a user error: {e.Message}");
            }
            worst = Math.Max(worst, PeakMemory.Bytes() - (resettable ? before : baseline));
            Assert.True(worst < MemoryCap, $"case {i}: peak memory grew by {worst >> 20} MiB");
        }
        Assert.True(errors >= 1000, $"only {errors} of 1200 cases were errors ({loaded} loaded)");
        Assert.True(sw.Elapsed < TimeSpan.FromMinutes(2), $"fuzzing took {sw.Elapsed}");
    }
}
