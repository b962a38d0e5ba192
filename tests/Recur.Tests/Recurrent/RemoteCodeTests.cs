using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace Recur.Tests.Recurrent;

/// <summary>
/// Every recurrent folder Recur writes carries its own Python configuration/modeling files, so that
/// <c>AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)</c> loads it (docs/checkpoints.md). The
/// Python forward is run without transformers (tests/reference/check_remote_code.py) against Recur's logits.
/// </summary>
public class RemoteCodeTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => new() { "llama", "olmo2", "llama-qk-bias", "llama3-rope-embed-scale", "huginn" };

    static RecurrentModel Build(string kind, long seed)
    {
        if (kind == "huginn") return RecurrentCheckpoint.Load(Path.Combine(TestModels.FixturesDir, "models", "huginn-tiny"), ScalarType.Float32, CPU);
        var baseCfg = kind.StartsWith("olmo2", StringComparison.Ordinal) ? Presets.TinyOlmo2Test : Presets.TinyTest;
        baseCfg = baseCfg with { NumHiddenLayers = 6 };
        if (kind == "llama-qk-bias") baseCfg = baseCfg with { NumKeyValueHeads = 4 };
        if (kind == "llama3-rope-embed-scale")
            baseCfg = baseCfg with { RopeTheta = 500000, RopeScaling = new RopeScaling { RopeType = "llama3", Factor = 8, OriginalMaxPositionEmbeddings = 64 } };
        using var b = TestModels.Random(baseCfg, seed);
        var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 1, 2, 1), Seed = seed });
        if (kind == "llama-qk-bias" || kind == "llama3-rope-embed-scale")
        {
            // Round-trip through a folder whose config turns on the official features Recur does not write itself.
            var dir = Path.Combine(TestModels.TempDir(), "src");
            RecurrentCheckpoint.Save(m, dir);
            var p = Path.Combine(dir, "config.json");
            var o = (JsonObject)JsonNode.Parse(File.ReadAllText(p))!;
            if (kind == "llama-qk-bias") o["qk_bias"] = true;
            else o["init_values"] = new JsonObject { ["std"] = 0.01, ["embed_scale"] = 1.5 };
            File.WriteAllText(p, o.ToJsonString());
            if (kind == "llama-qk-bias")
            {
                var wp = Path.Combine(dir, "model.safetensors");
                List<KeyValuePair<string, Tensor>> list;
                using (var f = SafeTensorsFile.Open(wp)) list = f.Entries.Keys.Select(k => new KeyValuePair<string, Tensor>(k, f.Read(k))).ToList();
                using var gen = new Generator((ulong)seed);
                foreach (var sec in new[] { "prelude.0", "core_block.0", "core_block.1", "coda.0" })
                    list.Add(new($"transformer.{sec}.attn.qk_bias", randn([2, 1, 4, 16], generator: gen) * 0.3));
                SafeTensorsFile.Save(wp, list);
            }
            m.Dispose();
            m = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        }
        return m;
    }

    [PythonTorchTheory, MemberData(nameof(Cases))]
    public void Python_forward_of_the_written_folder_equals_recur_logits_at_T1_and_T4(string kind)
    {
        using var m = Build(kind, 21);
        var dir = Path.Combine(TestModels.TempDir(), "rec");
        RecurrentCheckpoint.Save(m, dir);
        using var gen = new Generator(4);
        var ids = randint(3, 128, [2, 9], generator: gen, dtype: ScalarType.Int64);
        var s0 = randn([2, 9, 64], generator: gen) * 0.5;
        var cases = new List<KeyValuePair<string, Tensor>> { new("input_ids", ids), new("s0", s0) };
        using (no_grad())
            foreach (int t in new[] { 1, 4 })
                cases.Add(new($"logits_T{t}", m.Forward(ids, t, 0, s0: s0)));
        var file = Path.Combine(TestModels.TempDir(), "cases.safetensors");
        SafeTensorsFile.Save(file, cases);
        var script = Path.Combine(AppContext.BaseDirectory, "reference", "check_remote_code.py");
        var r = PythonTorch.Run(TimeSpan.FromMinutes(5), script, dir, file);
        Assert.True(r.Code == 0, $"python failed ({r.Code}): {r.Stderr}");
        var diffs = JsonNode.Parse(r.Stdout.Trim().Split('\n')[^1])!.AsObject();
        Assert.Equal(2, diffs.Count);
        output.WriteLine($"{kind}: {r.Stdout.Trim()}");
        foreach (var (t, d) in diffs)
            Assert.True(d!.GetValue<double>() <= 1e-4, $"{kind} {t}: max |Δlogit| = {d} (python: {r.Stdout.Trim()})");
    }

    [Fact]
    public void A_written_folder_carries_the_python_files_and_the_released_identity_keys()
    {
        using var m = Build("olmo2", 3);
        var dir = Path.Combine(TestModels.TempDir(), "rec");
        RecurrentCheckpoint.Save(m, dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        Assert.Equal("huginn_raven", cfg["model_type"]!.GetValue<string>());
        Assert.Equal("RavenForCausalLM", cfg["architectures"]![0]!.GetValue<string>());
        var map = cfg["auto_map"]!.AsObject();
        Assert.Equal("raven_config_minimal.RavenConfig", map["AutoConfig"]!.GetValue<string>());
        Assert.Equal("raven_modeling_minimal.RavenForCausalLM", map["AutoModel"]!.GetValue<string>());
        Assert.Equal("raven_modeling_minimal.RavenForCausalLM", map["AutoModelForCausalLM"]!.GetValue<string>());
        foreach (var name in new[] { RemoteCode.ConfigFile, RemoteCode.ModelingFile })
            Assert.Equal(RemoteCode.Text(name), File.ReadAllText(Path.Combine(dir, name)));
        Assert.Contains("class RavenForCausalLM", RemoteCode.Text(RemoteCode.ModelingFile));
        Assert.Contains("model_type = \"huginn_raven\"", RemoteCode.Text(RemoteCode.ConfigFile));
        // The folder still loads in Recur, and re-saving it keeps one copy of each file.
        using var again = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        var dir2 = Path.Combine(TestModels.TempDir(), "rec2");
        RecurrentCheckpoint.Save(again, dir2, extraFiles: new Dictionary<string, string> { [RemoteCode.ModelingFile] = Path.Combine(dir, RemoteCode.ModelingFile) });
        Assert.Equal(RemoteCode.Text(RemoteCode.ModelingFile), File.ReadAllText(Path.Combine(dir2, RemoteCode.ModelingFile)));
    }
}
