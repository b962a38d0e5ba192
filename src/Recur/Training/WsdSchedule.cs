namespace Recur.Training;

/// <summary>
/// Warmup-stable-decay learning-rate factor with a cosine cool-down (METHOD §4.5), as HF
/// <c>get_wsd_schedule</c> computes it (huggingface/transformers:src/transformers/optimization.py). The factor
/// multiplies every group's base learning rate at optimizer step t (0-based).
/// <para>
/// W = ceil(warmup·S), D = ceil(cooldown·S), stable = S − W − D. With m = min ratio: t &lt; W: (t/W)(1 − m) + m;
/// stable: 1; decay: m + (1 − m)·½(1 + cos(π·q)), q = (t − W − stable)/D; from S on: m.
/// </para>
/// </summary>
public sealed class WsdSchedule
{
    public const double DefaultWarmupFraction = 0.0025;
    public const double DefaultCooldownFraction = 0.6;
    public const double DefaultMinLrRatio = 0.001;

    public long TotalSteps { get; }
    public long WarmupSteps { get; }
    public long StableSteps { get; }
    public long DecaySteps { get; }
    public double MinLrRatio { get; }

    public WsdSchedule(long totalSteps, double warmupFraction = DefaultWarmupFraction, double cooldownFraction = DefaultCooldownFraction, double minLrRatio = DefaultMinLrRatio)
    {
        if (totalSteps < 1) throw new RecurUserException($"lr schedule: total optimizer steps must be ≥ 1 (got {totalSteps})");
        if (!(warmupFraction >= 0 && warmupFraction <= 1)) throw new RecurUserException($"lr schedule: warm-up fraction must be in [0, 1] (got {warmupFraction})");
        if (!(cooldownFraction >= 0 && cooldownFraction <= 1)) throw new RecurUserException($"lr schedule: cool-down fraction must be in [0, 1] (got {cooldownFraction})");
        if (!(minLrRatio >= 0 && minLrRatio <= 1)) throw new RecurUserException($"lr schedule: min lr ratio must be in [0, 1] (got {minLrRatio})");
        TotalSteps = totalSteps;
        WarmupSteps = (long)Math.Ceiling(warmupFraction * totalSteps);
        DecaySteps = (long)Math.Ceiling(cooldownFraction * totalSteps);
        StableSteps = totalSteps - WarmupSteps - DecaySteps;
        if (StableSteps < 0)
            throw new RecurUserException($"lr schedule: warm-up {warmupFraction} + cool-down {cooldownFraction} leave no room in {totalSteps} steps (W = {WarmupSteps}, D = {DecaySteps})");
        MinLrRatio = minLrRatio;
    }

    /// <summary>The factor on the base learning rate at optimizer step <paramref name="step"/> (0-based).</summary>
    public double Factor(long step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "optimizer step must be ≥ 0");
        double m = MinLrRatio;
        if (step < WarmupSteps)
        {
            // Warm-up starts at m, not 0 (HF versions with warmup_type; METHOD §4.5 [inferred]).
            double progress = (double)step / Math.Max(1, WarmupSteps);
            return Math.Max(0.0, progress * (1.0 - m) + m);
        }
        if (step < WarmupSteps + StableSteps) return 1.0;
        if (step < WarmupSteps + StableSteps + DecaySteps)
        {
            double q = (double)(step - WarmupSteps - StableSteps) / Math.Max(1, DecaySteps);
            double cosine = 0.5 * (1.0 + Math.Cos(Math.PI * q));
            return Math.Max(0.0, cosine * (1.0 - m) + m);
        }
        return m;
    }

    public override string ToString() => $"WSD: warm-up {WarmupSteps}, stable {StableSteps}, cosine decay {DecaySteps} steps to ×{MinLrRatio}";
}
