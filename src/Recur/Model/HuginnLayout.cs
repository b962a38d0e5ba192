using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>
/// Huginn-0125 rotates q and k on interleaved pairs (2i, 2i+1) (seal-rg/recurrent-pretraining:
/// recpre/raven_modeling_minimal.py <c>apply_rotary_emb_complex_like</c>); Recur's attention rotates halves
/// (i, i + d/2). Reordering each head's q and k rows of <c>attn.Wqkv</c> (and <c>attn.qk_bias</c>) to
/// [0, 2, 4, …, 1, 3, 5, …] turns one into the other: pair i lands on (i, i + d/2) with the same angle, and the
/// attention scores q·k do not change under the same permutation of both. Values and outputs are untouched.
/// Applied after loading a sandwich model and undone when saving, so files keep Huginn's layout.
/// </summary>
public static class HuginnLayout
{
    /// <summary>Reorders (or with <paramref name="inverse"/> restores) the q/k rows of every block, in place.</summary>
    public static void PermuteQk(RecurrentModel m, bool inverse = false)
    {
        var c = m.Config.ToBlockConfig();
        using var _ = no_grad();
        foreach (var b in m.transformer.prelude.Concat(m.transformer.core_block).Concat(m.transformer.coda))
        {
            // Holds the index tensors and the gathered rows until copy_ has read them (Model/Scalars.cs).
            using var scope = NewDisposeScope();
            var w = b.attn.Wqkv.weight!;
            w.copy_(w.index_select(0, Rows(c.NumAttentionHeads, c.KvHeads, c.HeadDimension, inverse, w.device)));
            if (b.attn.qk_bias is { } qb) qb.copy_(qb.index_select(3, WithinHead(c.HeadDimension, inverse).to(qb.device)));
        }
    }

    /// <summary>A copy of a Wqkv [(h + 2kv)·d, n] or qk_bias [2, 1, h, d] tensor in Huginn's interleaved order.</summary>
    public static Tensor ToInterleaved(ModelConfig c, string name, Tensor t)
    {
        using var scope = NewDisposeScope();
        return (name.EndsWith("attn.qk_bias", StringComparison.Ordinal)
            ? t.index_select(3, WithinHead(c.HeadDimension, inverse: true).to(t.device))
            : t.index_select(0, Rows(c.NumAttentionHeads, c.KvHeads, c.HeadDimension, inverse: true, t.device))).MoveToOuterDisposeScope();
    }

    /// <summary>[0, 2, …, d−2, 1, 3, …, d−1], or its inverse.</summary>
    static Tensor WithinHead(int d, bool inverse)
    {
        var perm = Enumerable.Range(0, d / 2).Select(i => 2 * i).Concat(Enumerable.Range(0, d / 2).Select(i => 2 * i + 1)).ToArray();
        if (inverse)
        {
            var inv = new int[d];
            for (int m = 0; m < d; m++) inv[perm[m]] = m;
            perm = inv;
        }
        return tensor(perm.Select(i => (long)i).ToArray());
    }

    static Tensor Rows(int heads, int kvHeads, int d, bool inverse, Device device)
    {
        using var perm = WithinHead(d, inverse);
        var within = perm.data<long>().ToArray();
        var rows = new long[(heads + 2 * kvHeads) * d];
        for (int i = 0; i < rows.Length; i++) rows[i] = i;
        for (int h = 0; h < heads + kvHeads; h++) // q heads, then k heads; v rows stay
            for (int m = 0; m < d; m++) rows[h * d + m] = h * d + within[m];
        return tensor(rows, device: device);
    }
}
