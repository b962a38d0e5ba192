using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace Recur.Tests.Recurrent;

/// <summary>
/// Huginn-0125's layout (seal-rg/recurrent-pretraining:recpre/raven_modeling_minimal.py): sandwich blocks, q/k bias,
/// RoPE on interleaved pairs from the checkpoint's freqs_cis, tied embeddings, √h embedding scale, ln_f before and
/// after the coda. Parity against tests/reference/make_huginn_fixture.py (fixtures/models/huginn-tiny).
/// </summary>
public class HuginnTests(ITestOutputHelper output)
{
    static string Fixture => Path.Combine(TestModels.FixturesDir, "models", "huginn-tiny");
    static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    static string Copy()
    {
        var dir = Path.Combine(TestModels.TempDir(), "huginn");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Fixture)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(8)]
    public void Tiny_huginn_matches_the_pytorch_reference(int t)
    {
        using var m = RecurrentCheckpoint.Load(Fixture, ScalarType.Float32, CPU);
        using var r = SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "parity", "huginn-tiny.safetensors"));
        using var _ = no_grad();
        var d = MaxDiff(m.Forward(r.Read("input_ids"), t, 0, s0: r.Read("s0")), r.Read($"logits_T{t}"));
        output.WriteLine($"huginn-tiny T = {t}: max |Δlogit| = {d:E2}");
        Assert.True(d <= 1e-4, $"T = {t}: max |Δlogit| = {d}");
    }

    [Fact]
    public void The_huginn_config_is_read_with_its_own_defaults()
    {
        var notes = new List<string>();
        using var m = RecurrentCheckpoint.Load(Fixture, ScalarType.Float32, CPU, notes.Add);
        var c = m.Config;
        Assert.Equal(BlockType.Sandwich, c.BlockType);
        Assert.True(c.TieEmbeddings);
        Assert.True(c.QkBias);
        Assert.Equal(8.0, c.InitValues.EmbedScale, 12);
        Assert.Equal(32, c.MeanRecurrence);
        Assert.Equal(64, m.MaxPositions); // block_size: the rotary table's length
        Assert.NotNull(m.RotaryTable);
        Assert.Equal(0f, MaxDiff(m.lm_head.weight!, m.transformer.wte.weight!));
    }

    [Fact]
    public void The_rotary_angles_come_from_the_checkpoint_buffer()
    {
        var dir = Copy();
        var p = Path.Combine(dir, "model.safetensors");
        List<KeyValuePair<string, Tensor>> list;
        using (var f = SafeTensorsFile.Open(p)) list = f.Entries.Keys.Select(k => new KeyValuePair<string, Tensor>(k, f.Read(k))).ToList();
        int i = list.FindIndex(kv => kv.Key == "freqs_cis");
        // The table of another base: if Recur recomputed the angles from rope_base, the logits would not move.
        var inv = pow(10000.0, -arange(0, 16, 2, dtype: ScalarType.Float32) / 16);
        var ang = outer(arange(64, dtype: ScalarType.Float32), inv);
        list[i] = new("freqs_cis", stack([ang.cos(), ang.sin()], -1).unsqueeze(1).unsqueeze(0));
        SafeTensorsFile.Save(p, list);
        using var m = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        using var r = SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "parity", "huginn-tiny.safetensors"));
        using var _ = no_grad();
        Assert.True(MaxDiff(m.Forward(r.Read("input_ids"), 4, 0, s0: r.Read("s0")), r.Read("logits_T4")) > 1e-3);
    }

    [Fact]
    public void Save_keeps_huginns_layout_and_round_trips()
    {
        using var m = RecurrentCheckpoint.Load(Fixture, ScalarType.Float32, CPU);
        var dir = Path.Combine(TestModels.TempDir(), "saved");
        RecurrentCheckpoint.Save(m, dir);
        using (var orig = SafeTensorsFile.Open(Path.Combine(Fixture, "model.safetensors")))
        using (var saved = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            foreach (var name in new[] { "transformer.core_block.1.attn.Wqkv.weight", "transformer.prelude.0.attn.qk_bias", "freqs_cis", "transformer.coda.0.norm_4.weight" })
                Assert.Equal(0f, MaxDiff(saved.Read(name), orig.Read(name)));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        Assert.Equal("sandwich", cfg["block_type"]!.GetValue<string>());
        using var again = RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
        using var r = SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "parity", "huginn-tiny.safetensors"));
        using var _ = no_grad();
        Assert.Equal(0f, MaxDiff(again.Forward(r.Read("input_ids"), 4, 0, s0: r.Read("s0")), m.Forward(r.Read("input_ids"), 4, 0, s0: r.Read("s0"))));
    }

    [Fact]
    public void Kv_cache_decoding_equals_the_full_forward()
    {
        using var m = RecurrentCheckpoint.Load(Fixture, ScalarType.Float32, CPU);
        using var r = SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "parity", "huginn-tiny.safetensors"));
        using var _ = no_grad();
        var ids = r.Read("input_ids");
        var s0 = r.Read("s0");
        using var cache = new KvCache(m.At(Recurrence.Fixed(4)).CacheSlots, capacityHint: 2);
        var parts = new List<Tensor> { m.Forward(ids.narrow(1, 0, 4), 4, 0, s0: s0.narrow(1, 0, 4), cache: cache) };
        for (int i = 4; i < 10; i++) parts.Add(m.Forward(ids.narrow(1, i, 1), 4, 0, s0: s0.narrow(1, i, 1), cache: cache));
        Assert.True(MaxDiff(cat(parts, 1), r.Read("logits_T4")) <= 1e-4);
    }

    [Theory]
    [InlineData("1")]
    [InlineData("32")]
    public void Info_and_generate_work_on_a_huginn_folder(string t)
    {
        var dir = Copy();
        ChatModels.WriteTokenizer(dir);
        var info = CliProcess.Run("info", "--model", dir);
        Assert.True(info.Code == 0, info.Stderr);
        Assert.Contains("sandwich", info.Stdout);
        var gen = CliProcess.Run("generate", "--model", dir, "--prompt", "the cat sat", "--max-new-tokens", "4", "--recurrences", t, "--seed", "1", "--output-ids");
        Assert.True(gen.Code == 0, gen.Stderr);
        // At most 4 ids, each a token of the vocabulary (generation may stop early at the EOS id).
        var ids = gen.Stdout.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();
        Assert.InRange(ids.Count, 0, 4);
        Assert.All(ids, i => Assert.InRange(i, 0, 127));
        var text = CliProcess.Run("generate", "--model", dir, "--prompt", "the cat sat", "--max-new-tokens", "4", "--recurrences", t, "--seed", "1");
        Assert.True(text.Code == 0, text.Stderr);
    }
}
