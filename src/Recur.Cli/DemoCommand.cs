using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Demo;
using Spectre.Console;

namespace Recur.Cli;

static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Run folder for models, report and plots", DefaultValueFactory = _ => "runs/demo" };
        var quick = new Option<bool>("--quick") { Description = "A smoke-sized run of every stage; its numbers are not meaningful (its time: docs/demo.md)" };
        var longRun = new Option<bool>("--long")
        {
            Description = "A longer preset (cut (2,4,2), identity adapter, train recurrence 3, twice the post-training); docs/demo.md says what it shows and its time",
        };
        var force = new Option<bool>("--force") { Description = "Replace an existing run folder" };
        var threads = Common.ThreadsOption();
        var task = new Option<string>("--task")
        {
            Description = "running-sum or variable-chains (docs/variable-chains.md), or word-problems (the earlier synthetic GSM8K-style task)",
            DefaultValueFactory = _ => "running-sum",
        };
        var config = new Option<string?>("--config") { Description = "JSON file overriding the depth task's run options (snake_case keys, see docs/demo.md)" };
        var cmd = new Command("demo", "Reproduce the paper's experiment in miniature: pretrain, retrofit, train with recurrence, compare at equal FLOPs, evaluate across T")
        {
            output, quick, longRun, force, threads, task, config,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string dir = parse.GetValue(output)!;
            // Flags and options are checked before the run folder is touched, so a bad invocation with --force
            // leaves an existing run as it was.
            var preset = DepthDemoOptions.Preset(parse.GetValue(quick), parse.GetValue(longRun));
            string taskName = parse.GetValue(task)!;
            if (taskName is not ("variable-chains" or "running-sum" or "word-problems"))
                throw new RecurUserException($"--task must be variable-chains, running-sum or word-problems (got '{taskName}')");
            DepthDemoOptions? depth = null;
            if (taskName != "word-problems")
            {
                depth = preset.ForTask(taskName == "running-sum" ? Recur.Data.DepthTaskKind.Sum : Recur.Data.DepthTaskKind.Chains);
                if (parse.GetValue(config) is { } cfgPath)
                {
                    if (!File.Exists(cfgPath)) throw new RecurUserException($"--config {cfgPath}: file not found");
                    depth = DepthDemoOptions.Override(depth, File.ReadAllText(cfgPath), $"--config {cfgPath}");
                }
                depth = depth.Validate("options");
            }
            else if (parse.GetValue(config) is not null) throw new RecurUserException("--config applies to the depth tasks (variable-chains, running-sum), not word-problems");
            else if (parse.GetValue(longRun)) throw new RecurUserException("--long applies to the depth tasks (variable-chains, running-sum), not word-problems");
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            {
                if (!parse.GetValue(force)) throw new RecurUserException($"{dir}: run folder already exists and is not empty (use --force to replace it)");
                Directory.Delete(dir, true);
            }
            Directory.CreateDirectory(dir);
            Common.SetThreads(parse.GetValue(threads));
            if (depth is not null)
            {
                using var cancelDepth = Common.CancelOnCtrlC();
                var dr = DepthDemo.Run(depth, dir, new ConsoleProgress(), cancelDepth.Token);
                DepthDemoReport.Write(dr, dir, parse.GetValue(quick));
                Console.WriteLine($"report: {Path.Combine(dir, "report.md")}");
                return 0;
            }
            var o = parse.GetValue(quick) ? DemoOptions.QuickRun : DemoOptions.Default;
            using var cancel = Common.CancelOnCtrlC();
            var ui = new ConsoleProgress();
            var result = DemoPipeline.Run(o, dir, ui, cancel.Token);
            Write(result, dir, parse.GetValue(quick));
            PrintSummary(result, Common.OutConsole());
            Console.WriteLine($"report: {Path.Combine(dir, "report.md")}");
            return 0;
        }));
        return cmd;
    }

    internal sealed class ConsoleProgress : IDemoProgress
    {
        readonly bool _plain = Console.IsOutputRedirected;
        DateTime _last = DateTime.MinValue;
        public void Stage(string name) { if (_plain) Console.WriteLine($"== {name}"); else AnsiConsole.Write(new Rule($"[bold]{Markup.Escape(name)}[/]") { Justification = Justify.Left }); }
        public void Info(string line) { if (_plain) Console.WriteLine(line); else AnsiConsole.MarkupLine($"[grey]{Markup.Escape(line)}[/]"); }
        public void Step(string stage, long step, long total, double loss)
        {
            if (step != total && (DateTime.UtcNow - _last).TotalSeconds < (_plain ? 10 : 0.5)) return;
            _last = DateTime.UtcNow;
            string line = $"{stage}: step {step}/{total} loss {loss:0.0000}";
            if (_plain) Console.WriteLine(line);
            else { Console.Write($"\r{line}".PadRight(Math.Min(Console.WindowWidth - 1, 100))); if (step == total) Console.WriteLine(); }
        }
    }

    static string Pct(double v) => (100 * v).ToString("0.0", CultureInfo.InvariantCulture);

    internal static void PrintSummary(DemoResult r, IAnsiConsole console)
    {
        var table = new Table().Title("accuracy on held-out problems (%)");
        table.AddColumn("model");
        table.AddColumn("T");
        table.AddColumn("train FLOPs");
        foreach (var d in r.Models[0].Accuracy.First().Value.Keys) table.AddColumn($"{d} step{(d > 1 ? "s" : "")}");
        table.AddColumn("all");
        table.AddColumn("answer loss");
        foreach (var m in r.Models)
            foreach (var (t, byD) in m.Accuracy)
                table.AddRow([Markup.Escape(m.Name), m.Recurrent ? t.ToString() : "–", m.TrainFlops.ToString("0.00e+0", CultureInfo.InvariantCulture),
                    .. byD.Values.Select(Pct), Pct(m.OverallAccuracy[t]), m.ValLoss[t].ToString("0.000", CultureInfo.InvariantCulture)]);
        console.Write(table);
    }

    static void Write(DemoResult r, string dir, bool quick)
    {
        // results.json
        var json = new JsonObject
        {
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'"),
            ["machine"] = r.Machine,
            ["quick"] = quick,
            ["wall_seconds"] = r.WallSeconds,
            ["options"] = JsonSerializer.SerializeToNode(r.Options),
            ["models"] = new JsonArray(r.Models.Select(m => (JsonNode)new JsonObject
            {
                ["name"] = m.Name, ["description"] = m.Description, ["recurrent"] = m.Recurrent, ["steps"] = m.Steps,
                ["train_flops"] = m.TrainFlops, ["wall_seconds"] = m.WallSeconds,
                ["accuracy"] = new JsonObject(m.Accuracy.Select(kv => KeyValuePair.Create($"T={kv.Key}", (JsonNode?)new JsonObject(kv.Value.Select(d => KeyValuePair.Create($"{d.Key}", (JsonNode?)d.Value)))))),
                ["overall_accuracy"] = new JsonObject(m.OverallAccuracy.Select(kv => KeyValuePair.Create($"T={kv.Key}", (JsonNode?)kv.Value))),
                ["val_loss"] = new JsonObject(m.ValLoss.Select(kv => KeyValuePair.Create($"T={kv.Key}", (JsonNode?)kv.Value))),
            }).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "results.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        WordProblemPlots(r, dir);

        AtomicFile.WriteAllText(Path.Combine(dir, "report.md"), Report(r, quick));
    }

    /// <summary>
    /// The word-problems run's two figures (Plots' rules): recurrent models against T on a log₂ axis with ± 1 SE
    /// (binomial, over all test problems), non-recurrent models as horizontal lines with their band, FLOPs in
    /// engineering notation; titles name the task and the model.
    /// </summary>
    internal static void WordProblemPlots(DemoResult r, string dir)
    {
        var o = r.Options;
        int n = o.TestPerDifficulty * (o.MaxSteps - o.MinSteps + 1);
        double Se(double p) => 100 * Math.Sqrt(p * (1 - p) / n);
        string task = $"Synthetic word problems ({o.MinSteps}–{o.MaxSteps} steps, answered directly)";
        string model = $"({o.Shape}) retrofit of the 8-layer demo Llama, train recurrence {o.TrainRecurrence}";
        var series = r.Models.Where(m => m.Recurrent).Select(m => new Plots.Series(m.Name, [.. m.OverallAccuracy.Keys.Select(t => (double)t)],
            [.. m.OverallAccuracy.Values.Select(v => 100 * v)], [.. m.OverallAccuracy.Values.Select(Se)]));
        var references = r.Models.Where(m => !m.Recurrent).Select(m => new Plots.Reference(m.Name, 100 * m.OverallAccuracy[1], Se(m.OverallAccuracy[1])));
        Plots.Line(Path.Combine(dir, "accuracy_vs_recurrence.png"), $"{task}: accuracy against test-time recurrence T — {model}",
            "test-time recurrence T (log₂ scale)", $"accuracy (%, ± 1 SE, {n} problems)", series, xAxis: Plots.XAxis.Log2Measured, references: references, yMin: 0);
        Plots.Line(Path.Combine(dir, "loss_vs_flops.png"), $"{task}: post-training loss against FLOPs — {model} and the non-recurrent baseline",
            "post-training FLOPs (METHOD §6)", "training loss on answer tokens (10-step mean)",
            r.Models.Skip(1).Select(m => new Plots.Series(m.Name, [.. m.Curve.Select(c => c.Flops)], Smooth([.. m.Curve.Select(c => c.Loss)]))),
            xAxis: Plots.XAxis.LinearEngineering);
    }

    static double[] Smooth(double[] y, int w = 10) =>
        y.Select((_, i) => y.Skip(Math.Max(0, i - w + 1)).Take(Math.Min(w, i + 1)).Average()).ToArray();

    static string Report(DemoResult r, bool quick)
    {
        var o = r.Options;
        var sb = new StringBuilder();
        var baseline = r.Models.First(m => m.Name.StartsWith("baseline", StringComparison.Ordinal));
        var rec = r.Models.First(m => m.Recurrent && m.Name.Contains("from base", StringComparison.Ordinal));
        var rnd = r.Models.First(m => m.Name.Contains("random", StringComparison.Ordinal));
        var pre = r.Models[0];
        sb.AppendLine("# Recur demo: retrofitted recurrence in miniature");
        sb.AppendLine();
        sb.AppendLine($"Run on {DateTime.UtcNow:yyyy-MM-dd} on {r.Machine}; wall time {r.WallSeconds / 60:0.0} min{(quick ? " (`--quick`: smoke-sized, the numbers are not meaningful)" : "")}.");
        sb.AppendLine();
        sb.AppendLine("## What was done");
        sb.AppendLine();
        sb.AppendLine($"- **Task.** Synthetic grade-school word problems with {o.MinSteps}–{o.MaxSteps} reasoning steps and numbers up to {o.MaxValue}, answered *directly* (`#### N`, no written reasoning), so the arithmetic must happen inside the network. Difficulty = number of steps; {o.TestPerDifficulty} held-out test problems per difficulty, disjoint from all training data.");
        sb.AppendLine($"- **a. Base model.** A Llama (8 layers, width 128, GQA 4/2 heads, character vocabulary, ≈{Presets(r)}) pretrained from scratch for {pre.Steps} steps on worked solutions and direct answers ({pre.TrainFlops:0.00e+0} FLOPs).");
        sb.AppendLine($"- **b. Retrofit.** Cut to (p, r, c) = ({o.Shape}): prelude = the first layers, recurrent block and coda = the last layers, the middle layers removed (METHOD §2.2), plus the linear adapter and s₀ noise; post-trained {rec.Steps} steps with the paper's recipe: 1-sqrt curriculum of the mean recurrence to {o.TrainRecurrence} over 75 % of training, Poisson-lognormal depths per micro-batch, truncated backprop through the last {o.BackpropDepth} iterations, Muon + AdamW, warm-up/stable/cosine schedule, clipping at 1.0. Post-training learns the answers: the loss covers the answer tokens only, since a question's numbers are random draws that no model can predict and would swamp the signal at this scale.");
        sb.AppendLine($"- **c. Baseline.** The base model post-trained on the same data without recurrence for {baseline.Steps} steps — the same training FLOPs by METHOD §6's formula ({baseline.TrainFlops:0.00e+0} vs {rec.TrainFlops:0.00e+0}).");
        sb.AppendLine($"- **d. Random init.** The same recurrent shape and recipe from random weights ({rnd.TrainFlops:0.00e+0} FLOPs).");
        sb.AppendLine($"- **Scale choices.** Learning rates are raised for a model this small (Muon {o.MuonLr}, AdamW {o.AdamWLr}; the paper's 1e-3/5e-5 are for 1B models that are already well trained); sequence length {o.SeqLen}, micro-batch {o.MicroBatch}; the train recurrence is {o.TrainRecurrence} rather than 32 to fit the budget. Greedy decoding; s₀ drawn from a fixed seed, so the same command gives the same numbers on the same machine.");
        sb.AppendLine();
        sb.AppendLine("## Accuracy (%) against test-time recurrence T, per difficulty");
        sb.AppendLine();
        var diffs = pre.Accuracy.First().Value.Keys.ToList();
        sb.AppendLine($"| model | T | {string.Join(" | ", diffs.Select(d => $"{d} step{(d > 1 ? "s" : "")}"))} | all | answer loss |");
        sb.AppendLine($"|---|---|{string.Concat(diffs.Select(_ => "---|"))}---|---|");
        foreach (var m in r.Models)
            foreach (var (t, byD) in m.Accuracy)
                sb.AppendLine($"| {m.Name} | {(m.Recurrent ? t.ToString() : "–")} | {string.Join(" | ", byD.Values.Select(Pct))} | {Pct(m.OverallAccuracy[t])} | {m.ValLoss[t]:0.000} |");
        sb.AppendLine();
        sb.AppendLine("## Training cost");
        sb.AppendLine();
        sb.AppendLine("| model | steps | training FLOPs | wall time |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var m in r.Models) sb.AppendLine($"| {m.Name} | {m.Steps} | {m.TrainFlops:0.00e+0} | {m.WallSeconds:0} s |");
        sb.AppendLine();
        sb.AppendLine("![accuracy against T](accuracy_vs_recurrence.png)");
        sb.AppendLine();
        sb.AppendLine("![loss against FLOPs](loss_vs_flops.png)");
        sb.AppendLine();
        sb.AppendLine("## What the numbers show");
        sb.AppendLine();
        // Differences are called out only beyond two standard errors of the difference of two accuracies on
        // n test problems (binomial), so noise is not read as an effect.
        int n = o.TestPerDifficulty * (o.MaxSteps - o.MinSteps + 1);
        double Noise(double a, double b) => 2 * Math.Sqrt(a * (1 - a) / n + b * (1 - b) / n);
        string Compare(double a, double b, string more, string less, string same) =>
            a - b > Noise(a, b) ? more : b - a > Noise(a, b) ? less : same + $" (the difference, {Pct(Math.Abs(a - b))} points, is within ±{Pct(Noise(a, b))} points, two standard errors for {n} problems).";
        double recBest = rec.OverallAccuracy.Values.Max();
        int recBestT = rec.OverallAccuracy.First(kv => kv.Value == recBest).Key;
        double base1 = baseline.OverallAccuracy[1];
        var trend = rec.OverallAccuracy.ToList();
        double rec1 = trend[0].Value;
        double rndBest = rnd.OverallAccuracy.Values.Max();
        var loss = rec.ValLoss.ToList();
        sb.AppendLine($"- **Recurrent vs. baseline at equal FLOPs:** the retrofitted model's best accuracy is {Pct(recBest)} % (T = {recBestT}); the non-recurrent baseline scores {Pct(base1)} %. " +
            Compare(recBest, base1, "The recurrent model is ahead.", "The baseline is ahead: in this run recurrence did not pay for itself.", "They are level"));
        sb.AppendLine($"- **Accuracy against T:** {Pct(rec1)} % at T = {trend[0].Key}, {Pct(recBest)} % at best (T = {recBestT}), {Pct(trend[^1].Value)} % at T = {trend[^1].Key}: " +
            Compare(recBest, rec1, "more test-time depth helps.", "more test-time depth hurts.", "flat"));
        sb.AppendLine($"- **Held-out answer loss against T:** {string.Join(", ", loss.Select(kv => $"{kv.Value:0.0000} (T = {kv.Key})"))} — " +
            (loss[^1].Value < loss[0].Value ? $"it falls as T grows, by {100 * (loss[0].Value - loss[^1].Value) / loss[0].Value:0.0} % from T = {loss[0].Key}" : "it does not fall as T grows") +
            $"; the non-recurrent baseline's is {baseline.ValLoss[1]:0.0000}.");
        sb.AppendLine($"- **Pretrained vs. random initialisation:** best {Pct(recBest)} % vs {Pct(rndBest)} %. " +
            Compare(recBest, rndBest, "Starting from the pretrained layers helps, as in the paper.", "Random initialisation did better in this run.", "No clear difference"));
        sb.AppendLine($"- **T = 1:** the recurrent model at T = 1 scores {Pct(rec1)} % against the baseline's {Pct(base1)} %: " +
            Compare(base1, rec1, "weaker at T = 1, as the paper also finds.", "stronger at T = 1.", "level"));
        sb.AppendLine();
        sb.AppendLine("These statements are generated from the measured numbers above; nothing is hand-tuned after the fact.");
        return sb.ToString();
    }

    static string Presets(DemoResult r) => $"{Recur.Model.Presets.Demo.ParamsPerLayer * Recur.Model.Presets.Demo.NumHiddenLayers / 1e6:0.0}M parameters in its layers";
}
