using TorchSharp.Modules;

namespace Recur.Training;

/// <summary>The two optimizer groups: matrices for Muon, everything else for AdamW.</summary>
public sealed record ParamGroupSplit(IReadOnlyList<(string Name, Parameter Param)> Muon, IReadOnlyList<(string Name, Parameter Param)> AdamW);

/// <summary>
/// Splits a model's parameters into the Muon and AdamW groups (METHOD §4.3, selection from
/// mcleish7/retrofitting-recurrence:train.py). Muon takes every 2-D parameter whose name contains none of
/// <c>norm</c>, <c>ln_f</c>, <c>Wqkv.bias</c>, <c>wte</c>, <c>embed_tokens</c>, <c>lm_head</c>: the fused
/// <c>attn.Wqkv</c> and <c>mlp.fc</c> (orthogonalised as one matrix each), <c>attn.proj</c>, <c>mlp.proj</c> and the
/// adapter in Raven models; the separate q/k/v/o/gate/up/down projections in HF models. AdamW takes the rest
/// (embeddings, head, all norm weights including OLMo-2's q/k norms) in model order.
/// </summary>
public static class ParamGroups
{
    /// <summary>Name fragments that keep a parameter out of Muon. <c>embed_tokens</c> is the HF spelling of <c>wte</c>.</summary>
    public static IReadOnlyList<string> AdamWNameFragments { get; } = ["norm", "ln_f", "Wqkv.bias", "wte", "embed_tokens", "lm_head"];

    /// <summary>True when the parameter belongs in the Muon group.</summary>
    public static bool IsMuonParameter(string name, long[] shape) =>
        shape.Length == 2 && !AdamWNameFragments.Any(f => name.Contains(f, StringComparison.Ordinal));

    /// <summary>
    /// The split. Muon's list is sorted by (−numel, shape, name) as in the reference, so equal-shaped matrices sit
    /// together; AdamW keeps model order. Frozen parameters (<c>requires_grad</c> false) go to neither group.
    /// With <paramref name="adamWOnly"/> every trainable parameter goes to AdamW (the §4.3 AdamW ablation).
    /// </summary>
    public static ParamGroupSplit Split(IEnumerable<(string name, Parameter p)> parameters, bool adamWOnly = false)
    {
        var trainable = parameters.Where(x => x.p.requires_grad).ToList();
        var dup = trainable.GroupBy(x => x.name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"parameter groups: name '{dup.Key}' appears twice");
        if (adamWOnly) return new ParamGroupSplit([], trainable);
        var muon = trainable.Where(x => IsMuonParameter(x.name, x.p.shape)).ToList();
        muon.Sort(CompareForMuon);
        var muonNames = muon.Select(x => x.name).ToHashSet();
        return new ParamGroupSplit(muon, [.. trainable.Where(x => !muonNames.Contains(x.name))]);
    }

    static int CompareForMuon((string name, Parameter p) x, (string name, Parameter p) y)
    {
        int c = y.p.numel().CompareTo(x.p.numel());
        if (c != 0) return c;
        var (sx, sy) = (x.p.shape, y.p.shape);
        for (int i = 0; i < Math.Min(sx.Length, sy.Length); i++)
            if ((c = sx[i].CompareTo(sy[i])) != 0) return c;
        if ((c = sx.Length.CompareTo(sy.Length)) != 0) return c;
        return string.CompareOrdinal(x.name, y.name);
    }
}
