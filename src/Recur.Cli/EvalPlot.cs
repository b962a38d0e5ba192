using Recur.Evaluation;
using Recur.Tasks;

namespace Recur.Cli;

/// <summary>Score-against-T figures (the paper's Fig. 3 style: accuracy per test-time recurrence), rendered headless with ScottPlot.</summary>
static class EvalPlot
{
    /// <summary>PNG bytes: each of the task's plotted metrics against T on a log2 axis, with ±1 stderr bars.</summary>
    public static byte[] Png(EvalTaskInfo info, IReadOnlyList<(int T, EvalResult Result)> runs, string modelName, int width = 800, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        var ts = runs.Select(r => r.T).ToArray();
        foreach (var metric in info.PlotMetrics)
        {
            var pts = runs.Where(r => r.Result.Metrics.TryGetValue(metric, out var v) && double.IsFinite(v)).ToList();
            if (pts.Count == 0) continue;
            var xs = pts.Select(r => Math.Log2(r.T)).ToArray();
            var ys = pts.Select(r => r.Result.Metrics[metric]).ToArray();
            var sc = plot.Add.Scatter(xs, ys);
            sc.LegendText = metric;
            sc.MarkerSize = 8;
            var se = pts.Select(r => r.Result.Metrics.GetValueOrDefault(EvalReport.StderrKey(metric), double.NaN)).ToArray();
            if (se.All(double.IsFinite))
            {
                var bars = plot.Add.ErrorBar(xs, ys, se);
                bars.Color = sc.Color;
            }
        }
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        foreach (var t in ts) ticks.AddMajor(Math.Log2(t), t.ToString(System.Globalization.CultureInfo.InvariantCulture));
        plot.Axes.Bottom.TickGenerator = ticks;
        // A single T still gets a readable axis around its point.
        double lo = Math.Log2(ts.Min()), hi = Math.Log2(ts.Max());
        plot.Axes.SetLimitsX(lo - 0.5, hi + 0.5);
        if (info.Kind != EvalTaskKind.ValLoss)
        {
            // Scores are fractions: start the axis at 0 so curves of different models read alike, and leave
            // headroom above the best point (with its error bar) for the legend.
            var tops = info.PlotMetrics.SelectMany(metric => runs.Select(r =>
                r.Result.Metrics.GetValueOrDefault(metric, double.NaN) + Math.Max(0, r.Result.Metrics.GetValueOrDefault(EvalReport.StderrKey(metric), 0))))
                .Where(double.IsFinite).DefaultIfEmpty(0).Max();
            plot.Axes.SetLimitsY(0, Math.Min(1.0, Math.Max(0.1, tops * 1.25 + 0.02)));
        }
        plot.XLabel("test-time recurrence T");
        plot.YLabel(info.Kind == EvalTaskKind.ValLoss ? "validation loss (nats/token)" : "score");
        plot.Title($"{info.Name} — {modelName}");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        return plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
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
        var pts = runs.Where(r => double.IsFinite(Score(r.Result)) && r.MeanIterations > 0).ToList();
        var fixedRuns = pts.Where(r => r.Fixed).OrderBy(r => r.MeanIterations).ToList();
        if (fixedRuns.Count > 0)
        {
            var sc = plot.Add.Scatter(fixedRuns.Select(r => Math.Log2(r.MeanIterations)).ToArray(), fixedRuns.Select(r => Score(r.Result)).ToArray());
            sc.LegendText = "fixed T";
            sc.MarkerSize = 8;
            foreach (var r in fixedRuns)
            {
                var t = plot.Add.Text($"T={r.Key}", Math.Log2(r.MeanIterations), Score(r.Result));
                t.LabelFontSize = 11;
            }
        }
        var adaptive = pts.Where(r => !r.Fixed).ToList();
        if (adaptive.Count > 0)
        {
            var sc = plot.Add.ScatterPoints(adaptive.Select(r => Math.Log2(r.MeanIterations)).ToArray(), adaptive.Select(r => Score(r.Result)).ToArray());
            sc.LegendText = "adaptive (experimental)";
            sc.MarkerSize = 9;
            sc.MarkerShape = ScottPlot.MarkerShape.FilledDiamond;
            foreach (var r in adaptive)
            {
                var t = plot.Add.Text(r.Key.Replace(AdaptiveSpecPrefix, ""), Math.Log2(r.MeanIterations), Score(r.Result));
                t.LabelFontSize = 10;
                t.LabelRotation = -20;
            }
        }
        var xs = pts.Select(r => Math.Log2(r.MeanIterations)).DefaultIfEmpty(0).ToArray();
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int k = (int)Math.Floor(xs.Min()); k <= (int)Math.Ceiling(xs.Max()); k++) ticks.AddMajor(k, Math.Pow(2, k).ToString(System.Globalization.CultureInfo.InvariantCulture));
        plot.Axes.Bottom.TickGenerator = ticks;
        plot.Axes.SetLimitsX(xs.Min() - 0.5, xs.Max() + 1.0);
        double top = pts.Select(r => Score(r.Result)).DefaultIfEmpty(0).Max();
        plot.Axes.SetLimitsY(0, Math.Min(1.05, Math.Max(0.1, top * 1.25 + 0.02)));
        plot.XLabel("mean recurrent iterations per generated token");
        plot.YLabel(metric);
        plot.Title($"{info.Name} — compute vs accuracy — {modelName}");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        return plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
    }

    const string AdaptiveSpecPrefix = "adaptive:";
}
