namespace Recur.Training;

/// <summary>Training cost of a run: FLOPs per token at the final mean recurrence and in total (METHOD §6).</summary>
/// <param name="PerTokenFinal">6·N1 + 2·N2 at μ_rec = R_max (or 6·L·N_layer for a non-recurrent run).</param>
/// <param name="Total">Total with RR's histogram counting, the number the paper's plots use.</param>
/// <param name="TotalDirect">Σ over optimizer steps of the per-token FLOPs at that step's μ_rec, × tokens per step.</param>
/// <param name="StepCounts">Optimizer steps counted at each mean recurrence 1..R_max (histogram counting); empty for non-recurrent.</param>
public sealed record FlopsEstimate(long PerTokenFinal, Int128 Total, Int128 TotalDirect, long Steps, long TokensPerStep, IReadOnlyList<long> StepCounts);

/// <summary>
/// FLOPs accounting of METHOD §6 (mcleish7/retrofitting-recurrence:param_counter.py): 6 FLOPs per parameter per
/// token for forward + backward, 2 for forward only; attention-score FLOPs ignored. For a (p, r, c) model at mean
/// recurrence R with backprop cap k: N1 = (p + min(R, k)·r + c)·N_layer runs forward and backward, N2 =
/// max(R − k, 0)·r·N_layer runs forward only. Embeddings, head and adapter are not counted, nor is the +1 in E[n + k].
/// Totals exceed 2⁶³ for the paper's runs, so they are <see cref="Int128"/>.
/// </summary>
public static class Flops
{
    /// <summary>The paper's backprop depth.</summary>
    public const int DefaultBackpropCap = 8;

    /// <summary>Parameter counts that see forward+backward (N1) and forward only (N2) at mean recurrence <paramref name="meanRecurrence"/>.</summary>
    public static (long N1, long N2) Params(long paramsPerLayer, (int P, int R, int C) shape, int meanRecurrence, int backpropCap = DefaultBackpropCap)
    {
        Check(paramsPerLayer, shape, meanRecurrence, backpropCap);
        long n1 = checked((shape.P + (long)Math.Min(meanRecurrence, backpropCap) * shape.R + shape.C) * paramsPerLayer);
        long n2 = checked((long)Math.Max(meanRecurrence - backpropCap, 0) * shape.R * paramsPerLayer);
        return (n1, n2);
    }

    /// <summary>Training FLOPs per token, 6·N1 + 2·N2.</summary>
    public static long PerToken(long paramsPerLayer, (int P, int R, int C) shape, int meanRecurrence, int backpropCap = DefaultBackpropCap)
    {
        var (n1, n2) = Params(paramsPerLayer, shape, meanRecurrence, backpropCap);
        return checked(6 * n1 + 2 * n2);
    }

    /// <summary>Training FLOPs per token of the non-recurrent baseline with <paramref name="layers"/> layers: 6·L·N_layer.</summary>
    public static long PerTokenNonRecurrent(long paramsPerLayer, int layers)
    {
        if (paramsPerLayer <= 0) throw new ArgumentOutOfRangeException(nameof(paramsPerLayer), paramsPerLayer, "must be > 0");
        if (layers < 1) throw new ArgumentOutOfRangeException(nameof(layers), layers, "must be ≥ 1");
        return checked(6L * layers * paramsPerLayer);
    }

    /// <summary>
    /// RR's step counts per mean recurrence: steps in [⌊f⁻¹((R−1)/R_max)·W⌋, ⌊f⁻¹(R/R_max)·W⌋) count at R, and every
    /// step from W on counts at R_max. Index i holds R = i + 1. This is RR's approximation of the curriculum, which
    /// can put a step one bin away from <see cref="RecurrenceCurriculum.MeanRecurrence"/>'s ceil.
    /// </summary>
    public static long[] HistogramStepCounts(RecurrenceCurriculum curriculum)
    {
        int rMax = curriculum.MaxRecurrence;
        long w = curriculum.WarmupSteps;
        var counts = new long[rMax];
        for (int r = 1; r <= rMax; r++)
        {
            long lo = (long)Math.Floor(curriculum.InverseShape((double)(r - 1) / rMax) * w);
            long hi = (long)Math.Floor(curriculum.InverseShape((double)r / rMax) * w);
            counts[r - 1] = hi - lo;
        }
        counts[rMax - 1] += curriculum.TotalSteps - w;
        return counts;
    }

    /// <summary>Total training FLOPs with RR's histogram counting (the paper's x-axes).</summary>
    public static Int128 Total(long paramsPerLayer, (int P, int R, int C) shape, RecurrenceCurriculum curriculum, long tokensPerStep, int backpropCap = DefaultBackpropCap)
    {
        CheckTokens(tokensPerStep);
        var counts = HistogramStepCounts(curriculum);
        Int128 perTokenSteps = 0;
        for (int i = 0; i < counts.Length; i++)
            perTokenSteps += (Int128)counts[i] * PerToken(paramsPerLayer, shape, i + 1, backpropCap);
        return perTokenSteps * tokensPerStep;
    }

    /// <summary>Total training FLOPs summed step by step at the scheduled μ_rec(t).</summary>
    public static Int128 TotalDirect(long paramsPerLayer, (int P, int R, int C) shape, RecurrenceCurriculum curriculum, long tokensPerStep, int backpropCap = DefaultBackpropCap)
    {
        CheckTokens(tokensPerStep);
        var perMean = new long[curriculum.MaxRecurrence + 1];
        Int128 perTokenSteps = 0;
        for (long t = 0; t < curriculum.TotalSteps; t++)
        {
            int mu = curriculum.MeanRecurrence(t);
            if (perMean[mu] == 0) perMean[mu] = PerToken(paramsPerLayer, shape, mu, backpropCap);
            perTokenSteps += perMean[mu];
        }
        return perTokenSteps * tokensPerStep;
    }

    /// <summary>Per-token and total FLOPs of a recurrent training run.</summary>
    public static FlopsEstimate Estimate(long paramsPerLayer, (int P, int R, int C) shape, RecurrenceCurriculum curriculum, long tokensPerStep, int backpropCap = DefaultBackpropCap) =>
        new(PerToken(paramsPerLayer, shape, curriculum.MaxRecurrence, backpropCap),
            Total(paramsPerLayer, shape, curriculum, tokensPerStep, backpropCap),
            TotalDirect(paramsPerLayer, shape, curriculum, tokensPerStep, backpropCap),
            curriculum.TotalSteps, tokensPerStep, HistogramStepCounts(curriculum));

    /// <summary>Per-token and total FLOPs of the non-recurrent baseline: 6·L·N_layer·tokens.</summary>
    public static FlopsEstimate EstimateNonRecurrent(long paramsPerLayer, int layers, long steps, long tokensPerStep)
    {
        CheckTokens(tokensPerStep);
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "must be ≥ 1");
        long perToken = PerTokenNonRecurrent(paramsPerLayer, layers);
        Int128 total = (Int128)perToken * steps * tokensPerStep;
        return new(perToken, total, total, steps, tokensPerStep, []);
    }

    static void Check(long paramsPerLayer, (int P, int R, int C) shape, int meanRecurrence, int backpropCap)
    {
        if (paramsPerLayer <= 0) throw new ArgumentOutOfRangeException(nameof(paramsPerLayer), paramsPerLayer, "must be > 0");
        if (shape.P < 0 || shape.R < 1 || shape.C < 0) throw new ArgumentOutOfRangeException(nameof(shape), shape, "need p ≥ 0, r ≥ 1, c ≥ 0");
        if (meanRecurrence < 1) throw new ArgumentOutOfRangeException(nameof(meanRecurrence), meanRecurrence, "must be ≥ 1");
        if (backpropCap < 1) throw new ArgumentOutOfRangeException(nameof(backpropCap), backpropCap, "must be ≥ 1");
    }

    static void CheckTokens(long tokensPerStep)
    {
        if (tokensPerStep < 1) throw new ArgumentOutOfRangeException(nameof(tokensPerStep), tokensPerStep, "must be ≥ 1");
    }
}
