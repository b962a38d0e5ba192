using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using Recur.Training;
using static TorchSharp.torch;
using Xunit;
using Parameter = TorchSharp.Modules.Parameter;

namespace Recur.Tests.Training;

/// <summary>The Muon/AdamW split (METHOD §4.3) on HF and Raven parameter names.</summary>
public class ParamGroupsTests
{
    /// <summary>Parameters with the names and shapes of a Raven checkpoint folder (values are irrelevant here).</summary>
    static List<(string, Parameter)> RavenParameters(string folder)
    {
        using var f = SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "models", folder, "model.safetensors"));
        return [.. f.Entries.Values.OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => (e.Name, new Parameter(zeros(e.Shape))))];
    }

    [Fact]
    public void Raven_split_puts_fused_matrices_and_adapter_in_muon_sorted_by_size_shape_name()
    {
        // recurrent-llama: h 64, 4 heads, 2 kv heads of 16, I 80, (p, r, c) = (1, 2, 1).
        var split = ParamGroups.Split(RavenParameters("recurrent-llama"));
        string[] blocks = ["transformer.coda.0", "transformer.core_block.0", "transformer.core_block.1", "transformer.prelude.0"];
        string[] expected =
        [
            .. blocks.Select(b => b + ".mlp.fc.weight"),      // [160, 64] = 10240
            "transformer.adapter.weight",                      // [64, 128] = 8192; shape (64, …) sorts before (128, …)
            .. blocks.Select(b => b + ".attn.Wqkv.weight"),   // [128, 64] = 8192
            .. blocks.Select(b => b + ".mlp.proj.weight"),    // [64, 80]  = 5120
            .. blocks.Select(b => b + ".attn.proj.weight"),   // [64, 64]  = 4096
        ];
        Assert.Equal(expected, split.Muon.Select(x => x.Name));
        var adam = split.AdamW.Select(x => x.Name).ToHashSet();
        Assert.Contains("transformer.wte.weight", adam);
        Assert.Contains("transformer.ln_f.weight", adam);
        Assert.Contains("lm_head.weight", adam);
        Assert.Contains("transformer.core_block.1.norm_2.weight", adam);
        Assert.Equal(3 + 2 * blocks.Length, adam.Count);
    }

    [Fact]
    public void Olmo2_qk_norms_go_to_adamw()
    {
        var split = ParamGroups.Split(RavenParameters("recurrent-olmo2"));
        Assert.Contains("transformer.core_block.0.attn.q_norm.weight", split.AdamW.Select(x => x.Name));
        Assert.Contains("transformer.core_block.0.attn.k_norm.weight", split.AdamW.Select(x => x.Name));
        Assert.DoesNotContain(split.Muon, x => x.Name.Contains("norm"));
        Assert.Equal(17, split.Muon.Count);
    }

    [Fact]
    public void Hf_split_gives_muon_the_separate_projections()
    {
        using var m = new DecoderModel(Presets.TinyTest);
        var all = m.named_parameters().ToList();
        var split = ParamGroups.Split(all);
        var muon = split.Muon.Select(x => x.Name).ToHashSet();
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", muon);
        Assert.Contains("model.layers.0.self_attn.k_proj.weight", muon);
        Assert.Contains("model.layers.3.mlp.down_proj.weight", muon);
        Assert.Equal(7 * Presets.TinyTest.NumHiddenLayers, muon.Count);
        var adam = split.AdamW.Select(x => x.Name).ToList();
        Assert.Equal(all.Count - muon.Count, adam.Count);
        Assert.Contains("model.embed_tokens.weight", adam);
        Assert.Contains("model.norm.weight", adam);
        Assert.Contains("lm_head.weight", adam);
        Assert.Contains("model.layers.0.input_layernorm.weight", adam);
        // AdamW keeps model order.
        Assert.Equal(all.Select(x => x.name).Where(n => !muon.Contains(n)), adam);
        // (−numel, shape, name): the MLP matrices [176, 64] and [64, 176] come first, [64, 176] before [176, 64].
        Assert.EndsWith("mlp.down_proj.weight", split.Muon[0].Name);
        Assert.True(split.Muon.Zip(split.Muon.Skip(1)).All(p => p.First.Param.numel() >= p.Second.Param.numel()));
    }

    [Theory]
    [InlineData("transformer.core_block.0.attn.Wqkv.weight", new long[] { 8, 4 }, true)]
    [InlineData("transformer.core_block.0.attn.Wqkv.bias", new long[] { 8 }, false)]
    [InlineData("transformer.core_block.0.attn.Wqkv.bias", new long[] { 8, 1 }, false)]
    [InlineData("transformer.adapter.weight", new long[] { 4, 8 }, true)]
    [InlineData("transformer.wte.weight", new long[] { 16, 4 }, false)]
    [InlineData("model.embed_tokens.weight", new long[] { 16, 4 }, false)]
    [InlineData("lm_head.weight", new long[] { 16, 4 }, false)]
    [InlineData("transformer.ln_f.weight", new long[] { 4 }, false)]
    [InlineData("model.layers.0.post_feedforward_layernorm.weight", new long[] { 4 }, false)]
    [InlineData("some.scale", new long[] { 4 }, false)]
    [InlineData("conv.weight", new long[] { 4, 4, 3 }, false)]
    public void Muon_membership_follows_name_and_rank(string name, long[] shape, bool muon)
    {
        Assert.Equal(muon, ParamGroups.IsMuonParameter(name, shape));
    }

    [Fact]
    public void Adamw_only_mode_puts_everything_in_adamw()
    {
        var all = RavenParameters("recurrent-llama");
        var split = ParamGroups.Split(all, adamWOnly: true);
        Assert.Empty(split.Muon);
        Assert.Equal(all.Select(x => x.Item1), split.AdamW.Select(x => x.Name));
    }

    [Fact]
    public void Frozen_parameters_are_left_out()
    {
        var frozen = new Parameter(zeros(4, 4), requires_grad: false);
        var split = ParamGroups.Split([("a.weight", new Parameter(zeros(4, 4))), ("b.weight", frozen), ("n.norm.weight", new Parameter(zeros(4), requires_grad: false))]);
        Assert.Equal(["a.weight"], split.Muon.Select(x => x.Name));
        Assert.Empty(split.AdamW);
    }
}
