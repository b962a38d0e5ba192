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
}
