using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Checkpoints;

public class Llama2cTests
{
    /// <summary>Writes a model in llama2.c's legacy layout, undoing the rotate-half permutation.</summary>
    static string WriteLlama2c(DecoderModel m, bool shared)
    {
        var c = m.Config;
        var p = Path.Combine(TestModels.TempDir(), "model.bin");
        using var bw = new BinaryWriter(File.Create(p));
        foreach (var v in new[] { c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KvHeads, shared ? c.VocabSize : -c.VocabSize, c.MaxPositionEmbeddings })
            bw.Write(v);
        void W(Tensor t) { foreach (var f in t.contiguous().data<float>()) bw.Write(f); }
        static Tensor Unpermute(Tensor w, int heads) // HF rotate-half rows back to Meta's interleaved pairs
        {
            long rows = w.shape[0], cols = w.shape[1];
            return w.view(heads, 2, rows / heads / 2, cols).transpose(1, 2).reshape(rows, cols);
        }
        var L = m.model.layers;
        W(m.model.embed_tokens.weight!);
        foreach (var l in L) W(l.input_layernorm!.weight);
        foreach (var l in L) W(Unpermute(l.self_attn.q_proj.weight!, c.NumAttentionHeads));
        foreach (var l in L) W(Unpermute(l.self_attn.k_proj.weight!, c.KvHeads));
        foreach (var l in L) W(l.self_attn.v_proj.weight!);
        foreach (var l in L) W(l.self_attn.o_proj.weight!);
        foreach (var l in L) W(l.post_attention_layernorm.weight);
        foreach (var l in L) W(l.mlp.gate_proj.weight!);
        foreach (var l in L) W(l.mlp.down_proj.weight!);
        foreach (var l in L) W(l.mlp.up_proj.weight!);
        W(m.model.norm.weight);
        W(zeros(c.MaxPositionEmbeddings, c.HeadDimension)); // freq_cis real + imag, unused
        if (!shared) W(m.lm_head!.weight!);
        return p;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Import_reproduces_the_written_model(bool shared)
    {
        var cfg = Presets.TinyTest with { TieWordEmbeddings = shared };
        using var m = TestModels.Random(cfg, seed: 21);
        var path = WriteLlama2c(m, shared);
        using var loaded = Llama2c.Load(path, ScalarType.Float32, CPU);
        Assert.Equal(shared, loaded.Config.TieWordEmbeddings);
        using var _ = no_grad();
        var ids = randint(0, 128, [1, 10], dtype: ScalarType.Int64);
        Assert.True(loaded.Forward(ids).allclose(m.Forward(ids), atol: 1e-6));
    }

    /// <summary>
    /// The permutation must turn Meta's interleaved-pair rotation into HF's rotate-half rotation: attention
    /// scores q·k computed both ways agree for every position pair.
    /// </summary>
    [Fact]
    public void Permutation_turns_interleaved_rope_into_rotate_half()
    {
        int heads = 2, hd = 8, dim = 16;
        manual_seed(5);
        var wq = randn(heads * hd, dim);
        var wk = randn(heads * hd, dim);
        var x1 = randn(dim);
        var x2 = randn(dim);
        var rope = new Rope(hd, 10000, null, CPU);
        for (int p1 = 0; p1 < 5; p1++)
            for (int p2 = 0; p2 < 5; p2++)
            {
                // Meta / llama2.c run.c: rotate pairs (2j, 2j+1) of each head by pos·θ^(-2j/hd).
                Tensor Interleaved(Tensor v, int pos)
                {
                    var r = v.clone().view(heads, hd / 2, 2);
                    var outT = r.clone();
                    for (int j = 0; j < hd / 2; j++)
                    {
                        double ang = pos * Math.Pow(10000, -2.0 * j / hd);
                        var a = r[.., j, 0]; var b = r[.., j, 1];
                        outT[.., j, 0] = a * Math.Cos(ang) - b * Math.Sin(ang);
                        outT[.., j, 1] = a * Math.Sin(ang) + b * Math.Cos(ang);
                    }
                    return outT.view(heads, hd);
                }
                var metaScore = (Interleaved(wq.matmul(x1), p1) * Interleaved(wk.matmul(x2), p2)).sum(-1);
                Tensor RotHalf(Tensor w, Tensor x, int pos)
                {
                    var v = Llama2c.PermuteForRotateHalf(w, heads).matmul(x).view(1, heads, 1, hd);
                    var (cos, sin) = rope.Tables(tensor(new long[] { pos }).view(1, 1), ScalarType.Float32);
                    return Rope.Apply(v, cos, sin).view(heads, hd);
                }
                var hfScore = (RotHalf(wq, x1, p1) * RotHalf(wk, x2, p2)).sum(-1);
                Assert.True(hfScore.allclose(metaScore, rtol: 1e-4, atol: 1e-4), $"positions {p1},{p2}");
            }
    }

    [SharedFact]
    public void Stories260K_loads_and_decodes_deterministically_with_cache_equal_to_full_forward()
    {
        var path = SharedAssets.Path("models", "stories260K", "stories260K.bin");
        using var m = Llama2c.Load(path, ScalarType.Float32, CPU);
        Assert.Equal(64, m.Config.HiddenSize);
        Assert.Equal(4, m.Config.KvHeads);
        var a = Generation.Generate(m, [[1]], new GenerationOptions(40))[0];
        var b = Generation.Generate(m, [[1]], new GenerationOptions(40))[0];
        Assert.Equal(a, b);
        using var _ = no_grad();
        var ids = tensor(new long[] { 1 }.Concat(a.Select(x => (long)x)).Take(30).ToArray()).view(1, -1);
        var full = m.Forward(ids);
        using var cache = new KvCache(m.CacheSlots);
        var stepped = cat(Enumerable.Range(0, (int)ids.shape[1]).Select(t => m.Forward(ids.narrow(1, t, 1), cache: cache)).ToList(), 1);
        Assert.True(stepped.allclose(full, atol: 1e-4));
        // The shared README documents the top probability after BOS (≈ 0.29): a check that weights landed in the right places.
        float top = full[0, 0].softmax(-1).max().item<float>();
        Assert.InRange(top, 0.27f, 0.31f);
    }
}
