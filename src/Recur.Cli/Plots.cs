using System.Globalization;
using Recur.Checkpoints;

namespace Recur.Cli;

/// <summary>
/// PNG line plots (headless ScottPlot), written atomically, with the rules every figure of the CLI follows: the legend
/// sits outside the data area (right of it), so it never covers a point; series differ in colour, marker shape and
/// line pattern, so overlapping ones stay distinguishable; T is drawn on a log₂ axis with ticks at the measured T;
/// FLOPs are labelled in engineering notation (1.2e13); error bars are drawn when the series carries them; a model
/// without a T (a non-recurrent baseline) is a horizontal reference line, not a line across T.
/// </summary>
static class Plots
{
    /// <summary>One curve; <paramref name="Error"/> (± per point, e.g. one standard error) draws error bars.</summary>
    public sealed record Series(string Label, double[] X, double[] Y, double[]? Error = null);

    /// <summary>A horizontal line at <paramref name="Y"/> (e.g. a non-recurrent model), with an optional ± band.</summary>
    public sealed record Reference(string Label, double Y, double? Error = null);

    /// <summary>How the x axis is drawn.</summary>
    public enum XAxis
    {
        /// <summary>Linear, plain numbers.</summary>
        Linear,
        /// <summary>Linear, ticks in engineering notation (FLOPs, tokens).</summary>
        LinearEngineering,
        /// <summary>log₁₀ scale, ticks at 1, 2 and 5 × 10ᵏ in engineering notation (FLOPs across orders of magnitude).</summary>
        Log10,
        /// <summary>log₂ scale with ticks at exactly the x values of the series (test-time recurrence T).</summary>
        Log2Measured,
    }

    static readonly ScottPlot.MarkerShape[] Markers =
    [
        ScottPlot.MarkerShape.FilledCircle, ScottPlot.MarkerShape.OpenSquare, ScottPlot.MarkerShape.FilledTriangleUp,
        ScottPlot.MarkerShape.OpenDiamond, ScottPlot.MarkerShape.FilledSquare, ScottPlot.MarkerShape.OpenCircle,
        ScottPlot.MarkerShape.FilledTriangleDown, ScottPlot.MarkerShape.FilledDiamond,
    ];

    static readonly ScottPlot.LinePattern[] Patterns = [ScottPlot.LinePattern.Solid, ScottPlot.LinePattern.Dashed, ScottPlot.LinePattern.Dotted, ScottPlot.LinePattern.DenselyDashed];

    public static void Line(string path, string title, string xLabel, string yLabel, IEnumerable<Series> series, bool logX = false,
        XAxis? xAxis = null, IEnumerable<Reference>? references = null, double? yMin = null, double? yMax = null)
    {
        var bytes = Png(title, xLabel, yLabel, series, xAxis ?? (logX ? XAxis.Log10 : XAxis.Linear), references, yMin, yMax);
        AtomicFile.Write(path, fs => fs.Write(bytes));
    }

    public static byte[] Png(string title, string xLabel, string yLabel, IEnumerable<Series> series, XAxis xAxis,
        IEnumerable<Reference>? references = null, double? yMin = null, double? yMax = null, int width = 960, int height = 560) =>
        Build(title, xLabel, yLabel, series, xAxis, references, yMin, yMax, width).GetImageBytes(width, height, ScottPlot.ImageFormat.Png);

    /// <summary>The figure as a ScottPlot object (tests read its axes, plottables and legend).</summary>
    internal static ScottPlot.Plot Build(string title, string xLabel, string yLabel, IEnumerable<Series> series, XAxis xAxis,
        IEnumerable<Reference>? references = null, double? yMin = null, double? yMax = null, int width = 960)
    {
        var plt = new ScottPlot.Plot();
        var list = series.Where(s => s.X.Length > 0).ToList();
        var refs = (references ?? []).ToList();
        double Map(double x) => xAxis switch
        {
            XAxis.Log10 => Math.Log10(Math.Max(x, 1e-300)),
            XAxis.Log2Measured => Math.Log2(Math.Max(x, 1e-300)),
            _ => x,
        };
        var palette = new ScottPlot.Palettes.Category10();
        int i = 0;
        foreach (var s in list)
        {
            var xs = s.X.Select(Map).ToArray();
            var color = palette.GetColor(i);
            var sc = plt.Add.Scatter(xs, s.Y, color);
            // A single curve needs no legend (its title and axes say what it is); ScottPlot shows one for any labelled plottable.
            if (list.Count + refs.Count > 1) sc.LegendText = s.Label;
            // Many points: a plain line (markers would be a smear); few points: a marker per point, shape per series.
            // Markers shrink from series to series, so a point drawn on top of an equal one leaves a ring of it visible.
            sc.MarkerSize = s.X.Length > 50 ? 0 : 12 - 3 * (i % 3);
            sc.MarkerShape = Markers[i % Markers.Length];
            sc.LinePattern = Patterns[i % Patterns.Length];
            sc.LineWidth = s.X.Length > 50 ? 1.5f : 2;
            if (s.Error is { } err && err.Length == s.Y.Length && err.All(double.IsFinite))
            {
                var bars = plt.Add.ErrorBar(xs, s.Y, err);
                bars.Color = color;
            }
            i++;
        }
        double xLo = list.SelectMany(s => s.X.Select(Map)).DefaultIfEmpty(0).Min();
        double xHi = list.SelectMany(s => s.X.Select(Map)).DefaultIfEmpty(1).Max();
        foreach (var r in refs)
        {
            var color = palette.GetColor(i);
            var line = plt.Add.HorizontalLine(r.Y, 2, color, ScottPlot.LinePattern.Dashed);
            line.LegendText = r.Label;
            if (r.Error is { } e && e > 0)
            {
                var band = plt.Add.VerticalSpan(r.Y - e, r.Y + e);
                band.FillStyle.Color = color.WithAlpha(0.12);
                band.LineStyle.Width = 0;
            }
            i++;
        }

        // Limits from the data first: a bound given below replaces one side of them (read before any render, the limits are unset).
        plt.Axes.AutoScale();
        switch (xAxis)
        {
            case XAxis.Log2Measured:
            {
                var ticks = new ScottPlot.TickGenerators.NumericManual();
                foreach (var t in list.SelectMany(s => s.X).Distinct().Order())
                    ticks.AddMajor(Math.Log2(t), t.ToString("0.##", CultureInfo.InvariantCulture));
                plt.Axes.Bottom.TickGenerator = ticks;
                plt.Axes.SetLimitsX(xLo - 0.3, xHi + 0.3);
                break;
            }
            case XAxis.Log10:
            {
                var ticks = new ScottPlot.TickGenerators.NumericManual();
                for (int k = (int)Math.Floor(xLo); k <= (int)Math.Ceiling(xHi); k++)
                    foreach (int m in new[] { 1, 2, 5 })
                    {
                        double at = Math.Log10(m) + k;
                        if (at >= xLo - 0.05 && at <= xHi + 0.05) ticks.AddMajor(at, Engineering(m * Math.Pow(10, k)));
                    }
                plt.Axes.Bottom.TickGenerator = ticks;
                break;
            }
            case XAxis.LinearEngineering:
                plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = Engineering };
                break;
        }
        if (yMin is not null || yMax is not null)
        {
            var lim = plt.Axes.GetLimits();
            plt.Axes.SetLimitsY(yMin ?? lim.Bottom, yMax ?? lim.Top);
        }
        plt.Title(Wrap(title, width / 11));
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        // Outside the data area: a legend inside can sit on top of points whatever corner it picks.
        if (list.Count + refs.Count > 1) plt.ShowLegend(ScottPlot.Edge.Right);
        else plt.HideLegend();
        return plt;
    }

    /// <summary>
    /// The text broken at spaces into lines of at most <paramref name="max"/> characters (a title wider than the image
    /// is cut off at both sides); a word longer than a line keeps a line of its own.
    /// </summary>
    internal static string Wrap(string text, int max)
    {
        var lines = new List<string>();
        var line = new System.Text.StringBuilder();
        foreach (var word in text.Split(' '))
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > max) { lines.Add(line.ToString()); line.Clear(); }
            if (line.Length > 0) line.Append(' ');
            line.Append(word);
        }
        if (line.Length > 0) lines.Add(line.ToString());
        return string.Join("\n", lines);
    }

    /// <summary>1.2e13-style labels (mantissa with at most two decimals, exponent without padding); plain below 1000.</summary>
    public static string Engineering(double v)
    {
        if (v == 0) return "0";
        if (Math.Abs(v) < 1000 && Math.Abs(v) >= 0.01) return v.ToString("0.##", CultureInfo.InvariantCulture);
        int exp = (int)Math.Floor(Math.Log10(Math.Abs(v)));
        double mant = v / Math.Pow(10, exp);
        if (Math.Abs(Math.Round(mant, 2)) >= 10) { mant /= 10; exp++; }
        return mant.ToString("0.##", CultureInfo.InvariantCulture) + "e" + exp.ToString(CultureInfo.InvariantCulture);
    }
}
