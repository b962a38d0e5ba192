namespace Recur.Training;

/// <summary>How the scheduled mean recurrence rises to R_max (METHOD §3.3).</summary>
public enum CurriculumKind
{
    /// <summary>R_max from the first step (Fig. 2's fixed mean).</summary>
    Constant,
    /// <summary>f(u) = u.</summary>
    Linear,
    /// <summary>f(u) = 1 − √(1 − u) ≤ u: slow at first (more cheap shallow steps), steep near the end; the final recipe's choice.</summary>
    OneMinusSqrt,
}

/// <summary>
/// The curriculum on the mean recurrence μ_rec (METHOD §3.3), evaluated per optimizer step t (0-based: the number
/// of optimizer steps already taken). With W = ceil(warmup_frac × total_steps): μ_rec(t) = ceil(R_max · f(t/W)) for
/// t &lt; W and R_max afterwards; a value ≤ 0 becomes 1, so the schedule starts at 1.
/// <para>
/// The reference drives a dummy optimizer whose "learning rate" is R_max through HF <c>warmup_stable_decay</c> with no
/// decay and <c>min_lr_ratio</c> 0 (mcleish7/retrofitting-recurrence:train.py); the double-precision arithmetic here
/// is the same as that schedule's warm-up branch, so the ceil lands on the same side at every step.
/// </para>
/// </summary>
public sealed class RecurrenceCurriculum
{
    /// <summary>Fraction of the run the final recipe spends warming up (METHOD §3.3).</summary>
    public const double DefaultWarmupFraction = 0.75;

    public CurriculumKind Kind { get; }

    /// <summary>R_max, the "train recurrence".</summary>
    public int MaxRecurrence { get; }

    /// <summary>Optimizer steps in the run.</summary>
    public long TotalSteps { get; }

    public double WarmupFraction { get; }

    /// <summary>W = ceil(warmup_frac × total_steps); 0 for a constant curriculum.</summary>
    public long WarmupSteps { get; }

    public RecurrenceCurriculum(CurriculumKind kind, int maxRecurrence, long totalSteps, double warmupFraction = DefaultWarmupFraction)
    {
        if (maxRecurrence < 1) throw new RecurUserException($"curriculum: the maximum (train) recurrence must be ≥ 1 (got {maxRecurrence})");
        if (totalSteps < 1) throw new RecurUserException($"curriculum: total optimizer steps must be ≥ 1 (got {totalSteps})");
        if (kind != CurriculumKind.Constant && !(warmupFraction >= 0 && warmupFraction <= 1))
            throw new RecurUserException($"curriculum: warm-up fraction must be in [0, 1] (got {warmupFraction})");
        Kind = kind;
        MaxRecurrence = maxRecurrence;
        TotalSteps = totalSteps;
        WarmupFraction = kind == CurriculumKind.Constant ? 0 : warmupFraction;
        WarmupSteps = (long)Math.Ceiling(WarmupFraction * totalSteps);
    }

    /// <summary>μ_rec = R_max at every step.</summary>
    public static RecurrenceCurriculum Constant(int maxRecurrence, long totalSteps) => new(CurriculumKind.Constant, maxRecurrence, totalSteps);

    /// <summary>Parses a curriculum name as written in recipes and on the command line: <c>linear</c>, <c>1-sqrt</c> or <c>constant</c>.</summary>
    public static CurriculumKind ParseKind(string name, string source = "curriculum") => name.Trim().ToLowerInvariant() switch
    {
        "linear" => CurriculumKind.Linear,
        "1-sqrt" or "one-minus-sqrt" => CurriculumKind.OneMinusSqrt,
        "constant" or "none" => CurriculumKind.Constant,
        _ => throw new RecurUserException($"{source}: unknown curriculum '{name}' (expected linear, 1-sqrt or constant)"),
    };

    /// <summary>The name <see cref="ParseKind"/> accepts.</summary>
    public static string KindName(CurriculumKind kind) => kind switch
    {
        CurriculumKind.Linear => "linear",
        CurriculumKind.OneMinusSqrt => "1-sqrt",
        _ => "constant",
    };

    /// <summary>The warm-up shape f on [0, 1].</summary>
    public double Shape(double u) => Kind switch
    {
        CurriculumKind.Linear => u,
        CurriculumKind.OneMinusSqrt => 1.0 - Math.Sqrt(1.0 - u),
        _ => 1.0,
    };

    /// <summary>f⁻¹ on [0, 1]: y (linear) or 1 − (1 − y)² (1-sqrt); used by RR's FLOPs histogram (METHOD §6).</summary>
    public double InverseShape(double y) => Kind switch
    {
        CurriculumKind.Linear => y,
        // Math.Pow, not a product: it is what Python's `** 2` evaluates, so the floors in the histogram agree.
        CurriculumKind.OneMinusSqrt => 1.0 - Math.Pow(1.0 - y, 2),
        _ => 0.0,
    };

    /// <summary>R_max · f(t/W) before the ceil (R_max from W on).</summary>
    public double Raw(long step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "optimizer step must be ≥ 0");
        if (step >= WarmupSteps) return MaxRecurrence;
        double progress = (double)step / Math.Max(1, WarmupSteps);
        return MaxRecurrence * Math.Max(0.0, Shape(progress));
    }

    /// <summary>μ_rec at optimizer step <paramref name="step"/> (0-based); shared by all micro-batches of that step.</summary>
    public int MeanRecurrence(long step)
    {
        double mu = Math.Ceiling(Raw(step));
        return mu <= 0 ? 1 : (int)mu;
    }

    public override string ToString() => Kind == CurriculumKind.Constant
        ? $"constant {MaxRecurrence}"
        : $"{KindName(Kind)} to {MaxRecurrence} over {WarmupFraction:0.####} of {TotalSteps} steps (W = {WarmupSteps})";
}
