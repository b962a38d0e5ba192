using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Recur.Checkpoints;
using Recur.Data;
using Recur.Demo;
using Recur.Model;
using Recur.Training;
using SkiaSharp;

namespace Recur.Cli;

/// <summary>
/// The depth demo's PNGs (docs/demo.md), drawn to issue 18's rules: one panel per difficulty bucket, so curves of
/// different buckets never sit on top of each other; T on a log₂ axis with ticks at the measured T; ± 1 SE error bars
/// (the report's SEs); non-recurrent models as horizontal lines with their ± 1 SE band; the floor a guess without any
/// addition reaches on these very problems (not a uniform 10 %); the legend in a cell of its own; titles that name the
/// task and the model; FLOPs in engineering notation (1.2e12).
/// </summary>
static class DepthDemoPlots
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>One model's numbers as the figures need them: accuracy ± SE per bucket at each T, and its training curve.</summary>
    internal sealed record ModelSeries(string Name, bool Recurrent, SortedDictionary<int, Estimate[]> Accuracy, IReadOnlyList<(double Flops, double Loss)> Curve);

    /// <summary>Everything the three figures draw, from a finished run (<see cref="From(DepthDemoResult)"/>) or its folder (<see cref="FromRunFolder"/>).</summary>
    internal sealed record Figures(DepthDemoOptions Options, int[] BucketSizes, Estimate[] Floor, IReadOnlyList<ModelSeries> Models, int VocabSize)
    {
        public ModelSeries? Model(string name) => Models.FirstOrDefault(m => m.Name == name);
    }

    public static Figures From(DepthDemoResult r)
    {
        var b = r.BucketIndices();
        var models = r.Models.Select(m => new ModelSeries(m.Name, m.Recurrent,
            new SortedDictionary<int, Estimate[]>(m.Scores.ToDictionary(kv => kv.Key, kv => b.Select(idx => DepthDemoResult.Accuracy(kv.Value, idx)).ToArray())),
            m.Curve)).ToList();
        return new Figures(r.Options, [.. b.Select(x => x.Length)], Floor(r.Options, r.Test, b), models, DepthDemo.Tokenizer(r.Options).VocabSize);
    }

    static readonly JsonSerializerOptions OptionsJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>Model name → its folder in a run (DepthDemo.Run), where its metrics.jsonl holds the training curve.</summary>
    static readonly Dictionary<string, string> ModelFolders = new()
    {
        [DepthDemo.BaseName] = "base", [DepthDemo.BaselineName] = "baseline", [DepthDemo.RecurrentName] = "recurrent", [DepthDemo.RandomName] = "random-init",
    };

    /// <summary>
    /// The figures' data read back from a run folder: results.json (per-bucket accuracy and SE at each T), each model's
    /// metrics.jsonl (its training curve) and the test problems, which the options and seed determine. Lets the figures
    /// be redrawn without training again.
    /// </summary>
    public static Figures FromRunFolder(string dir)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "results.json")))!.AsObject();
        var optNode = json["options"]!.AsObject().DeepClone().AsObject();
        optNode.Remove("task_options");
        var o = optNode.Deserialize<DepthDemoOptions>(OptionsJson)!;
        var models = new List<ModelSeries>();
        foreach (var m in json["models"]!.AsArray())
        {
            string name = m!["name"]!.GetValue<string>();
            var acc = new SortedDictionary<int, Estimate[]>();
            foreach (var (key, byBucket) in m["by_t"]!.AsObject())
                acc[int.Parse(key["T=".Length..], Inv)] = [.. o.Buckets.Select(bk => byBucket![bk] is { } s
                    ? new Estimate(s["accuracy"]!.GetValue<double>(), s["accuracy_se"]!.GetValue<double>(), s["n"]!.GetValue<int>())
                    : new Estimate(double.NaN, double.NaN, 0))];
            var curve = new List<(double, double)>();
            if (ModelFolders.TryGetValue(name, out var sub) && File.Exists(Path.Combine(dir, sub, TrainRun.MetricsFile)))
                curve.AddRange(TrainRun.ReadMetrics(Path.Combine(dir, sub)).Select(x => (x.Flops, x.Loss)));
            models.Add(new ModelSeries(name, m["recurrent"]!.GetValue<bool>(), acc, curve));
        }
        var test = VariableChains.TestSet(o.TaskOptions, (ulong)o.Seed, o.TestMinK, o.TestMaxK, o.TestPerK);
        var b = new DepthDemoResult(o, [], test, 0, "", 0, "").BucketIndices();
        return new Figures(o, [.. b.Select(x => x.Length)], Floor(o, test, b), models, DepthDemo.Tokenizer(o).VocabSize);
    }

    /// <summary>Writes accuracy_vs_recurrence.png, pretrained_vs_random.png and loss_vs_flops.png for the models the run has.</summary>
    public static void WriteAll(Figures f, string dir)
    {
        if (AccuracyVsT(f) is { } a) Save(a, Path.Combine(dir, "accuracy_vs_recurrence.png"));
        if (PretrainedVsRandom(f) is { } p) Save(p, Path.Combine(dir, "pretrained_vs_random.png"));
        if (LossVsFlops(f) is { } l) Save(l, Path.Combine(dir, "loss_vs_flops.png"));
    }

    static void Save(byte[] png, string path) => AtomicFile.Write(path, fs => fs.Write(png));

    // ---- what is drawn ---------------------------------------------------------------------------

    /// <summary>The task in words, for titles.</summary>
    internal static string TaskName(DepthDemoOptions o) => o.Task == DepthTaskKind.Sum
        ? $"running sum mod 10 (terms 0–{o.MaxOffset})"
        : $"variable chains mod 10 ({o.Chains} interleaved chains)";

    /// <summary>The retrofitted model in words, for titles.</summary>
    internal static string ModelName(DepthDemoOptions o) =>
        $"({o.Shape}) retrofit of the {Presets.Demo.NumHiddenLayers}-layer demo Llama (width {Presets.Demo.HiddenSize})";

    /// <summary>
    /// The accuracy a guess without any computation of the hidden values reaches on each bucket's test problems. Sums:
    /// the first term plus the most likely total of k terms uniform in 0..MaxOffset (mod 10), scored on the actual
    /// problems; with terms 0–2 that is 33 % at k ≤ 2, far above 10 % (docs/demo.md). Chains: answers are uniform over
    /// the ten digits (roots are uniform), so the floor is chance, 10 %.
    /// </summary>
    internal static Estimate[] Floor(DepthDemoOptions o, IReadOnlyList<DepthProblem> test, int[][] buckets) =>
        [.. buckets.Select(idx => o.Task == DepthTaskKind.Sum
            ? Estimate.Of([.. idx.Select(i => ShortcutAnswer(test[i].Prompt[0] - '0', test[i].K, o.MaxOffset) == test[i].Answer - '0' ? 1.0 : 0.0)])
            : new Estimate(0.1, 0, idx.Length))];

    /// <summary>Floor's label for the legend.</summary>
    internal static string FloorLabel(DepthDemoOptions o) => o.Task == DepthTaskKind.Sum
        ? $"no-addition guess: first term + the most likely\ntotal of k terms 0–{o.MaxOffset}, scored on these problems"
        : "chance: answers are uniform over the 10 digits";

    /// <summary>(first + the most likely value of a sum of k terms uniform in 0..maxTerm) mod 10; ties go to the smaller total.</summary>
    internal static int ShortcutAnswer(int first, int k, int maxTerm)
    {
        var p = new double[10];
        p[0] = 1;
        for (int step = 0; step < k; step++)
        {
            var q = new double[10];
            for (int v = 0; v < 10; v++)
                for (int d = 0; d <= maxTerm; d++) q[(v + d) % 10] += p[v] / (maxTerm + 1);
            p = q;
        }
        int mode = 0;
        for (int v = 1; v < 10; v++) if (p[v] > p[mode] + 1e-12) mode = v;
        return (first + mode) % 10;
    }

    // ---- styles ----------------------------------------------------------------------------------

    static readonly ScottPlot.Color Retrofit = ScottPlot.Color.FromHex("#1f77b4");
    static readonly ScottPlot.Color Baseline = ScottPlot.Color.FromHex("#ff7f0e");
    static readonly ScottPlot.Color Random = ScottPlot.Color.FromHex("#d62728");
    static readonly ScottPlot.Color FloorColor = ScottPlot.Color.FromHex("#555555");
    static readonly ScottPlot.Color UniformColor = ScottPlot.Color.FromHex("#7f7f7f");

    internal sealed record Style(string Label, ScottPlot.Color Color, ScottPlot.LinePattern Pattern, ScottPlot.MarkerShape Marker, float Width = 2);

    static readonly Style RetrofitStyle = new("retrofitted from the pretrained base (± 1 SE)", Retrofit, ScottPlot.LinePattern.Solid, ScottPlot.MarkerShape.FilledCircle);
    static readonly Style RandomStyle = new("same shape and recipe from random weights\n(± 1 SE)", Random, ScottPlot.LinePattern.Dashed, ScottPlot.MarkerShape.OpenSquare);
    static readonly Style BaselineStyle = new("base post-trained without recurrence,\nequal training FLOPs (band: ± 1 SE)", Baseline, ScottPlot.LinePattern.Dashed, ScottPlot.MarkerShape.None);

    // ---- the figures -----------------------------------------------------------------------------

    /// <summary>The retrofitted model against T per bucket, the equal-FLOPs baseline as a horizontal line; null without a recurrent model.</summary>
    internal static byte[]? AccuracyVsT(Figures f) => AccuracyPanels(f, out _) is { } panels ? Compose(f, panels.Plots, panels.Legend,
        $"{Cap(TaskName(f.Options))}, held-out direct problems: accuracy against test-time recurrence T",
        $"{ModelName(f.Options)}, post-trained at train recurrence {f.Options.TrainRecurrence}, against the base post-trained without recurrence at equal FLOPs") : null;

    /// <summary>From the base against from random weights, per bucket; null without both models.</summary>
    internal static byte[]? PretrainedVsRandom(Figures f) => RandomPanels(f) is { } panels ? Compose(f, panels.Plots, panels.Legend,
        $"{Cap(TaskName(f.Options))}: retrofitting a pretrained base against training the same shape from random weights",
        $"{ModelName(f.Options)} vs random init, same recipe and FLOPs; accuracy on held-out direct problems") : null;

    internal sealed record Panels(List<ScottPlot.Plot> Plots, List<ScottPlot.LegendItem> Legend);

    /// <summary>One panel per bucket for <see cref="AccuracyVsT"/> (tests read the plottables).</summary>
    internal static Panels? AccuracyPanels(Figures f, out int[] ts)
    {
        var rec = f.Model(DepthDemo.RecurrentName);
        var bl = f.Model(DepthDemo.BaselineName);
        ts = rec is null ? [] : [.. rec.Accuracy.Keys];
        if (rec is null) return null;
        var plots = new List<ScottPlot.Plot>();
        for (int i = 0; i < f.Options.Buckets.Length; i++)
        {
            var plt = Panel(f, i, ts);
            if (bl is not null && bl.Accuracy.TryGetValue(1, out var b)) Horizontal(plt, b[i], BaselineStyle);
            Curve(plt, rec, ts, i, RetrofitStyle);
            plots.Add(plt);
        }
        var legend = new List<ScottPlot.LegendItem> { Item(RetrofitStyle) };
        if (bl is not null) legend.Add(Item(BaselineStyle));
        legend.Add(Item(FloorStyle(f.Options)));
        return new Panels(plots, legend);
    }

    static Panels? RandomPanels(Figures f)
    {
        var rec = f.Model(DepthDemo.RecurrentName);
        var rnd = f.Model(DepthDemo.RandomName);
        if (rec is null || rnd is null) return null;
        int[] ts = [.. rec.Accuracy.Keys.Intersect(rnd.Accuracy.Keys)];
        var plots = new List<ScottPlot.Plot>();
        for (int i = 0; i < f.Options.Buckets.Length; i++)
        {
            var plt = Panel(f, i, ts);
            Curve(plt, rnd, ts, i, RandomStyle);
            Curve(plt, rec, ts, i, RetrofitStyle);
            plots.Add(plt);
        }
        return new Panels(plots, [Item(RetrofitStyle), Item(RandomStyle), Item(FloorStyle(f.Options))]);
    }

    static Style FloorStyle(DepthDemoOptions o) => new(FloorLabel(o), FloorColor, ScottPlot.LinePattern.Dotted, ScottPlot.MarkerShape.None, 1.5f);

    /// <summary>A bucket's panel: T axis (log₂, ticks at the measured T), 0–100 % accuracy, the bucket's floor.</summary>
    static ScottPlot.Plot Panel(Figures f, int i, int[] ts)
    {
        var plt = new ScottPlot.Plot();
        var (lo, hi) = f.Options.BucketRanges()[i];
        string range = lo == hi ? $"k = {lo}" : $"k {lo}–{hi}";
        plt.Title($"{range}: {f.BucketSizes[i]} problems{(hi > f.Options.PostMaxK ? ", deeper than post-training" : "")}", 13);
        var floor = f.Floor[i];
        if (double.IsFinite(floor.Mean))
        {
            var line = plt.Add.HorizontalLine(100 * floor.Mean, 1.5f, FloorColor, ScottPlot.LinePattern.Dotted);
            line.LegendText = "";
        }
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ts.Select(t => Math.Log2(t))], [.. ts.Select(t => t.ToString(Inv))]);
        double top = ts.Length > 0 ? Math.Log2(ts.Max()) : 1;
        plt.Axes.SetLimitsX(-0.3, top + 0.3);
        // A little beyond 0–100 %, so a line at 0 % or 100 % is not hidden under the frame.
        plt.Axes.SetLimitsY(-3, 103);
        plt.XLabel("test-time recurrence T (log₂ scale)", 12);
        plt.YLabel("accuracy (%)", 12);
        plt.HideLegend();
        return plt;
    }

    static void Curve(ScottPlot.Plot plt, ModelSeries m, int[] ts, int bucket, Style s)
    {
        double[] xs = [.. ts.Select(t => Math.Log2(t))];
        var est = ts.Select(t => m.Accuracy[t][bucket]).ToArray();
        double[] ys = [.. est.Select(e => 100 * e.Mean)];
        var eb = plt.Add.ErrorBar(xs, ys, [.. est.Select(e => 100 * e.Se)]);
        eb.Color = s.Color;
        var sc = plt.Add.Scatter(xs, ys);
        sc.Color = s.Color;
        sc.LinePattern = s.Pattern;
        sc.LineWidth = s.Width;
        sc.MarkerShape = s.Marker;
        sc.MarkerSize = 8;
    }

    /// <summary>A model without a T: a horizontal line at its accuracy with a ± 1 SE band.</summary>
    static void Horizontal(ScottPlot.Plot plt, Estimate e, Style s)
    {
        if (!double.IsFinite(e.Mean)) return;
        if (e.Se > 0)
        {
            var band = plt.Add.VerticalSpan(100 * (e.Mean - e.Se), 100 * (e.Mean + e.Se));
            band.FillStyle.Color = s.Color.WithAlpha(0.15);
            band.LineStyle.Width = 0;
        }
        plt.Add.HorizontalLine(100 * e.Mean, s.Width, s.Color, s.Pattern);
    }

    static ScottPlot.LegendItem Item(Style s) => new()
    {
        LabelText = s.Label,
        LineColor = s.Color,
        LineWidth = s.Width,
        LinePattern = s.Pattern,
        MarkerShape = s.Marker,
        MarkerFillColor = s.Color,
        MarkerLineColor = s.Color,
        MarkerSize = 8,
    };

    static string Cap(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];

    /// <summary>
    /// Panels in a grid of three columns under a two-line heading; the legend fills the first free cell (or a strip
    /// below), so it never covers a panel's data.
    /// </summary>
    static byte[] Compose(Figures f, List<ScottPlot.Plot> panels, List<ScottPlot.LegendItem> legend, string title, string subtitle)
    {
        const int cols = 3, cellW = 520, cellH = 400, head = 70, strip = 130;
        // The key takes the first free cell of the last row, or a strip below the panels when their rows are full.
        int rows = (panels.Count + cols - 1) / cols;
        bool inCell = panels.Count % cols != 0;
        int w = cols * cellW, h = head + rows * cellH + (inCell ? 0 : strip);
        using var surface = SKSurface.Create(new SKImageInfo(w, h));
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        var header = new ScottPlot.Plot();
        header.HideAxesAndGrid();
        header.Layout.Frameless();
        var t1 = header.Add.Text(title, 0, 1);
        t1.LabelFontSize = 19;
        t1.LabelBold = true;
        t1.LabelAlignment = ScottPlot.Alignment.UpperCenter;
        var t2 = header.Add.Text(subtitle, 0, 0);
        t2.LabelFontSize = 14;
        t2.LabelAlignment = ScottPlot.Alignment.UpperCenter;
        header.Axes.SetLimits(-1, 1, -0.6, 1.05);
        Draw(canvas, header, 0, 0, w, head);
        for (int i = 0; i < panels.Count; i++)
        {
            int r = i / cols, c = i % cols;
            Draw(canvas, panels[i], c * cellW, head + r * cellH, cellW, cellH);
        }
        var key = new ScottPlot.Plot();
        key.HideAxesAndGrid();
        key.Layout.Frameless();
        key.ShowLegend(legend, ScottPlot.Alignment.MiddleCenter);
        key.Legend.FontSize = 13;
        if (inCell) Draw(canvas, key, panels.Count % cols * cellW, head + (rows - 1) * cellH, w - panels.Count % cols * cellW, cellH);
        else Draw(canvas, key, 0, head + rows * cellH, w, strip);
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>A plot rendered on its own (ScottPlot clears the whole canvas it renders on) and placed at (x, y).</summary>
    static void Draw(SKCanvas canvas, ScottPlot.Plot plot, int x, int y, int width, int height)
    {
        using var bitmap = SKBitmap.Decode(plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png));
        canvas.DrawBitmap(bitmap, x, y);
    }

    /// <summary>
    /// Post-training loss against cumulative FLOPs for the post-trained models, with the loss of a uniform guess over the
    /// vocabulary as a reference: the retrofitted model starts near it (its step-1 loss is labelled), because at step 1
    /// it is not the base any more: layers are removed, the adapter is freshly initialised (METHOD §2.5: PyTorch's
    /// default Linear init, not a pass-through) and the recurrence starts from random s₀; the baseline continues the
    /// base unchanged. Null when no model was post-trained.
    /// </summary>
    internal static byte[]? LossVsFlops(Figures f) => LossPlot(f) is { } plt ? plt.GetImageBytes(1400, 640, ScottPlot.ImageFormat.Png) : null;

    internal static ScottPlot.Plot? LossPlot(Figures f)
    {
        var post = f.Models.Where(m => m.Name != DepthDemo.BaseName && m.Curve.Count > 0).ToList();
        if (post.Count == 0) return null;
        var plt = new ScottPlot.Plot();
        double uniform = Math.Log(f.VocabSize);
        var u = plt.Add.HorizontalLine(uniform, 1.5f, UniformColor, ScottPlot.LinePattern.Dotted);
        u.LegendText = $"uniform guess over the {f.VocabSize}-token vocabulary: ln {f.VocabSize} = {uniform.ToString("0.00", Inv)}";
        foreach (var m in post)
        {
            var s = m.Name switch
            {
                DepthDemo.BaselineName => BaselineStyle with { Label = "base post-trained without recurrence (continues the base)" },
                DepthDemo.RandomName => RandomStyle with { Label = $"({f.Options.Shape}) from random weights" },
                _ => RetrofitStyle with { Label = $"({f.Options.Shape}) retrofitted from the base" },
            };
            double[] xs = [.. m.Curve.Select(p => p.Flops)];
            var sc = plt.Add.Scatter(xs, Smooth([.. m.Curve.Select(p => p.Loss)]));
            sc.Color = s.Color;
            sc.LinePattern = s.Pattern;
            sc.LineWidth = 2;
            sc.MarkerSize = 0;
            sc.LegendText = $"{s.Label}; step 1: {m.Curve[0].Loss.ToString("0.00", Inv)}";
            // The step-1 loss (before any update) as a marker: where each model starts is what the figure explains.
            var first = plt.Add.Marker(m.Curve[0].Flops, m.Curve[0].Loss, s.Marker == ScottPlot.MarkerShape.None ? ScottPlot.MarkerShape.FilledDiamond : s.Marker, 10, s.Color);
            first.LegendText = "";
        }
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = Plots.Engineering };
        double maxLoss = post.SelectMany(m => m.Curve.Select(p => p.Loss)).Append(uniform).Max();
        plt.Axes.SetLimitsY(0, maxLoss * 1.08);
        plt.Axes.SetLimitsX(0, post.Max(m => m.Curve[^1].Flops) * 1.03);
        plt.XLabel("post-training FLOPs (METHOD §6: 6·N1 + 2·N2 per token)", 14);
        plt.YLabel("training loss (nats, 10-step mean)", 14);
        plt.Title($"{Cap(TaskName(f.Options))}: post-training loss against FLOPs\n{WhyHigher(f)}", 15);
        plt.ShowLegend(ScottPlot.Edge.Bottom);
        return plt;
    }

    /// <summary>
    /// Why the retrofitted model starts higher than the base it came from, for the loss figure's heading: its step-1
    /// loss against a uniform guess and the base's (the baseline's step 1: the base itself, before any update), then
    /// what differs from the base at that point.
    /// </summary>
    internal static string WhyHigher(Figures f)
    {
        var o = f.Options;
        int kept = o.Shape.Split(',').Sum(x => int.Parse(x.Trim(), Inv));
        int removed = Presets.Demo.NumHiddenLayers - kept;
        string layers = removed > 0 ? $"{removed} of the base's {Presets.Demo.NumHiddenLayers} layers are removed, " : "";
        string F(double v) => v.ToString("0.00", Inv);
        var rec = f.Model(DepthDemo.RecurrentName);
        var bl = f.Model(DepthDemo.BaselineName);
        string start = rec is { Curve.Count: > 0 }
            ? $"At step 1 the retrofit's loss is {F(rec.Curve[0].Loss)} (uniform guess {F(Math.Log(f.VocabSize))}"
              + (bl is { Curve.Count: > 0 } ? $"; the base, at the baseline's step 1: {F(bl.Curve[0].Loss)})" : ")") + ", because"
            : "The retrofit does not start from the base's loss:";
        return start + "\n" + $"{layers}the adapter is freshly initialised (METHOD §2.5) and s₀ is random";
    }

    static double[] Smooth(double[] y, int w = 10) =>
        [.. y.Select((_, i) => y.Skip(Math.Max(0, i - w + 1)).Take(Math.Min(w, i + 1)).Average())];
}
