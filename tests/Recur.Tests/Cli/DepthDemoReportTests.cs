using System.Globalization;
using Recur.Cli;
using Recur.Data;
using Recur.Demo;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// report.md's task line states the level a model reaches without the skill the way the figures draw it: the
/// per-bucket no-addition floor for running sums (terms 0–2 make it 14–35 %, not 10 %), chance for chains.
/// </summary>
public sealed class DepthDemoReportTests
{
    static string TaskLine(DepthDemoResult r) =>
        DepthDemoReport.Report(r, DepthDemoReport.Comparisons(r), quick: true).Split('\n').Single(l => l.StartsWith("- **Task**", StringComparison.Ordinal));

    static string Pct(double v) => (100 * v).ToString("0.0", CultureInfo.InvariantCulture);

    [Fact]
    public void Sum_task_line_gives_the_no_addition_floor_of_the_buckets_not_a_uniform_chance()
    {
        var r = DepthDemoPlotTests.FakeRun(DepthTaskKind.Sum);
        var floor = DepthDemoPlots.Floor(r.Options, r.Test, r.BucketIndices());
        double lo = floor.Min(f => f.Mean), hi = floor.Max(f => f.Mean);
        Assert.True(hi - lo > 0.01, $"the fake run's buckets should have different floors ({lo}, {hi})");
        string line = TaskLine(r);
        Assert.DoesNotContain("chance", line, StringComparison.Ordinal);
        Assert.Contains($"floor {Pct(lo)}–{Pct(hi)} % by bucket", line, StringComparison.Ordinal);
    }

    [Fact]
    public void One_hop_gate_is_read_on_the_easiest_bucket_with_k_1_alone_stated_beside_it()
    {
        // A base that solves every k = 1 problem and no k = 2 one: k = 1 alone is a handful of sums, the gate is the bucket.
        var r = DepthDemoPlotTests.FakeRun(DepthTaskKind.Sum);
        var solvesK1 = new ProblemScores([.. r.Test.Select(p => p.K == 1)], [.. r.Test.Select(_ => 1.0)]);
        r = r with { Models = [r.Models[0] with { Scores = new() { [1] = solvesK1 } }, .. r.Models.Skip(1)] };
        int n1 = r.Test.Count(p => p.K == 1), n12 = r.Test.Count(p => p.K <= 2);
        Assert.True(n1 > 0 && n12 > n1);
        string gate = DepthDemoReport.Report(r, DepthDemoReport.Comparisons(r), quick: true).Split('\n').Single(l => l.StartsWith("- One hop", StringComparison.Ordinal));
        Assert.Contains($"(k 1-2, {n12} problems): {Pct((double)n1 / n12)} ± ", gate, StringComparison.Ordinal);
        Assert.Contains("does not meet the ≥ 90 % gate", gate, StringComparison.Ordinal);
        Assert.Contains($"k = 1 alone, {n1} problems: 100.0 ± 0.0 %", gate, StringComparison.Ordinal);
    }

    [Fact]
    public void Pretraining_line_names_direct_rows_when_the_rest_is_direct_and_partial_rows_when_it_is_partial()
    {
        var o = DepthDemoOptions.Default with { PretrainWorked = 0.2, PretrainGapped = 0.4, PretrainDirect = 1.0, PretrainMinK = 1, PretrainMaxK = 6 };
        Assert.Equal("worked rows (20 %), gapped rows (40 %, each value written with probability 0.5), direct rows (40 %, every one of the k hops hidden); k = 1–6",
            DepthDemoReport.PretrainRowsWords(o));
        Assert.Equal("worked rows (40 %), gapped rows (40 %, each value written with probability 0.5), partial rows (20 %, the last k hops hidden); k = 1–6",
            DepthDemoReport.PretrainRowsWords(o with { PretrainWorked = 0.4, PretrainDirect = 0 }));
        Assert.Equal("worked rows (40 %), direct rows (30 %, every one of the k hops hidden), partial rows (30 %, the last k hops hidden); k = 1–6",
            DepthDemoReport.PretrainRowsWords(o with { PretrainWorked = 0.4, PretrainGapped = 0, PretrainDirect = 0.5 }));
        // The recipe line of a report carries it.
        var r = DepthDemoPlotTests.FakeRun(DepthTaskKind.Sum);
        r = r with { Options = r.Options with { PretrainWorked = 0.2, PretrainDirect = 1.0 } };
        Assert.Contains($"steps on {DepthDemoReport.PretrainRowsWords(r.Options)}; loss on", DepthDemoReport.Report(r, DepthDemoReport.Comparisons(r), quick: true), StringComparison.Ordinal);
    }

    [Fact]
    public void Chains_task_line_gives_chance_from_the_floor()
    {
        var r = DepthDemoPlotTests.FakeRun(DepthTaskKind.Chains);
        Assert.Contains("argmax over the whole vocabulary, chance 10.0 %;", TaskLine(r), StringComparison.Ordinal);
    }

    [Fact]
    public void Chance_words_give_one_value_when_every_bucket_has_the_same_floor_and_skip_empty_buckets()
    {
        var o = DepthDemoOptions.Default;
        Assert.Equal("floor 20.0 %: what a guess that adds nothing scores, see below",
            DepthDemoReport.ChanceWords(o, [new Estimate(0.2, 0.01, 50), new Estimate(double.NaN, double.NaN, 0), new Estimate(0.2, 0.02, 30)]));
        Assert.Equal("no test problems to state a floor on", DepthDemoReport.ChanceWords(o, [new Estimate(double.NaN, double.NaN, 0)]));
    }
}
