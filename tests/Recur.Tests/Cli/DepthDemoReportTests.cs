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
