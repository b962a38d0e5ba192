using Recur.Cli;
using Recur.Data;
using Recur.Demo;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;
using Xunit.Abstractions;

namespace Recur.Tests.Cli;

/// <summary>
/// The depth demo's figures (issue 18 point 3): the floor drawn is what a guess without addition scores on the actual
/// problems, T sits on a log₂ axis with ticks at the measured T, non-recurrent models are horizontal lines, SEs are
/// drawn, titles name the task and model, FLOPs are in engineering notation, and a run folder redraws the same figures.
/// </summary>
public sealed class DepthDemoPlotTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2, 3, 7.0 / 27)]   // totals 0..6 of three terms 0–2: the mode 3 has 7 of 27 ways
    [InlineData(2, 2, 3.0 / 9)]
    [InlineData(9, 4, 0.1)]        // uniform terms: every total mod 10 is equally likely
    public void Sum_floor_is_the_probability_of_the_most_likely_total(int maxTerm, int k, double expected)
    {
        var o = DepthDemoOptions.Default with { MaxOffset = maxTerm };
        var rng = new SplitMix64(11);
        var problems = Enumerable.Range(0, 4000).Select(_ => VariableChains.Make(o.TaskOptions, ref rng, DepthRowForm.Direct, k)).ToList();
        var floor = DepthDemoPlots.Floor(o, problems, [[.. Enumerable.Range(0, problems.Count)]])[0];
        output.WriteLine($"terms 0–{maxTerm}, k = {k}: {floor.Mean:0.0000} ± {floor.Se:0.0000}, expected {expected:0.0000}");
        Assert.InRange(floor.Mean, expected - 3 * floor.Se, expected + 3 * floor.Se);
        // The default task's floor is far above the 10 % a uniform answer would give (docs/demo.md).
        if (maxTerm == 2) Assert.True(floor.Mean > 0.2);
    }

    [Fact]
    public void Chains_floor_is_chance()
    {
        var o = DepthDemoOptions.Default.ForTask(DepthTaskKind.Chains);
        var floor = DepthDemoPlots.Floor(o, [], [[], []]);
        Assert.All(floor, f => Assert.Equal(0.1, f.Mean));
        Assert.Contains("chance", DepthDemoPlots.FloorLabel(o), StringComparison.Ordinal);
    }

    /// <summary>A small finished run: two buckets, a recurrent model at T = 1, 2, 4, 8, the baseline and random init.</summary>
    internal static DepthDemoResult FakeRun(DepthTaskKind task = DepthTaskKind.Sum)
    {
        var o = DepthDemoOptions.QuickRun.ForTask(task) with { Buckets = ["1-2", "3-8"], Recurrences = [1, 2, 4, 8] };
        var test = VariableChains.TestSet(o.TaskOptions, (ulong)o.Seed, o.TestMinK, o.TestMaxK, o.TestPerK);
        var rng = new Random(5);
        ProblemScores Scores(double p) => new([.. test.Select(_ => rng.NextDouble() < p)], [.. test.Select(_ => rng.NextDouble() * 2)]);
        List<(double, double)> Curve(double start) => [.. Enumerable.Range(1, 30).Select(s => (s * 4.1e10, start * Math.Exp(-s / 8.0) + 0.3))];
        var models = new List<DepthModelResult>
        {
            new() { Name = DepthDemo.BaseName, Description = "", Steps = 16, TrainFlops = 1e12, Scores = new() { [1] = Scores(0.4) }, Curve = Curve(3.8) },
            new() { Name = DepthDemo.BaselineName, Description = "", Steps = 13, TrainFlops = 1.2e12, Scores = new() { [1] = Scores(0.7) }, Curve = Curve(0.6) },
            new() { Name = DepthDemo.RecurrentName, Description = "", Recurrent = true, Steps = 10, TrainFlops = 1.2e12,
                Scores = new(o.Recurrences.ToDictionary(t => t, t => Scores(0.3 + 0.1 * Math.Log2(t)))), Curve = Curve(3.6) },
            new() { Name = DepthDemo.RandomName, Description = "", Recurrent = true, Steps = 10, TrainFlops = 1.2e12,
                Scores = new(o.Recurrences.ToDictionary(t => t, _ => Scores(0.2))), Curve = Curve(3.9) },
        };
        return new DepthDemoResult(o, models, test, 1, "test", 40, "test data");
    }

    [Fact]
    public void Accuracy_panels_put_T_on_log2_ticks_at_the_measured_T_with_error_bars_and_horizontal_references()
    {
        var r = FakeRun();
        var f = DepthDemoPlots.From(r);
        var panels = DepthDemoPlots.AccuracyPanels(f, out var ts)!;
        Assert.Equal([1, 2, 4, 8], ts);
        Assert.Equal(r.Options.Buckets.Length, panels.Plots.Count);
        for (int i = 0; i < panels.Plots.Count; i++)
        {
            var plt = panels.Plots[i];
            plt.GetImageBytes(500, 400, ScottPlot.ImageFormat.Png); // ticks are generated at render
            var ticks = Assert.IsType<ScottPlot.TickGenerators.NumericManual>(plt.Axes.Bottom.TickGenerator);
            var major = ticks.Ticks.Where(t => t.IsMajor).ToList();
            Assert.Equal(ts.Select(t => Math.Log2(t)), major.Select(t => t.Position));
            Assert.Equal(ts.Select(t => t.ToString(System.Globalization.CultureInfo.InvariantCulture)), major.Select(t => t.Label));
            // One curve with ± 1 SE bars; the baseline and the bucket's floor are horizontal lines at their values.
            var bars = Assert.Single(plt.GetPlottables<ScottPlot.Plottables.ErrorBar>());
            Assert.Equal(ts.Length, bars.Xs.Count);
            var lines = plt.GetPlottables<ScottPlot.Plottables.HorizontalLine>().Select(l => l.Y).ToList();
            var baseline = DepthDemoResult.Accuracy(r.Models[1].Scores[1], r.BucketIndices()[i]);
            Assert.Contains(lines, y => Math.Abs(y - 100 * baseline.Mean) < 1e-9);
            Assert.Contains(lines, y => Math.Abs(y - 100 * f.Floor[i].Mean) < 1e-9);
            // No legend inside a panel: the key has a cell of its own.
            Assert.False(plt.Legend.IsVisible);
        }
        Assert.Contains(panels.Legend, l => l.LabelText.Contains("no-addition guess", StringComparison.Ordinal));
    }

    [Fact]
    public void Headings_name_the_task_and_the_model()
    {
        var o = DepthDemoOptions.Default;
        Assert.Equal("running sum mod 10 (terms 0–2)", DepthDemoPlots.TaskName(o));
        Assert.Contains("(2,2,2) retrofit of the 8-layer demo Llama", DepthDemoPlots.ModelName(o), StringComparison.Ordinal);
        Assert.Contains("variable chains", DepthDemoPlots.TaskName(o.ForTask(DepthTaskKind.Chains)), StringComparison.Ordinal);
        var f = DepthDemoPlots.From(FakeRun());
        string why = DepthDemoPlots.WhyHigher(f);
        Assert.Contains("2 of the base's 8 layers are removed", why, StringComparison.Ordinal);
        // The heading's numbers are the run's: the retrofit's and the baseline's step-1 losses, and ln V.
        Assert.Contains(FormattableString.Invariant($"loss is {f.Model(DepthDemo.RecurrentName)!.Curve[0].Loss:0.00} (uniform guess {Math.Log(f.VocabSize):0.00}; the base, at the baseline's step 1: {f.Model(DepthDemo.BaselineName)!.Curve[0].Loss:0.00})"), why, StringComparison.Ordinal);
    }

    [Fact]
    public void Loss_plot_labels_flops_in_engineering_notation_and_marks_where_each_model_starts()
    {
        var f = DepthDemoPlots.From(FakeRun());
        var plt = DepthDemoPlots.LossPlot(f)!;
        var ticks = Assert.IsType<ScottPlot.TickGenerators.NumericAutomatic>(plt.Axes.Bottom.TickGenerator);
        Assert.Equal("1.2e12", ticks.LabelFormatter(1.2e12));
        Assert.Contains(plt.GetPlottables<ScottPlot.Plottables.HorizontalLine>(), l => Math.Abs(l.Y - Math.Log(f.VocabSize)) < 1e-9);
        Assert.Equal(3, plt.GetPlottables<ScottPlot.Plottables.Marker>().Count());
        Assert.Contains("post-training loss against FLOPs", plt.Axes.Title.Label.Text, StringComparison.Ordinal);
        Assert.Contains(DepthDemoPlots.WhyHigher(f), plt.Axes.Title.Label.Text, StringComparison.Ordinal);
        Assert.False(plt.Legend.IsVisible);
    }

    [Fact]
    public void A_run_folder_redraws_the_figures_from_its_results_and_metrics()
    {
        var r = FakeRun();
        string dir = TestModels.TempDir("recur-demo-plots");
        foreach (var (name, sub) in new[] { (DepthDemo.BaselineName, "baseline"), (DepthDemo.RecurrentName, "recurrent"), (DepthDemo.RandomName, "random-init") })
        {
            Directory.CreateDirectory(Path.Combine(dir, sub));
            int step = 0;
            foreach (var (flops, loss) in r.Models.First(m => m.Name == name).Curve)
                TrainRun.AppendMetrics(Path.Combine(dir, sub), new StepMetrics { Step = ++step, GlobalStep = step, TotalSteps = 30, Loss = loss, Flops = flops });
        }
        DepthDemoReport.Write(r, dir, quick: true);
        foreach (var png in new[] { "accuracy_vs_recurrence.png", "pretrained_vs_random.png", "loss_vs_flops.png" })
            Assert.True(File.ReadAllBytes(Path.Combine(dir, png)) is [0x89, (byte)'P', (byte)'N', (byte)'G', ..], png);
        var a = DepthDemoPlots.From(r);
        var b = DepthDemoPlots.FromRunFolder(dir);
        Assert.Equal(a.BucketSizes, b.BucketSizes);
        Assert.Equal(a.Floor, b.Floor);
        Assert.Equal(a.VocabSize, b.VocabSize);
        Assert.Equal(a.Models.Select(m => m.Name), b.Models.Select(m => m.Name));
        foreach (var (x, y) in a.Models.Zip(b.Models))
        {
            Assert.Equal(x.Accuracy.Keys, y.Accuracy.Keys);
            foreach (var t in x.Accuracy.Keys)
                for (int i = 0; i < x.Accuracy[t].Length; i++)
                {
                    Assert.Equal(x.Accuracy[t][i].Mean, y.Accuracy[t][i].Mean, 12);
                    Assert.Equal(x.Accuracy[t][i].Se, y.Accuracy[t][i].Se, 12);
                }
            if (x.Name != DepthDemo.BaseName) Assert.Equal(x.Curve, y.Curve);
        }
        Assert.Contains("- Floor: a guess that adds nothing", File.ReadAllText(Path.Combine(dir, "report.md")), StringComparison.Ordinal);
        output.WriteLine($"figures in {dir}");
    }
}
