using Recur.Cli;
using Recur.Evaluation;
using Recur.Tasks;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;
using Xunit.Abstractions;

namespace Recur.Tests.Cli;

/// <summary>The figures train and eval write: labels in engineering notation, measured T as ticks, files that decode.</summary>
public sealed class PlotTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(1.2e13, "1.2e13")]
    [InlineData(2e10, "2e10")]
    [InlineData(9.996e9, "1e10")]
    [InlineData(512, "512")]
    [InlineData(0.5, "0.5")]
    [InlineData(0, "0")]
    [InlineData(3.25e-4, "3.25e-4")]
    public void Flops_are_labelled_in_engineering_notation(double value, string label) => Assert.Equal(label, Plots.Engineering(value));

    static bool IsPng(string path) => File.ReadAllBytes(path) is [0x89, (byte)'P', (byte)'N', (byte)'G', ..];

    [Fact]
    public void A_run_folder_gets_its_three_figures_titled_with_the_run()
    {
        string dir = Path.Combine(TestModels.TempDir("recur-plots"), "run");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, TrainRun.RecipeFile), """{ "name": "smoke", "model": "preset:tiny", "retrofit": { "shape": "1,2,1" } }""");
        var rng = new Random(3);
        double flops = 0;
        for (int s = 1; s <= 120; s++)
        {
            flops += 4.1e8 * (1 + s / 60.0);
            double loss = 2 + 2.5 * Math.Exp(-s / 30.0) + 0.05 * rng.NextDouble();
            var val = s % 20 == 0 ? new Dictionary<string, double> { ["T=1"] = loss + 0.1, ["T=2"] = loss + 0.02, ["T=4"] = loss + 0.02 } : null;
            TrainRun.AppendMetrics(dir, new StepMetrics { Step = s, GlobalStep = s, TotalSteps = 120, Loss = loss, Flops = flops, ValLoss = val });
        }
        TrainCommand.WritePlots(dir);
        foreach (var f in new[] { "loss_vs_step.png", "loss_vs_flops.png", "val_loss.png" })
            Assert.True(IsPng(Path.Combine(dir, f)), f);
        output.WriteLine($"figures in {dir}");
    }

    [Fact]
    public void Eval_figure_names_the_run_behind_a_generic_model_folder_and_renders()
    {
        Assert.Equal("smoke/model", EvalPlot.ModelLabel("/x/runs/smoke/model"));
        Assert.Equal("smoke/phase1-step0000060", EvalPlot.ModelLabel("/x/runs/smoke/checkpoints/phase1-step0000060"));
        Assert.Equal("TinyLlama", EvalPlot.ModelLabel("/x/models/TinyLlama/"));
        var info = EvalTasks.Get("gsm8k");
        var runs = new[] { 1, 2, 4, 8 }.Select(t => (t, new EvalResult("gsm8k", 100, new Dictionary<string, double>
        {
            [info.PlotMetrics[0]] = 0.1 + 0.02 * Math.Log2(t), [EvalReport.StderrKey(info.PlotMetrics[0])] = 0.03,
            [info.PlotMetrics[^1]] = 0.1 + 0.02 * Math.Log2(t), [EvalReport.StderrKey(info.PlotMetrics[^1])] = 0.03,
        }, new Dictionary<string, string>(), []))).ToList();
        // Scores start just below 0, so a score of 0 is drawn above the frame rather than hidden under it.
        var zero = new[] { 1, 2, 4 }.Select(t => (t, new EvalResult("gsm8k", 100, new Dictionary<string, double>
        {
            [info.PlotMetrics[0]] = 0, [EvalReport.StderrKey(info.PlotMetrics[0])] = 0,
        }, new Dictionary<string, string>(), []))).ToList();
        var limits = EvalPlot.Build(info, zero, "smoke/model").Axes.GetLimits();
        Assert.True(limits.Bottom < 0 && limits.Top > 0, $"{limits.Bottom}..{limits.Top}");
        string path = Path.Combine(TestModels.TempDir("recur-plots"), "plot_gsm8k.png");
        File.WriteAllBytes(path, EvalPlot.Png(info, runs, "smoke/model"));
        Assert.True(IsPng(path));
        output.WriteLine($"figure {path}");
    }

    [Fact]
    public void Line_figures_draw_t_on_log2_ticks_at_the_measured_t_references_as_horizontal_lines_and_the_legend_outside()
    {
        double[] ts = [1, 2, 4, 6, 32];
        var plt = Plots.Build("title", "T", "score", [new Plots.Series("recurrent", ts, [.. ts.Select(t => 10 + t)], [.. ts.Select(_ => 2.0)])],
            Plots.XAxis.Log2Measured, [new Plots.Reference("baseline", 30, 1.5)]);
        plt.GetImageBytes(600, 400, ScottPlot.ImageFormat.Png); // ticks are generated at render
        var ticks = Assert.IsType<ScottPlot.TickGenerators.NumericManual>(plt.Axes.Bottom.TickGenerator);
        Assert.Equal(ts.Select(Math.Log2), ticks.Ticks.Where(t => t.IsMajor).Select(t => t.Position));
        Assert.Equal(["1", "2", "4", "6", "32"], ticks.Ticks.Where(t => t.IsMajor).Select(t => t.Label));
        Assert.Equal(30, Assert.Single(plt.GetPlottables<ScottPlot.Plottables.HorizontalLine>()).Y);
        Assert.Single(plt.GetPlottables<ScottPlot.Plottables.ErrorBar>());
        // The legend is a panel beside the data area, not a box inside it.
        Assert.False(plt.Legend.IsVisible);
        Assert.Contains(plt.Axes.GetPanels(), p => p is ScottPlot.Panels.LegendPanel { Edge: ScottPlot.Edge.Right });
    }

    [Fact]
    public void Flops_axes_label_ticks_in_engineering_notation()
    {
        var plt = Plots.Build("t", "FLOPs", "loss", [new Plots.Series("a", [1e12, 2e12, 3e12], [3, 2, 1])], Plots.XAxis.LinearEngineering);
        var ticks = Assert.IsType<ScottPlot.TickGenerators.NumericAutomatic>(plt.Axes.Bottom.TickGenerator);
        Assert.Equal("1.2e13", ticks.LabelFormatter(1.2e13));
    }

    [Fact]
    public void A_runs_figures_name_its_model_and_data()
    {
        string dir = Path.Combine(TestModels.TempDir("recur-plots"), "run");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, TrainRun.RecipeFile), """{ "name": "smoke", "model": "preset:tiny", "retrofit": { "shape": "1,2,1" }, "synth_data": { "steps": "1-2" } }""");
        Assert.Equal("smoke: (1,2,1) retrofit of preset:tiny on synthetic arithmetic (1-2 steps)", TrainCommand.RunLabel(dir));
        File.WriteAllText(Path.Combine(dir, TrainRun.RecipeFile), """{ "name": "math", "model": "../models/TinyLlama/", "data": [{ "path": "data/math.jsonl" }] }""");
        Assert.Equal("math: TinyLlama on math.jsonl", TrainCommand.RunLabel(dir));
    }

    [Fact]
    public void Long_titles_wrap_at_spaces_instead_of_running_off_the_image()
    {
        const string title = "Synthetic word problems (1–4 steps, answered directly): accuracy against test-time recurrence T — (2,2,2) retrofit of the 8-layer demo Llama";
        var lines = Plots.Wrap(title, 87).Split('\n');
        Assert.True(lines.Length > 1);
        Assert.All(lines, l => Assert.True(l.Length <= 87, l));
        Assert.Equal(title, string.Join(" ", lines));
        Assert.Equal(Plots.Wrap(title, 87), Plots.Build(title, "x", "y", [new Plots.Series("a", [1, 2], [1, 2])], Plots.XAxis.Linear).Axes.Title.Label.Text);
    }

    [Fact]
    public void A_lower_bound_alone_keeps_the_data_range_above_it()
    {
        var plt = Plots.Build("t", "T", "accuracy", [new Plots.Series("a", [1, 2, 4], [23, 25, 31], [4, 4, 4])], Plots.XAxis.Log2Measured, yMin: 0);
        var y = plt.Axes.GetLimits();
        Assert.Equal(0, y.Bottom);
        Assert.True(y.Top >= 35, $"top {y.Top}");
    }
}
