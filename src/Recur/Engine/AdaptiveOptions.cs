using System.Globalization;

namespace Recur.Engine;

/// <summary>When a token stops iterating (METHOD §7.3). Each compares iteration i with iteration i − 1.</summary>
public enum ExitCriterion
{
    /// <summary>No early exit: every token runs the maximum T (useful as a control).</summary>
    None,
    /// <summary>KL(p_i ‖ p_{i−1}) of the next-token distributions below the threshold.</summary>
    Kl,
    /// <summary>‖s_i − s_{i−1}‖ / ‖s_i‖ below the threshold.</summary>
    Latent,
    /// <summary>|H(p_i) − H(p_{i−1})| below the threshold.</summary>
    Entropy,
    /// <summary>The argmax of p_i unchanged for the last N iterations (threshold N).</summary>
    Argmax,
    /// <summary>
    /// Huginn's own KL rule and cache (<c>kl-official</c>, <see cref="OfficialAdaptiveForward"/>): KL(p_{i−1} ‖ p_i) with
    /// p_0 uniform, the prompt exiting on its last position, the batch iterating in lockstep, absent cache entries dropped.
    /// </summary>
    KlOfficial,
}

/// <summary>What the adaptive cache keeps for the recurrent block's layers.</summary>
public enum AdaptiveCacheMode
{
    /// <summary>K/V of every (iteration, core layer); a token that exited early lends its last iteration to deeper queries.</summary>
    Full,
    /// <summary>Only the newest iteration's K/V per core layer: memory p + r + c slots whatever T; not exact even at fixed T.</summary>
    Latest,
}

/// <summary>
/// Adaptive test-time recurrence per token (experimental, METHOD §7.3): each decoded token iterates until
/// <see cref="Criterion"/> fires or <see cref="MaxIterations"/> is reached. The prompt always runs
/// <see cref="MaxIterations"/> (see docs/adaptive.md).
/// </summary>
/// <param name="Threshold">Criterion threshold; NaN picks the criterion's default (<see cref="DefaultThreshold"/>).</param>
/// <param name="Warm">Continuous compute: a token's s_0 is the previous token's final state instead of fresh noise.</param>
public sealed record AdaptiveOptions(ExitCriterion Criterion = ExitCriterion.Kl, double Threshold = double.NaN, int MaxIterations = 32,
    bool Warm = false, AdaptiveCacheMode Cache = AdaptiveCacheMode.Full)
{
    public const string Prefix = "adaptive:";

    /// <summary>Huginn's defaults (METHOD §7.3): kl 5e-4, latent 0.03, entropy 1e-3, argmax 5 iterations.</summary>
    public static double DefaultThreshold(ExitCriterion c) => c switch
    {
        ExitCriterion.Kl => 5e-4,
        ExitCriterion.Latent => 0.03,
        ExitCriterion.Entropy => 1e-3,
        ExitCriterion.Argmax => 5,
        // KLExitEvaluator's "auto" in seal-rg/recurrent-pretraining recpre/raven_modeling_minimal.py (59e0b69).
        ExitCriterion.KlOfficial => 1e-3,
        _ => 0,
    };

    public double EffectiveThreshold => double.IsNaN(Threshold) ? DefaultThreshold(Criterion) : Threshold;

    /// <summary>Whether the criterion needs the next-token distribution at every iteration (one coda + head per iteration).</summary>
    public bool NeedsDistribution => Criterion is ExitCriterion.Kl or ExitCriterion.Entropy or ExitCriterion.Argmax or ExitCriterion.KlOfficial;

    /// <summary>Checks the settings; <paramref name="where"/> starts error messages (the flag and spec the user gave).</summary>
    public AdaptiveOptions Validate(string where = "adaptive recurrence")
    {
        if (MaxIterations < 1) throw new RecurUserException($"{where}: max must be ≥ 1 (got {MaxIterations})");
        // The KV cache holds one slot per iteration: an absurd max would try to allocate hundreds of GB.
        if (MaxIterations > Checkpoints.WeightCheck.MaxRecurrence)
            throw new RecurUserException($"{where}: max must be ≤ {Checkpoints.WeightCheck.MaxRecurrence} (got {MaxIterations})");
        double t = EffectiveThreshold;
        if (double.IsNaN(t) || t < 0) throw new RecurUserException($"{where}: the {Name(Criterion)} threshold must be ≥ 0 (got {t})");
        if (Criterion == ExitCriterion.Argmax && (t < 1 || t != Math.Floor(t)))
            throw new RecurUserException($"{where}: argmax=N needs a whole number of iterations N ≥ 1 (got {t})");
        if (Criterion == ExitCriterion.KlOfficial && (Warm || Cache != AdaptiveCacheMode.Full))
            throw new RecurUserException($"{where}: kl-official reproduces Huginn's own generation, which has its own cache and fresh s_0; drop warm=1 and cache=latest");
        return this;
    }

    /// <summary>The canonical spec, e.g. <c>adaptive:kl=0.0005,max=32</c>; <see cref="Parse"/> reads it back.</summary>
    public override string ToString()
    {
        var parts = new List<string>();
        if (Criterion != ExitCriterion.None) parts.Add($"{Name(Criterion)}={EffectiveThreshold.ToString("R", CultureInfo.InvariantCulture)}");
        parts.Add($"max={MaxIterations}");
        if (Warm) parts.Add("warm=1");
        if (Cache == AdaptiveCacheMode.Latest) parts.Add("cache=latest");
        return Prefix + string.Join(',', parts);
    }

    static string Name(ExitCriterion c) => c == ExitCriterion.KlOfficial ? "kl-official" : c.ToString().ToLowerInvariant();

    /// <summary>True when <paramref name="text"/> is an adaptive spec (starts with <c>adaptive</c>).</summary>
    public static bool IsSpec(string text) => text.Trim().StartsWith("adaptive", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Parses <c>adaptive:CRITERION=THRESHOLD,max=T[,warm=1][,cache=full|latest]</c>, e.g. <c>adaptive:kl=5e-4,max=32</c>, <c>adaptive:kl-official=1e-3,max=32</c>,
    /// <c>adaptive:latent=0.03,max=16</c>, <c>adaptive:argmax=5,max=32</c>; a bare criterion name takes its default threshold
    /// (<c>adaptive:kl,max=32</c>); no criterion (<c>adaptive:max=8</c>) runs every token to max. <paramref name="flag"/> names the
    /// option in error messages.
    /// </summary>
    public static AdaptiveOptions Parse(string text, string flag = "recurrences")
    {
        var s = text.Trim();
        if (!s.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
            throw new RecurUserException($"{flag}: '{text}' is not an adaptive spec (expected e.g. adaptive:kl=5e-4,max=32)");
        var o = new AdaptiveOptions(ExitCriterion.None);
        bool haveCriterion = false, haveMax = false;
        foreach (var raw in s[Prefix.Length..].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = raw.IndexOf('=');
            string key = (eq < 0 ? raw : raw[..eq]).Trim().ToLowerInvariant(), value = eq < 0 ? "" : raw[(eq + 1)..].Trim();
            switch (key)
            {
                case "kl" or "latent" or "entropy" or "argmax" or "kl-official":
                {
                    if (haveCriterion) throw new RecurUserException($"{flag}: '{text}' names two exit criteria; give one of kl, latent, entropy, argmax, kl-official");
                    haveCriterion = true;
                    var c = key == "kl-official" ? ExitCriterion.KlOfficial : Enum.Parse<ExitCriterion>(key, ignoreCase: true);
                    double t = eq < 0 ? double.NaN : Number(value, key);
                    o = o with { Criterion = c, Threshold = t };
                    break;
                }
                case "max":
                    o = o with { MaxIterations = (int)Whole(value, key) };
                    haveMax = true;
                    break;
                case "warm":
                    o = o with { Warm = value switch
                    {
                        "1" or "true" => true, "0" or "false" => false,
                        _ => throw new RecurUserException($"{flag}: warm must be 1 or 0 (got '{value}' in '{text}')"),
                    } };
                    break;
                case "cache":
                    o = o with { Cache = value.ToLowerInvariant() switch
                    {
                        "full" => AdaptiveCacheMode.Full, "latest" => AdaptiveCacheMode.Latest,
                        _ => throw new RecurUserException($"{flag}: cache must be full or latest (got '{value}' in '{text}')"),
                    } };
                    break;
                default:
                    throw new RecurUserException($"{flag}: unknown key '{key}' in '{text}'; expected kl, latent, entropy, argmax, kl-official, max, warm or cache");
            }
        }
        if (!haveMax) throw new RecurUserException($"{flag}: '{text}' needs max=T, the most iterations a token may run (e.g. adaptive:kl=5e-4,max=32)");
        return o.Validate($"{flag} '{text}'");

        double Number(string v, string key) =>
            double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d
                : throw new RecurUserException($"{flag}: {key}='{v}' in '{text}' is not a number");
        double Whole(string v, string key) =>
            int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n
                : throw new RecurUserException($"{flag}: {key}='{v}' in '{text}' is not a positive integer");
    }
}

/// <summary>One entry of <c>--recurrences</c>: a fixed T or an adaptive spec.</summary>
public sealed record RecurrenceSetting(int? Fixed, AdaptiveOptions? Adaptive)
{
    /// <summary>"4" or the adaptive spec: the key used in results.json, sample file names and tables.</summary>
    public string Key => Adaptive?.ToString() ?? Fixed!.Value.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// Parses a comma-separated list that mixes integers and adaptive specs: <c>1,2,4,adaptive:kl=5e-4,max=32,adaptive:latent=0.03,max=16</c>.
    /// A part of the form key=value that does not start a new spec belongs to the adaptive spec before it.
    /// Duplicates are dropped, order kept.
    /// </summary>
    public static List<RecurrenceSetting> ParseList(string text, string flag = "recurrences")
    {
        var entries = new List<string>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!AdaptiveOptions.IsSpec(part) && entries.Count > 0 && AdaptiveOptions.IsSpec(entries[^1]) && !int.TryParse(part, out _))
                entries[^1] += "," + part;
            else entries.Add(part);
        }
        var list = new List<RecurrenceSetting>();
        foreach (var e in entries)
        {
            RecurrenceSetting r;
            if (AdaptiveOptions.IsSpec(e))
            {
                if (!e.StartsWith(AdaptiveOptions.Prefix, StringComparison.OrdinalIgnoreCase))
                    throw new RecurUserException($"{flag}: '{e}' needs a colon and settings, e.g. adaptive:kl=5e-4,max=32");
                r = new RecurrenceSetting(null, AdaptiveOptions.Parse(e, flag));
            }
            else
            {
                if (!int.TryParse(e, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int t))
                    throw new RecurUserException($"{flag}: '{e}' is not an integer or an adaptive spec (expected e.g. 1,2,4,8 or adaptive:kl=5e-4,max=32)");
                if (t < 1) throw new RecurUserException($"{flag}: T must be ≥ 1 (got {t})");
                if (t > Checkpoints.WeightCheck.MaxRecurrence)
                    throw new RecurUserException($"{flag}: T must be at most {Checkpoints.WeightCheck.MaxRecurrence} (got {t})");
                r = new RecurrenceSetting(t, null);
            }
            if (!list.Any(x => x.Key == r.Key)) list.Add(r);
        }
        if (list.Count == 0) throw new RecurUserException($"{flag} is empty (expected e.g. 1,2,4,8,16,32 or adaptive:kl=5e-4,max=32)");
        return list;
    }
}
