using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Evaluation;
using Recur.Tasks;
using Spectre.Console;

namespace Recur.Cli;

/// <summary>The scores of one evaluation, kept as they arrive and written as results.json, a table and plots.</summary>
/// <remarks>
/// results.json: <c>tasks.{task}.results.{T}</c> → lm-eval metric keys (<c>exact_match,strict-match</c>,
/// <c>exact_match_stderr,strict-match</c>, ...). T is the recurrence as a string, or <c>"none"</c> for a
/// non-recurrent model or a predictions file. Stderr that lm-eval prints as N/A (fewer than two samples) is null.
/// Timings live apart from the scores (<c>timing</c>) so that two runs of the same command compare equal on
/// <c>tasks</c> and <c>settings</c>.
/// </remarks>
sealed class EvalReport(JsonObject header, JsonObject settings)
{
    public const string NoRecurrence = "none";

    sealed class TaskEntry
    {
        public required EvalTaskInfo Info;
        public required JsonObject Json;
        public readonly List<(string T, EvalResult Result)> Runs = [];
        public readonly Dictionary<string, double> MeanIterations = [];
    }

    readonly List<TaskEntry> _tasks = [];
    readonly JsonObject _timing = [];

    /// <summary>Registers a task before its runs, with what does not change across T.</summary>
    /// <param name="agreement">Predictions from an lm-eval sample log: how Recur's per-item scores compare with lm-eval's.</param>
    public void AddTask(EvalTaskInfo info, string data, int count, IReadOnlyDictionary<string, string> taskSettings, IReadOnlyList<string> warnings,
        LmEvalAgreement? agreement = null)
    {
        var json = new JsonObject
        {
            // Recur-only tasks (val_loss, multiple_choice) have no lm-eval counterpart.
            ["lm_eval_task"] = info.LmEvalVersion is null ? null : info.Name,
            ["lm_eval_version"] = info.LmEvalVersion,
            ["data"] = data,
            ["samples"] = count,
            ["main_metric"] = info.MainMetric,
            ["settings"] = new JsonObject(taskSettings.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
            ["warnings"] = new JsonArray(warnings.Select(w => (JsonNode?)JsonValue.Create(w)).ToArray()),
            ["results"] = new JsonObject(),
            ["samples_files"] = new JsonObject(),
            ["mean_iterations"] = new JsonObject(),
        };
        if (agreement is not null)
            json["lm_eval_agreement"] = new JsonObject
            {
                ["compared"] = agreement.Compared,
                ["agreed"] = agreement.Agreed,
                ["differences"] = new JsonArray(agreement.Differences.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
            };
        _tasks.Add(new TaskEntry { Info = info, Json = json });
    }

    /// <param name="meanIterations">Recurrent iterations per generated token: T for fixed runs, measured for adaptive ones.</param>
    /// <param name="adaptive">Adaptive runs: the iteration accounting written under <c>adaptive.{T}</c>.</param>
    public void AddRun(string task, string t, EvalResult result, string samplesFile, double seconds, IReadOnlyList<string> notes,
        double? meanIterations = null, AdaptiveStats? adaptive = null)
    {
        var e = _tasks.Single(x => x.Info.Name == task);
        e.Runs.Add((t, result));
        if (meanIterations is { } mi && double.IsFinite(mi))
        {
            e.MeanIterations[t] = mi;
            e.Json["mean_iterations"]![t] = Math.Round(mi, 4);
        }
        if (adaptive is not null)
        {
            if (e.Json["adaptive"] is not JsonObject ad) e.Json["adaptive"] = ad = [];
            ad[t] = new JsonObject
            {
                ["experimental"] = true,
                ["generated_tokens"] = adaptive.Tokens,
                ["iterations"] = adaptive.Iterations,
                ["mean_iterations"] = double.IsFinite(adaptive.MeanIterations) ? Math.Round(adaptive.MeanIterations, 4) : null,
                ["probes"] = adaptive.Probes,
                ["prompt_tokens_at_max"] = adaptive.PromptTokens,
                ["depth_histogram"] = new JsonArray(adaptive.Histogram.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray()),
            };
        }
        var metrics = new JsonObject();
        foreach (var (k, v) in result.Metrics) metrics[k] = double.IsFinite(v) ? JsonValue.Create(v) : null;
        e.Json["results"]![t] = metrics;
        e.Json["samples_files"]![t] = samplesFile;
        if (notes.Count > 0)
        {
            var arr = (JsonArray)e.Json["warnings"]!;
            foreach (var n in notes) arr.Add($"T={t}: {n}");
        }
        if (_timing[task] is not JsonObject tt) _timing[task] = tt = [];
        tt[t] = Math.Round(seconds, 3);
    }

    public JsonObject ToJson(bool complete)
    {
        var root = JsonNode.Parse(header.ToJsonString())!.AsObject();
        root["complete"] = complete;
        root["settings"] = settings.DeepClone();
        var tasks = new JsonObject();
        foreach (var e in _tasks) tasks[e.Info.Name] = e.Json.DeepClone();
        root["tasks"] = tasks;
        root["timing_seconds"] = _timing.DeepClone();
        return root;
    }

    public void Write(string path, bool complete) =>
        AtomicFile.WriteAllText(path, ToJson(complete).ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = SampleLog.Json.Encoder }) + "\n");

    /// <summary>
    /// The summary for a console <paramref name="width"/> columns wide. One row per task and metric and one column
    /// per T, each cell "mean ± stderr", when that table fits; otherwise, per task, one line per T and metric: a sweep
    /// of four T, or an adaptive spec as a column heading, would fold every cell of the table at 80 columns.
    /// </summary>
    public Spectre.Console.Rendering.IRenderable Summary(int width)
    {
        var ts = _tasks.SelectMany(e => e.Runs.Select(r => r.T)).Distinct().ToList();
        var lines = Lines(ts);
        string[] heads = ["task", "metric", .. ts.Select(t => t == NoRecurrence ? "value" : IsFixed(t) ? $"T={t}" : t)];
        // A rounded table with Spectre's default padding: one border column, then content + 2 + 1 per column.
        int wide = 1 + heads.Select((h, i) => Math.Max(h.Length, lines.Select(l => l.Cells[i].Length).DefaultIfEmpty(0).Max()) + 3).Sum();
        if (wide <= width)
        {
            var table = new Table().Border(TableBorder.Rounded).AddColumn(heads[0]).AddColumn(heads[1]);
            foreach (var h in heads.Skip(2)) table.AddColumn(new TableColumn(Markup.Escape(h)).RightAligned());
            foreach (var l in lines) table.AddRow(l.Cells.Select(Markup.Escape).ToArray());
            return table;
        }
        var parts = new List<Spectre.Console.Rendering.IRenderable>();
        foreach (var task in lines.Select(l => l.Task).Distinct())
        {
            var grid = new Grid().AddColumn(new GridColumn().Padding(2, 0, 2, 0)).AddColumn(new GridColumn().Padding(0, 0, 2, 0))
                .AddColumn(new GridColumn().Padding(0, 0, 0, 0).RightAligned());
            for (int i = 0; i < ts.Count; i++)
            {
                bool first = true;
                foreach (var l in lines.Where(l => l.Task == task && l.Cells[i + 2].Length > 0))
                {
                    grid.AddRow(Markup.Escape(first && ts[i] != NoRecurrence ? heads[i + 2] : ""), Markup.Escape(l.Cells[1]), Markup.Escape(l.Cells[i + 2]));
                    first = false;
                }
            }
            parts.Add(new Text(task));
            parts.Add(grid);
        }
        return new Rows(parts);
    }

    /// <summary>One line per task and metric: its cells (task, metric, then "mean ± stderr" per T, "" where absent).</summary>
    List<(string Task, string[] Cells)> Lines(List<string> ts)
    {
        var lines = new List<(string, string[])>();
        foreach (var e in _tasks)
        {
            var metrics = e.Runs.SelectMany(r => r.Result.Metrics.Keys).Where(k => !IsStderr(k)).Distinct()
                .OrderBy(k => e.Info.PlotMetrics.Contains(k) ? e.Info.PlotMetrics.ToList().IndexOf(k) : 100).ToList();
            bool first = true;
            foreach (var m in metrics)
            {
                var cells = new List<string> { first ? e.Info.Name : "", m };
                foreach (var t in ts)
                {
                    var run = e.Runs.FirstOrDefault(r => r.T == t);
                    cells.Add(run.Result is null || !run.Result.Metrics.TryGetValue(m, out var v) ? "" : Format(v, run.Result.Metrics.GetValueOrDefault(StderrKey(m), double.NaN)));
                }
                lines.Add((e.Info.Name, cells.ToArray()));
                first = false;
            }
            if (e.MeanIterations.Count > 0)
                lines.Add((e.Info.Name, new[] { "", "mean iterations / token" }.Concat(ts.Select(t =>
                    e.MeanIterations.TryGetValue(t, out var mi) ? mi.ToString("0.00", CultureInfo.InvariantCulture) : "")).ToArray()));
        }
        return lines;
    }

    /// <summary>
    /// A PNG per task of its plotted metrics against T (log2 axis, error bars of one stderr). Only for
    /// recurrent models: a single evaluation has no curve. Returns the files written.
    /// </summary>
    public List<string> WritePlots(string outDir, string modelName)
    {
        var written = new List<string>();
        foreach (var e in _tasks)
        {
            var runs = e.Runs.Where(r => IsFixed(r.T)).OrderBy(r => int.Parse(r.T, CultureInfo.InvariantCulture)).ToList();
            if (runs.Count > 0)
            {
                var path = Path.Combine(outDir, $"plot_{e.Info.Name}.png");
                AtomicFile.Write(path, fs => fs.Write(EvalPlot.Png(e.Info, runs.Select(r => (int.Parse(r.T, CultureInfo.InvariantCulture), r.Result)).ToList(), modelName)));
                written.Add(path);
            }
            // Compute–accuracy frontier once any adaptive run is present: score against mean iterations per token.
            if (e.Runs.Any(r => r.T != NoRecurrence && !IsFixed(r.T)))
            {
                var pts = e.Runs.Where(r => e.MeanIterations.ContainsKey(r.T)).Select(r => (r.T, e.MeanIterations[r.T], r.Result, IsFixed(r.T))).ToList();
                var path = Path.Combine(outDir, $"plot_{e.Info.Name}_frontier.png");
                AtomicFile.Write(path, fs => fs.Write(EvalPlot.FrontierPng(e.Info, pts, modelName)));
                written.Add(path);
            }
        }
        return written;
    }

    /// <summary>A fixed-T key ("4"), as opposed to "none" or an adaptive spec.</summary>
    static bool IsFixed(string t) => int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out _);

    static bool IsStderr(string key) => key.Contains("_stderr", StringComparison.Ordinal);

    /// <summary><c>metric,filter</c> → <c>metric_stderr,filter</c>.</summary>
    public static string StderrKey(string key)
    {
        int comma = key.IndexOf(',');
        return comma < 0 ? key + "_stderr" : key[..comma] + "_stderr" + key[comma..];
    }

    static string Format(double v, double se) =>
        (double.IsNaN(v) ? "n/a" : v.ToString(Math.Abs(v) >= 100 ? "0.00" : "0.0000", CultureInfo.InvariantCulture)) +
        (double.IsFinite(se) ? " ± " + se.ToString("0.0000", CultureInfo.InvariantCulture) : "");
}
