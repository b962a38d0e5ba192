using Recur.Checkpoints;

namespace Recur.Cli;

/// <summary>PNG line plots (headless ScottPlot), written atomically.</summary>
static class Plots
{
    public sealed record Series(string Label, double[] X, double[] Y);

    public static void Line(string path, string title, string xLabel, string yLabel, IEnumerable<Series> series, bool logX = false)
    {
        var plt = new ScottPlot.Plot();
        int count = 0;
        foreach (var s in series)
        {
            if (s.X.Length == 0) continue;
            var xs = logX ? s.X.Select(x => Math.Log10(Math.Max(x, 1e-300))).ToArray() : s.X;
            var sc = plt.Add.Scatter(xs, s.Y);
            sc.LegendText = s.Label;
            sc.MarkerSize = s.X.Length > 50 ? 0 : 5;
            count++;
        }
        plt.Title(title);
        plt.XLabel(logX ? $"log10 {xLabel}" : xLabel);
        plt.YLabel(yLabel);
        if (count > 1) plt.ShowLegend();
        var bytes = plt.GetImageBytes(900, 560, ScottPlot.ImageFormat.Png);
        AtomicFile.Write(path, fs => fs.Write(bytes));
    }
}
