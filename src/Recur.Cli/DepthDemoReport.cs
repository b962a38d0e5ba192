using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Demo;

namespace Recur.Cli;

/// <summary>results.json, report.md and the PNGs of a depth-task demo run (docs/demo.md).</summary>
static class DepthDemoReport
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    static string Pct(double v) => (100 * v).ToString("0.0", Inv);
    static string Pts(Estimate e) => $"{Signed(100 * e.Mean, 1)} ± {(100 * e.Se).ToString("0.0", Inv)}";

    /// <summary>
    /// <paramref name="v"/> rounded to <paramref name="decimals"/> places with its sign always written ("+" or "−"); the sign
    /// is the rounded value's, so a tiny negative difference reads "+0.000". (A custom format such as "+0.000;−0.000" prints
    /// "-+0.000" there: .NET formats a negative value that rounds to zero with the first section and a "-" before it.)
    /// </summary>
    public static string Signed(double v, int decimals)
    {
        double r = Math.Round(v, decimals, MidpointRounding.AwayFromZero);
        return (r < 0 ? "−" : "+") + Math.Abs(r).ToString("F" + decimals.ToString(Inv), Inv);
    }

    /// <summary>A comparison on the same problems: a − b with its paired SE.</summary>
    public sealed record Comparison(string Claim, string Bucket, string What, Estimate Accuracy, Estimate Loss);

    public static void Write(DepthDemoResult r, string dir, bool quick)
    {
        var comps = Comparisons(r);
        AtomicFile.WriteAllText(Path.Combine(dir, "results.json"), Json(r, comps, quick).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        DepthDemoPlots.WriteAll(DepthDemoPlots.From(r), dir);
        AtomicFile.WriteAllText(Path.Combine(dir, "report.md"), Report(r, comps, quick));
    }

    static JsonObject Stats(ProblemScores s, int[] idx)
    {
        var a = DepthDemoResult.Accuracy(s, idx);
        var l = DepthDemoResult.Loss(s, idx);
        return new JsonObject { ["accuracy"] = a.Mean, ["accuracy_se"] = a.Se, ["answer_loss"] = l.Mean, ["answer_loss_se"] = l.Se, ["n"] = a.N };
    }

    static JsonObject Json(DepthDemoResult r, List<Comparison> comps, bool quick)
    {
        var b = r.BucketIndices();
        var all = Enumerable.Range(0, r.Test.Count).ToArray();
        JsonNode Est(Estimate e) => new JsonObject { ["diff"] = e.Mean, ["se"] = e.Se, ["n"] = e.N, ["beyond_2se"] = e.Beyond2Se };
        return new JsonObject
        {
            // Timings and the machine: everything else is a function of the options and the seed.
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", Inv),
            ["machine"] = r.Machine,
            ["wall_seconds"] = r.WallSeconds,
            ["quick"] = quick,
            ["options"] = JsonSerializer.SerializeToNode(r.Options, DepthDemoOptionsJson),
            ["seq_len"] = r.SeqLen,
            ["data"] = r.DataSummary,
            ["buckets"] = new JsonArray(r.Options.Buckets.Select(x => (JsonNode)x).ToArray()),
            ["models"] = new JsonArray(r.Models.Select(m => (JsonNode)new JsonObject
            {
                ["name"] = m.Name, ["description"] = m.Description, ["recurrent"] = m.Recurrent, ["steps"] = m.Steps,
                ["train_flops"] = m.TrainFlops, ["wall_seconds"] = m.WallSeconds,
                ["by_t"] = new JsonObject(m.Scores.Select(kv => KeyValuePair.Create($"T={kv.Key}", (JsonNode?)new JsonObject(
                    r.Options.Buckets.Select((name, i) => KeyValuePair.Create(name, (JsonNode?)Stats(kv.Value, b[i])))
                        .Append(KeyValuePair.Create("all", (JsonNode?)Stats(kv.Value, all))))))),
            }).ToArray()),
            ["comparisons"] = new JsonArray(comps.Select(c => (JsonNode)new JsonObject
            {
                ["claim"] = c.Claim, ["bucket"] = c.Bucket, ["what"] = c.What, ["accuracy"] = Est(c.Accuracy), ["answer_loss"] = Est(c.Loss),
            }).ToArray()),
        };
    }

    static readonly JsonSerializerOptions DepthDemoOptionsJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    static DepthModelResult? Find(DepthDemoResult r, string name) => r.Models.FirstOrDefault(m => m.Name == name);

    /// <summary>The T with the highest accuracy on the problems <paramref name="idx"/> (the smallest such T on ties).</summary>
    public static int BestT(DepthModelResult m, int[] idx) =>
        m.Scores.OrderByDescending(kv => DepthDemoResult.Accuracy(kv.Value, idx).Mean).ThenBy(kv => kv.Key).First().Key;

    /// <summary>
    /// The claims, per bucket, as paired differences on the same problems: (b) recurrent at its best T and at T = 32
    /// against T = 1; (a) recurrent against the equal-FLOPs baseline; (c) recurrent from the base against random init.
    /// "Best T" is picked on the same problems, which favours it slightly; the comparisons at the train recurrence are
    /// fixed in advance and carry no such selection.
    /// </summary>
    public static List<Comparison> Comparisons(DepthDemoResult r)
    {
        var list = new List<Comparison>();
        var rec = Find(r, DepthDemo.RecurrentName);
        var bl = Find(r, DepthDemo.BaselineName);
        var rnd = Find(r, DepthDemo.RandomName);
        var b = r.BucketIndices();
        int tr = r.Options.TrainRecurrence;
        for (int i = 0; i < b.Length; i++)
        {
            string name = r.Options.Buckets[i];
            var idx = b[i];
            if (idx.Length == 0) continue;
            Comparison C(string claim, string what, ProblemScores x, ProblemScores y) =>
                new(claim, name, what, DepthDemoResult.AccuracyDiff(x, y, idx), DepthDemoResult.LossDiff(x, y, idx));
            if (rec is not null)
            {
                int best = BestT(rec, idx);
                int last = rec.Scores.Keys.Max();
                list.Add(C("b", $"recurrent T={best} (best) − T=1", rec.Scores[best], rec.Scores[1]));
                if (rec.Scores.ContainsKey(tr)) list.Add(C("b", $"recurrent T={tr} (train recurrence) − T=1", rec.Scores[tr], rec.Scores[1]));
                list.Add(C("b-saturation", $"recurrent T={last} − T={best} (best)", rec.Scores[last], rec.Scores[best]));
                if (bl is not null)
                {
                    list.Add(C("a", $"recurrent T={best} (best) − baseline", rec.Scores[best], bl.Scores[1]));
                    if (rec.Scores.ContainsKey(tr)) list.Add(C("a", $"recurrent T={tr} (train recurrence) − baseline", rec.Scores[tr], bl.Scores[1]));
                }
                if (rnd is not null && rec.Scores.ContainsKey(tr) && rnd.Scores.ContainsKey(tr))
                {
                    list.Add(C("c", $"from base − random init, both T={tr}", rec.Scores[tr], rnd.Scores[tr]));
                    int rb = BestT(rnd, idx);
                    list.Add(C("c", $"from base T={best} − random init T={rb} (each at its best)", rec.Scores[best], rnd.Scores[rb]));
                }
            }
        }
        return list;
    }

    /// <summary>A table with a row per model and T and a column per bucket, each cell <paramref name="cell"/> of that bucket's problems.</summary>
    static void ScoreTable(StringBuilder sb, DepthDemoResult r, string heading, Func<ProblemScores, int[], string> cell)
    {
        var b = r.BucketIndices();
        sb.AppendLine(heading);
        sb.AppendLine();
        sb.AppendLine($"| model | T | {string.Join(" | ", r.Options.Buckets.Select(x => "k " + x))} |");
        sb.AppendLine($"|---|---|{string.Concat(r.Options.Buckets.Select(_ => "---|"))}");
        foreach (var m in r.Models)
            foreach (var (t, s) in m.Scores)
                sb.AppendLine($"| {m.Name} | {(m.Recurrent ? t.ToString(Inv) : "–")} | {string.Join(" | ", b.Select(idx => cell(s, idx)))} |");
        sb.AppendLine();
    }

    /// <summary>
    /// The base's pretraining rows as the report's recipe line states them: each form's share of the rows drawn
    /// (worked, gapped, then the rest split into direct and partial by <see cref="DepthDemoOptions.PretrainDirect"/>),
    /// listing only the forms present. The data line gives the counts after held-out problems are skipped.
    /// </summary>
    internal static string PretrainRowsWords(DepthDemoOptions o)
    {
        double rest = Math.Max(0, 1 - o.PretrainWorked - o.PretrainGapped), direct = rest * o.PretrainDirect, partial = rest - direct;
        var parts = new List<string> { FormattableString.Invariant($"worked rows ({100 * o.PretrainWorked:0} %)") };
        if (o.PretrainGapped > 0) parts.Add(FormattableString.Invariant($"gapped rows ({100 * o.PretrainGapped:0} %, each value written with probability {o.WriteProbability})"));
        if (direct > 1e-9) parts.Add(FormattableString.Invariant($"direct rows ({100 * direct:0} %, every one of the k hops hidden)"));
        if (partial > 1e-9) parts.Add(FormattableString.Invariant($"partial rows ({100 * partial:0} %, the last k hops hidden)"));
        return FormattableString.Invariant($"{string.Join(", ", parts)}; k = {o.PretrainMinK}–{o.PretrainMaxK}");
    }

    /// <summary>
    /// What accuracy a model gets without the skill, in the task line: the same per-bucket floor the figures draw
    /// (<see cref="DepthDemoPlots.Floor"/>). Sums with small terms have no single chance level — a guess that adds
    /// nothing scores a different rate on every bucket — so the line gives that floor's range, not 10 %.
    /// </summary>
    internal static string ChanceWords(DepthDemoOptions o, IReadOnlyList<Estimate> floor)
    {
        var known = floor.Where(f => double.IsFinite(f.Mean)).Select(f => f.Mean).ToList();
        if (known.Count == 0) return "no test problems to state a floor on";
        double lo = known.Min(), hi = known.Max();
        string range = Pct(lo) == Pct(hi) ? $"{Pct(lo)} %" : $"{Pct(lo)}–{Pct(hi)} % by bucket";
        return o.Task == Recur.Data.DepthTaskKind.Sum
            ? $"floor {range}: what a guess that adds nothing scores, see below"
            : $"chance {range}";
    }

    internal static string Report(DepthDemoResult r, List<Comparison> comps, bool quick)
    {
        var o = r.Options;
        var sb = new StringBuilder();
        var b = r.BucketIndices();
        var basePre = Find(r, DepthDemo.BaseName);
        var rec = Find(r, DepthDemo.RecurrentName);
        var bl = Find(r, DepthDemo.BaselineName);
        var rnd = Find(r, DepthDemo.RandomName);
        string task = o.Task == Recur.Data.DepthTaskKind.Sum ? $"running sum mod 10 (`7+3+5=` → `5`; terms 0–{o.MaxOffset})" : $"variable chains mod 10 ({o.Chains} interleaved chains, `7>a;a+3>q;…` then `?q=`)";
        sb.AppendLine("# Recur demo: retrofitted recurrence on a depth-bound task");
        sb.AppendLine();
        sb.AppendLine($"Run on {DateTime.UtcNow:yyyy-MM-dd} on {r.Machine}; wall time {r.WallSeconds / 60:0.0} min{(quick ? " (`--quick`: smoke-sized, the numbers are not meaningful)" : "")}.");
        sb.AppendLine();
        sb.AppendLine("## What was done");
        sb.AppendLine();
        var floor = DepthDemoPlots.Floor(o, r.Test, b);
        sb.AppendLine($"- **Task**: {task}; difficulty k = hops whose values are not written (docs/variable-chains.md). Answers are one digit, scored by one teacher-forced forward per problem (accuracy = the answer is the argmax over the whole vocabulary, {ChanceWords(o, floor)}; answer loss = −log p(answer)). Data: {r.DataSummary}.");
        if (o.BaseModel is not null) sb.AppendLine($"- **a. Base**: reused from `{o.BaseModel}` (pretrained by an earlier run; its recipe is in that run's report).");
        else sb.AppendLine($"- **a. Base**: the demo Llama (8 layers, width 128) pretrained from scratch for {basePre?.Steps} steps on {PretrainRowsWords(o)}; loss on the written values and answers only.");
        if (rec is not null)
        {
            sb.AppendLine($"- **b. Retrofit**: cut to (p, r, c) = ({o.Shape}) (METHOD §2.2){(o.AdapterInit == "identity" ? " with the identity adapter [0 | I]" : "")}, post-trained {rec.Steps} steps with the paper's recipe: 1-sqrt curriculum of the mean recurrence to {o.TrainRecurrence} over 75 %, Poisson-lognormal depths, truncated backprop through {o.BackpropDepth} iterations, Muon {o.MuonLr} + AdamW {o.AdamWLr}, WSD schedule, clipping 1.0. Post-training rows: {100 * o.PostWorked:0} % worked, {(o.PostGapped > 0 ? $"{100 * o.PostGapped:0} % gapped, " : "")}the rest direct/partial with k = {o.PostMinK}–{o.PostMaxK}.");
            if (bl is not null) sb.AppendLine($"- **c. Baseline**: the base post-trained on the same rows without recurrence for {bl.Steps} steps — equal training FLOPs by METHOD §6 ({bl.TrainFlops.ToString("0.00e+0", Inv)} vs {rec.TrainFlops.ToString("0.00e+0", Inv)}).");
            if (rnd is not null) sb.AppendLine($"- **d. Random init**: the same ({o.Shape}) shape and recipe from random weights ({rnd.TrainFlops.ToString("0.00e+0", Inv)} FLOPs).");
        }
        sb.AppendLine($"- Buckets of k: {string.Join(", ", o.Buckets.Select((x, i) => $"{x} ({b[i].Length} problems{(o.BucketRanges()[i].Hi > o.PostMaxK ? ", deeper than post-training saw" : "")})"))}. SEs are of a mean over problems; model-vs-model and T-vs-T differences are paired over the same problems.");
        if (o.Task == Recur.Data.DepthTaskKind.Sum)
        {
            sb.AppendLine($"- Floor: a guess that adds nothing (the first term plus the most likely total of k terms 0–{o.MaxOffset}) scores {string.Join(", ", o.Buckets.Select((x, i) => $"k {x} {Pct(floor[i].Mean)} %"))} on these problems, so chance is not 10 % here; the figures draw this floor per bucket.");
        }
        sb.AppendLine();

        sb.AppendLine("## Gates: does the base learn the step, and is it depth-limited?");
        sb.AppendLine();
        if (basePre is not null)
        {
            var s = basePre.Scores[1];
            var one = r.Test.Select((p, i) => (p, i)).Where(x => x.p.K == 1).Select(x => x.i).ToArray();
            var oneHop = DepthDemoResult.Accuracy(s, one);
            var trained = Enumerable.Range(0, b.Length).Where(i => o.BucketRanges()[i].Hi <= o.PostMaxK && b[i].Length > 0).ToArray();
            // The gate is read on the easiest bucket (docs/demo.md): with sums, k = 1 alone holds only a quarter of
            // 10·(max_offset + 1) problems (7 with terms 0–2), too few to decide ≥ 90 %, so it is stated beside it.
            if (trained.Length >= 1)
            {
                var easy = DepthDemoResult.Accuracy(s, b[trained[0]]);
                sb.AppendLine($"- One hop, the easiest bucket (k {o.Buckets[trained[0]]}, {b[trained[0]].Length} problems): {Pct(easy.Mean)} ± {Pct(easy.Se)} % — {(easy.Mean >= 0.9 ? "meets" : "does not meet")} the ≥ 90 % gate (k = 1 alone, {one.Length} problems: {Pct(oneHop.Mean)} ± {Pct(oneHop.Se)} %).");
            }
            if (trained.Length >= 2)
            {
                var d = DepthDemoResult.Accuracy(s, b[trained[0]]).Mean - DepthDemoResult.Accuracy(s, b[trained[^1]]).Mean;
                sb.AppendLine($"- Depth cliff: k {o.Buckets[trained[0]]} {Pct(DepthDemoResult.Accuracy(s, b[trained[0]]).Mean)} % → k {o.Buckets[trained[^1]]} {Pct(DepthDemoResult.Accuracy(s, b[trained[^1]]).Mean)} %, a fall of {Pct(d)} points — {(d >= 0.2 ? "meets" : "does not meet")} the ≥ 20-point gate.");
            }
        }
        sb.AppendLine();

        ScoreTable(sb, r, "## Accuracy (%) per difficulty bucket, ± one SE", (s, idx) => $"{Pct(DepthDemoResult.Accuracy(s, idx).Mean)} ± {Pct(DepthDemoResult.Accuracy(s, idx).Se)}");
        ScoreTable(sb, r, "## Answer loss (nats) per difficulty bucket", (s, idx) => DepthDemoResult.Loss(s, idx).Mean.ToString("0.000", Inv));
        if (rec is not null)
        {
            sb.AppendLine("![accuracy against T per bucket](accuracy_vs_recurrence.png)");
            sb.AppendLine();
            if (rnd is not null) { sb.AppendLine("![pretrained vs random init](pretrained_vs_random.png)"); sb.AppendLine(); }
            sb.AppendLine("![loss against FLOPs](loss_vs_flops.png)");
            sb.AppendLine();
            sb.AppendLine("## Claims, per bucket (paired differences on the same problems, percentage points ± one SE)");
            sb.AppendLine();
            sb.AppendLine("\"Shown\" means the difference is beyond two paired SEs in the claimed direction; anything else is reported as not shown. \"Best T\" is chosen on the same problems (a slight optimistic bias); the rows at the train recurrence are fixed in advance.");
            sb.AppendLine();
            sb.AppendLine("| claim | bucket | comparison | accuracy | answer loss (nats) | verdict |");
            sb.AppendLine("|---|---|---|---|---|---|");
            foreach (var c in comps)
            {
                string verdict = c.Claim == "b-saturation"
                    ? (c.Accuracy.Mean < 0 && c.Accuracy.Beyond2Se ? "collapses beyond 2 SE" : "no collapse beyond 2 SE")
                    : c.Accuracy.Mean > 0 && c.Accuracy.Beyond2Se ? "shown" : c.Accuracy.Mean < 0 && c.Accuracy.Beyond2Se ? "reversed" : "not shown";
                sb.AppendLine($"| {c.Claim} | k {c.Bucket} | {c.What} | {Pts(c.Accuracy)} | {Signed(c.Loss.Mean, 3)} ± {c.Loss.Se.ToString("0.000", Inv)} | {verdict} |");
            }
            sb.AppendLine();
            sb.AppendLine("(b) = test-time scaling, (a) = against the non-recurrent baseline at equal training FLOPs, (c) = pretrained against random initialisation. A negative answer-loss difference is an improvement.");
            sb.AppendLine();
        }
        sb.AppendLine("## Training cost");
        sb.AppendLine();
        sb.AppendLine("| model | steps | training FLOPs | wall time |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var m in r.Models) sb.AppendLine($"| {m.Name} | {m.Steps} | {m.TrainFlops.ToString("0.00e+0", Inv)} | {m.WallSeconds:0} s |");
        sb.AppendLine();
        sb.AppendLine("Every statement above is generated from the measured numbers; nothing is tuned after the fact.");
        return sb.ToString();
    }
}
