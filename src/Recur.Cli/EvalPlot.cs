using Recur.Evaluation;
using Recur.Tasks;

namespace Recur.Cli;

/// <summary>Score-against-T figures (the paper's Fig. 3 style: accuracy per test-time recurrence), rendered headless with ScottPlot.</summary>
static class EvalPlot
{
    /// <summary>
    /// PNG bytes: each of the task's plotted metrics against T on a log₂ axis with ticks at the evaluated T, ±1 standard
    /// error bars (Plots' rules: legend outside the data, distinguishable series).
    /// </summary>
    public static byte[] Png(EvalTaskInfo info, IReadOnlyList<(int T, EvalResult Result)> runs, string modelName, int width = 960, int height = 520) =>
        Build(info, runs, modelName, width).GetImageBytes(width, height, ScottPlot.ImageFormat.Png);

    /// <summary>The figure of <see cref="Png"/> as a ScottPlot object (tests read its limits).</summary>
    internal static ScottPlot.Plot Build(EvalTaskInfo info, IReadOnlyList<(int T, EvalResult Result)> runs, string modelName, int width = 960)
    {
        var series = new List<Plots.Series>();
        foreach (var metric in info.PlotMetrics)
        {
            var pts = runs.Where(r => r.Result.Metrics.TryGetValue(metric, out var v) && double.IsFinite(v)).OrderBy(r => r.T).ToList();
            if (pts.Count == 0) continue;
            var se = pts.Select(r => r.Result.Metrics.GetValueOrDefault(EvalReport.StderrKey(metric), double.NaN)).ToArray();
            series.Add(new Plots.Series(metric, [.. pts.Select(r => (double)r.T)], [.. pts.Select(r => r.Result.Metrics[metric])], se.All(double.IsFinite) ? se : null));
        }
        double? yMax = null;
        if (info.Kind != EvalTaskKind.ValLoss)
        {
            // Scores are fractions: start the axis at 0 so curves of different models read alike, with headroom above the
            // best point and its error bar.
            double top = series.SelectMany(s => s.Y.Select((y, k) => y + (s.Error?[k] ?? 0))).DefaultIfEmpty(0).Max();
            yMax = Math.Min(1.0, Math.Max(0.1, top * 1.15 + 0.02));
        }
        string yLabel = info.Kind == EvalTaskKind.ValLoss ? "validation loss (nats/token)" : "score (±1 standard error)";
        return Plots.Build($"{info.Name}: score against test-time recurrence T — {modelName}", "test-time recurrence T (log₂ scale)", yLabel,
            // A little below 0, so a score of 0 is not hidden under the frame.
            series, Plots.XAxis.Log2Measured, null, yMax is { } ceiling ? -0.03 * ceiling : null, yMax, width);
    }

    /// <summary>
    /// A model's name for titles: the folder's name, with its parent's when the folder is a run's generic "model"
    /// (runs/smoke/model → smoke/model) or a checkpoint.
    /// </summary>
    public static string ModelLabel(string modelPath)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelPath));
        string name = Path.GetFileName(full);
        string? parent = Path.GetFileName(Path.GetDirectoryName(full));
        if (parent is "checkpoints") parent = Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(full)));
        return name is "model" || name.StartsWith("phase", StringComparison.Ordinal) ? $"{parent}/{name}" : name;
    }

    /// <summary>
    /// PNG bytes of the compute–accuracy frontier: the main metric against mean recurrent iterations per generated token
    /// (log2 axis). Fixed T form a line; each adaptive setting (experimental) is a labelled point.
    /// </summary>
    public static byte[] FrontierPng(EvalTaskInfo info, IReadOnlyList<(string Key, double MeanIterations, EvalResult Result, bool Fixed)> runs,
        string modelName, int width = 900, int height = 550)
    {
        var plot = new ScottPlot.Plot();
        string metric = info.MainMetric;
        double Score(EvalResult r) => r.Metrics.GetValueOrDefault(metric, double.NaN);
        double Se(EvalResult r) => r.Metrics.GetValueOrDefault(EvalReport.StderrKey(metric), double.NaN);
        void Bars(IReadOnlyList<(string Key, double MeanIterations, EvalResult Result, bool Fixed)> rs, ScottPlot.Color color)
        {
            if (rs.Count == 0 || !rs.All(r => double.IsFinite(Se(r.Result)))) return;
            var eb = plot.Add.ErrorBar([.. rs.Select(r => Math.Log2(r.MeanIterations))], [.. rs.Select(r => Score(r.Result))], [.. rs.Select(r => Se(r.Result))]);
            eb.Color = color;
        }
        var pts = runs.Where(r => double.IsFinite(Score(r.Result)) && r.MeanIterations > 0).ToList();
        var fixedRuns = pts.Where(r => r.Fixed).OrderBy(r => r.MeanIterations).ToList();
        if (fixedRuns.Count > 0)
        {
            var sc = plot.Add.Scatter(fixedRuns.Select(r => Math.Log2(r.MeanIterations)).ToArray(), fixedRuns.Select(r => Score(r.Result)).ToArray());
            sc.LegendText = "fixed T (± 1 SE)";
            sc.MarkerSize = 8;
            Bars(fixedRuns, sc.Color);
            foreach (var r in fixedRuns)
            {
                var t = plot.Add.Text($"T={r.Key}", Math.Log2(r.MeanIterations), Score(r.Result));
                t.LabelFontSize = 11;
                t.OffsetX = 6;
                t.OffsetY = -6;
            }
        }
        var adaptive = pts.Where(r => !r.Fixed).ToList();
        if (adaptive.Count > 0)
        {
            var sc = plot.Add.ScatterPoints(adaptive.Select(r => Math.Log2(r.MeanIterations)).ToArray(), adaptive.Select(r => Score(r.Result)).ToArray());
            sc.LegendText = "adaptive (experimental, ± 1 SE)";
            sc.MarkerSize = 9;
            sc.MarkerShape = ScottPlot.MarkerShape.FilledDiamond;
            Bars(adaptive, sc.Color);
            foreach (var r in adaptive)
            {
                var t = plot.Add.Text(r.Key.Replace(AdaptiveSpecPrefix, ""), Math.Log2(r.MeanIterations), Score(r.Result));
                t.LabelFontSize = 10;
                t.LabelRotation = -20;
                t.OffsetX = 6;
                t.OffsetY = -6;
            }
        }
        var xs = pts.Select(r => Math.Log2(r.MeanIterations)).DefaultIfEmpty(0).ToArray();
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int k = (int)Math.Floor(xs.Min()); k <= (int)Math.Ceiling(xs.Max()); k++) ticks.AddMajor(k, Math.Pow(2, k).ToString(System.Globalization.CultureInfo.InvariantCulture));
        plot.Axes.Bottom.TickGenerator = ticks;
        plot.Axes.SetLimitsX(xs.Min() - 0.5, xs.Max() + 1.0);
        double top = pts.Select(r => Score(r.Result)).DefaultIfEmpty(0).Max();
        double yTop = Math.Min(1.05, Math.Max(0.1, top * 1.25 + 0.02));
        plot.Axes.SetLimitsY(-0.03 * yTop, yTop);
        plot.XLabel("mean recurrent iterations per generated token");
        plot.YLabel(metric);
        plot.Title($"{info.Name} — compute vs accuracy — {modelName}");
        plot.ShowLegend(ScottPlot.Edge.Right);
        return plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
    }

    const string AdaptiveSpecPrefix = "adaptive:";
}
