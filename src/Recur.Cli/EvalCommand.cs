using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Evaluation;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;
using Spectre.Console;
using static TorchSharp.torch;

namespace Recur.Cli;

/// <summary>
/// <c>recur eval</c>: benchmark scores at every requested test-time recurrence T (METHOD §7.1, §8), with
/// results.json, per-sample logs, a table and a plot per task.
/// </summary>
static class EvalCommand
{
    public const string ResultsFile = "results.json";

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model folder (HF or recurrent) or llama2.c .bin file" };
        var tasks = new Option<string>("--tasks") { Description = $"Comma-separated tasks: {string.Join(", ", EvalTasks.Names)}", Required = true };
        var data = new Option<string[]>("--data") { Description = "Data file per task: PATH[,PATH...] in --tasks order, or task=PATH pairs (repeatable)" };
        var recurrences = new Option<string?>("--recurrences") { Description = "Test-time recurrences T, e.g. 1,2,4,8,16,32; "
    + "adaptive per-token depth (experimental, generation tasks only): adaptive:kl=5e-4,max=32, adaptive:latent=0.03,max=16, adaptive:entropy=1e-3,max=32, "
    + "adaptive:argmax=5,max=32, plus warm=1 (start from the previous token's state) and cache=latest (K/V of the newest iteration only), or Huginn's own rule adaptive:kl-official=1e-3,max=32; see docs/adaptive.md [default: the model's mean_recurrence]" };
        var shots = new Option<int>("--shots") { Description = "Exemplars before each GSM8K/MATH question (the paper uses 1; multiple choice is zero-shot)", DefaultValueFactory = _ => 1 };
        var fewshot = new Option<string[]>("--fewshot-data") { Description = "Training jsonl to draw exemplars from (first K): PATH, or task=PATH pairs such as gsm8k_cot_sean=PATH,minerva_math=PATH [default: train.jsonl beside the data file]" };
        var limit = new Option<int?>("--limit") { Description = "Evaluate only the first N examples of each task (rows for val_loss) [default: all]" };
        var batch = new Option<int>("--batch-size") { Description = "Prompts / log-likelihood rows per forward pass", DefaultValueFactory = _ => 32 };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "Generation budget for GSM8K/MATH (lm-eval's max_gen_toks) " + Common.MaxNewTokensDefault(256) };
        var seqLen = new Option<int?>("--seq-len") { Description = "Row length for val_loss [default: 1024, or the model's context if shorter]" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder [default: the model folder]" };
        var seed = new Option<long>("--seed") { Description = "Seed of the recurrent initial state s_0, reset at the start of every (task, T)", DefaultValueFactory = _ => 0 };
        var skipBad = new Option<bool>("--skip-bad-lines") { Description = "Skip (and count) malformed data lines instead of failing" };
        var predictions = new Option<string[]>("--predictions") { Description = "Score existing outputs instead of running a model: plain jsonl or lm-eval --log_samples files (generation and multiple-choice tasks), one file per task" };
        var output = new Option<string>("--out") { Description = "Output folder (results.json, samples_*.jsonl, plot_*.png)", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace an earlier evaluation's files in a non-empty --out" };
        var device = Common.DeviceOption();
        var dtype = Common.DTypeOption();
        var threads = Common.ThreadsOption();
        var cmd = new Command("eval", "Evaluate a model on GSM8K, MATH, multiple choice, LAMBADA or validation loss at any test-time recurrence")
        {
            model, tasks, data, recurrences, shots, fewshot, limit, batch, maxNew, seqLen, tokenizer, seed, skipBad, predictions,
            output, force, device, dtype, threads,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            var infos = ParseTasks(parse.GetValue(tasks)!);
            foreach (var i in infos)
                ProgressLine.WriteError($"note: task {i.Name} means {i.Means}" + (i.LmEvalVersion is { } v ? $" (rules version {v})" : ""));
            string outDir = parse.GetValue(output)!;
            int shotCount = parse.GetValue(shots);
            if (shotCount < 0) throw new RecurUserException($"--shots must be ≥ 0 (got {shotCount})");
            int? lim = parse.GetValue(limit);
            if (lim is < 1) throw new RecurUserException($"--limit must be ≥ 1 (got {lim})");
            int batchSize = parse.GetValue(batch);
            if (batchSize < 1) throw new RecurUserException($"--batch-size must be ≥ 1 (got {batchSize})");
            if (parse.GetValue(maxNew) is < 1) throw new RecurUserException($"--max-new-tokens must be ≥ 1 (got {parse.GetValue(maxNew)})");
            if (parse.GetValue(seqLen) is < 1) throw new RecurUserException($"--seq-len must be ≥ 1 (got {parse.GetValue(seqLen)})");
            var recurrenceList = parse.GetValue(recurrences) is { } recText ? RecurrenceSetting.ParseList(recText, "--recurrences") : null;
            var predictionFiles = Split(parse.GetValue(predictions));
            string? modelPath = parse.GetValue(model);
            if (predictionFiles.Count > 0 && modelPath is not null) throw new RecurUserException("give either --model or --predictions, not both");
            if (predictionFiles.Count == 0 && modelPath is null) throw new RecurUserException("give --model DIR (or --predictions FILE.jsonl to score existing generations)");
            var load = new TaskLoadOptions(lim, parse.GetValue(skipBad));

            if (predictionFiles.Count > 0)
            {
                if (Split(parse.GetValue(data)).Count > 0) throw new RecurUserException("--data is not used with --predictions: the predictions files carry the gold answers");
                var files = AssignPaths(infos, predictionFiles, "--predictions");
                foreach (var i in infos)
                    if (i.Kind == EvalTaskKind.ValLoss || i.Name == "lambada_openai")
                        throw new RecurUserException($"--predictions scores the generation and multiple-choice tasks; '{i.Name}' needs a --model");
                PrepareOutput(outDir, parse.GetValue(force));
                return ScorePredictions(infos, files, load, outDir);
            }

            var dataPaths = AssignPaths(infos, Split(parse.GetValue(data)), "--data");
            var fewshotPaths = FewshotPaths(infos, Split(parse.GetValue(fewshot)), dataPaths, shotCount);
            Common.SetThreads(parse.GetValue(threads));
            PrepareOutput(outDir, parse.GetValue(force), checkOnly: true); // before the weights are read

            // The library's loader: model, tokenizer beside it (or --tokenizer), and the check that they fit.
            using var session = RecurModel.Load(modelPath!, new RecurLoadOptions
            {
                Device = parse.GetValue(device)!, DType = parse.GetValue(dtype) ?? "fp32", Tokenizer = parse.GetValue(tokenizer),
                Notice = s => Console.Error.WriteLine($"note: {Common.Note(s)}"),
            });
            var tok = session.TokenizerFor("eval");
            var m = session.Model;
            var format = ModelLoader.Detect(session.Path!);
            PrepareOutput(outDir, parse.GetValue(force));
            var rm = m as RecurrentModel;
            if (rm is null)
                Console.Error.WriteLine(recurrenceList is null
                    ? "note: the model is not recurrent: each task is evaluated once"
                    : "note: the model is not recurrent: each task is evaluated once and --recurrences is ignored");
            var ts = LoadedTask.Sweep(m, recurrenceList);
            if (ts.Any(t => t?.Adaptive is not null) && infos.Any(i => !EvalTasks.SupportsAdaptive(i)))
                Console.Error.WriteLine($"note: adaptive recurrence runs only for generation tasks; skipped for {string.Join(", ", infos.Where(i => !EvalTasks.SupportsAdaptive(i)).Select(i => i.Name))}");

            int maxNewTokens = infos.Any(i => i.Kind == EvalTaskKind.Generation)
                ? Common.MaxNewTokens(parse.GetValue(maxNew), 256, m.MaxPositions, Console.Error)
                : parse.GetValue(maxNew) ?? 256;
            int effSeqLen = parse.GetValue(seqLen) ?? Math.Min(1024, m.MaxPositions);
            if (infos.Any(i => i.Kind == EvalTaskKind.ValLoss) && parse.GetValue(seqLen) is null && effSeqLen < 1024)
                Console.Error.WriteLine($"note: val_loss rows are {effSeqLen} tokens, the model's context (1024 by default)");
            var baseSettings = new EvalSettings(shotCount, null, lim, parse.GetValue(skipBad), batchSize, maxNewTokens, effSeqLen);

            // Read every task's data before any model time is spent, so a bad file fails fast.
            var loaded = new List<LoadedTask>();
            foreach (var info in infos)
            {
                var lt = EvalTasks.Load(info, dataPaths[info.Name], baseSettings with { FewshotPath = fewshotPaths.GetValueOrDefault(info.Name) }, tok);
                foreach (var w in lt.Warnings) Console.Error.WriteLine($"note: {w}");
                loaded.Add(lt);
            }

            var settings = new JsonObject
            {
                ["shots"] = shotCount,
                ["recurrences"] = rm is null ? null : new JsonArray(ts.Select(t => t!.Fixed is { } f ? (JsonNode?)JsonValue.Create(f) : JsonValue.Create(t.Key)).ToArray()),
                ["dtype"] = HfCheckpoint.DTypeName(m.ComputeDType),
                ["device"] = parse.GetValue(device),
                ["seed"] = parse.GetValue(seed),
                ["limit"] = lim,
                ["batch_size"] = batchSize,
                ["max_new_tokens"] = maxNewTokens,
                ["seq_len"] = effSeqLen,
                ["skip_bad_lines"] = parse.GetValue(skipBad),
                ["add_bos_token"] = tok.BosId is not null,
            };
            var header = new JsonObject
            {
                ["format"] = "recur-eval",
                ["version"] = 1,
                ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                ["model"] = Path.GetFullPath(session.Path!),
                ["model_format"] = format.ToString(),
                ["recurrent"] = rm is not null,
                ["model_mean_recurrence"] = rm?.Config.MeanRecurrence,
                ["tokenizer"] = tok.SourcePath,
            };
            var report = new EvalReport(header, settings);
            foreach (var lt in loaded) report.AddTask(lt.Info, Path.GetFullPath(lt.DataPath), lt.Count, lt.TaskSettings, lt.Warnings);
            string resultsPath = Path.Combine(outDir, ResultsFile);
            long seedValue = parse.GetValue(seed);

            var console = OutConsole();
            using var cancel = Common.CancelOnCtrlC();
            RunWithProgress(console, progress =>
            {
                foreach (var lt in loaded)
                    foreach (var t in ts)
                    {
                        if (t?.Adaptive is not null && !EvalTasks.SupportsAdaptive(lt.Info)) continue;
                        string tKey = t?.Key ?? EvalReport.NoRecurrence;
                        string label = t is null ? lt.Info.Name : t.Adaptive is null ? $"{lt.Info.Name} T={tKey}" : $"{lt.Info.Name} {tKey}";
                        var sw = Stopwatch.StartNew();
                        // Reseeded per (task, T) so that any one result is reproduced by re-running it alone.
                        var outcome = lt.RunAt(m, tok, t, seedValue, progress.Start(label, lt.Count, lt.Info.ProgressUnit), cancel.Token);
                        sw.Stop();
                        string samples = t is null ? $"samples_{lt.Info.Name}.jsonl"
                            : t.Adaptive is null ? $"samples_{lt.Info.Name}_T{tKey}.jsonl" : $"samples_{lt.Info.Name}_{FileSafe(tKey)}.jsonl";
                        SampleLog.Write(Path.Combine(outDir, samples), outcome.Samples);
                        // Fixed T spends T iterations on every token; adaptive runs report what they spent.
                        double? meanIterations = t is null ? null : outcome.MeanIterations ?? t.Fixed;
                        report.AddRun(lt.Info.Name, tKey, outcome.Result, samples, sw.Elapsed.TotalSeconds, outcome.Notes, meanIterations, outcome.Adaptive);
                        // Written after every (task, T) so an interrupted run keeps what it finished.
                        report.Write(resultsPath, complete: false);
                        progress.Done(label, sw.Elapsed, outcome.Result, outcome.Notes);
                    }
            });
            report.Write(resultsPath, complete: true);
            console.Write(report.Summary(console.Profile.Width));
            if (rm is not null)
                foreach (var p in report.WritePlots(outDir, EvalPlot.ModelLabel(modelPath!)))
                    console.WriteLine($"wrote {p}");
            console.WriteLine($"wrote {resultsPath}");
            return 0;
        }));
        return cmd;
    }

    static int ScorePredictions(IReadOnlyList<EvalTaskInfo> infos, IReadOnlyDictionary<string, string> files, TaskLoadOptions load, string outDir)
    {
        var header = new JsonObject
        {
            ["format"] = "recur-eval",
            ["version"] = 1,
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["model"] = null,
            ["recurrent"] = false,
            ["predictions"] = new JsonObject(files.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(Path.GetFullPath(kv.Value))))),
        };
        var report = new EvalReport(header, new JsonObject { ["limit"] = load.Limit, ["skip_bad_lines"] = load.SkipBadLines });
        foreach (var info in infos)
        {
            var sw = Stopwatch.StartNew();
            var scored = PredictionScorer.Score(info.Build(new EvalSettings(Shots: 0)), files[info.Name], load);
            Console.Error.WriteLine($"note: {info.Name}: {files[info.Name]}: detected {scored.Detected}");
            foreach (var w in scored.Result.Warnings) Console.Error.WriteLine($"note: {w}");
            if (scored.Agreement is { } ag)
            {
                Console.Error.WriteLine($"note: {info.Name}: per-item agreement with the scores lm-eval wrote into the file: {ag.Agreed}/{ag.Compared}");
                foreach (var d in ag.Differences) Console.Error.WriteLine($"note:   {d}");
            }
            string samples = $"samples_{info.Name}.jsonl";
            SampleLog.Write(Path.Combine(outDir, samples), scored.Samples);
            report.AddTask(info, Path.GetFullPath(files[info.Name]), scored.Samples.Count, scored.Result.Settings, scored.Result.Warnings, scored.Agreement);
            report.AddRun(info.Name, EvalReport.NoRecurrence, scored.Result, samples, sw.Elapsed.TotalSeconds, []);
        }
        var path = Path.Combine(outDir, ResultsFile);
        report.Write(path, complete: true);
        var console = OutConsole();
        console.Write(report.Summary(console.Profile.Width));
        console.WriteLine($"wrote {path}");
        return 0;
    }

    // ---- arguments ------------------------------------------------------------------------------

    /// <summary>An adaptive spec as a file-name part: <c>adaptive:kl=0.0005,max=32</c> → <c>adaptive_kl0.0005_max32</c>.</summary>
    internal static string FileSafe(string key) =>
        new string(key.Replace(":", "_").Replace(",", "_").Replace("=", "").Select(ch => char.IsLetterOrDigit(ch) || ch is '.' or '_' or '-' ? ch : '_').ToArray());

    static List<EvalTaskInfo> ParseTasks(string text)
    {
        var names = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (names.Length == 0) throw new RecurUserException($"--tasks is empty; known tasks: {string.Join(", ", EvalTasks.Names)}");
        var infos = names.Select(EvalTasks.Get).ToList();
        var dup = infos.GroupBy(i => i.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new RecurUserException($"--tasks names '{dup.Key}' twice");
        return infos;
    }

    static List<string> Split(string[]? values) =>
        (values ?? []).SelectMany(v => v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)).ToList();

    /// <summary>One path per task: positional (in --tasks order) or task=PATH pairs, not mixed.</summary>
    internal static Dictionary<string, string> AssignPaths(IReadOnlyList<EvalTaskInfo> infos, IReadOnlyList<string> entries, string flag)
    {
        var result = new Dictionary<string, string>();
        var taskList = string.Join(", ", infos.Select(i => i.Name));
        bool IsPair(string e) => e.IndexOf('=') is > 0 and var k && TryTask(e[..k]) is not null;
        if (entries.Count == 0) throw new RecurUserException($"{flag}: no file given; give one per task ({taskList}), in order or as task=PATH");
        if (entries.All(IsPair))
        {
            foreach (var e in entries)
            {
                int k = e.IndexOf('=');
                var info = TryTask(e[..k])!;
                if (!infos.Contains(info)) throw new RecurUserException($"{flag}: '{e[..k]}' is not one of --tasks ({taskList})");
                if (!result.TryAdd(info.Name, e[(k + 1)..])) throw new RecurUserException($"{flag}: task '{info.Name}' is given twice");
            }
            var missing = infos.FirstOrDefault(i => !result.ContainsKey(i.Name));
            if (missing is not null) throw new RecurUserException($"{flag}: no file for task '{missing.Name}'");
            return result;
        }
        if (entries.Any(IsPair)) throw new RecurUserException($"{flag}: give either one path per task in order, or task=PATH pairs, not both");
        if (entries.Count != infos.Count)
            throw new RecurUserException($"{flag}: {entries.Count} path{(entries.Count == 1 ? "" : "s")} for {infos.Count} task{(infos.Count == 1 ? "" : "s")} ({taskList}); give one per task in order, or task=PATH pairs");
        for (int i = 0; i < infos.Count; i++) result[infos[i].Name] = entries[i];
        return result;
    }

    static EvalTaskInfo? TryTask(string name)
    {
        try { return EvalTasks.Get(name); }
        catch (RecurUserException) { return null; }
    }

    /// <summary>Exemplar files for the generative tasks; defaults to train.jsonl beside the task's data file.</summary>
    static Dictionary<string, string> FewshotPaths(IReadOnlyList<EvalTaskInfo> infos, IReadOnlyList<string> entries, IReadOnlyDictionary<string, string> data, int shots)
    {
        var gen = infos.Where(i => i.Generative).ToList();
        var result = new Dictionary<string, string>();
        if (entries.Count > 0)
        {
            if (gen.Count == 0) throw new RecurUserException("--fewshot-data is only used by the generation tasks (gsm8k family, minerva_math), and none is in --tasks");
            if (entries.Count == 1 && !entries[0].Contains('=') && gen.Count == 1) result[gen[0].Name] = Path.GetFullPath(entries[0]);
            else
                foreach (var (k, v) in AssignPaths(gen, entries, "--fewshot-data")) result[k] = Path.GetFullPath(v);
        }
        if (shots == 0) return [];
        foreach (var g in gen)
        {
            if (result.ContainsKey(g.Name)) continue;
            var beside = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(data[g.Name]))!, "train.jsonl");
            if (File.Exists(beside) && Path.GetFullPath(data[g.Name]) != beside)
            {
                Console.Error.WriteLine($"note: {g.Name}: {shots}-shot exemplars from {beside} (first {shots}; --fewshot-data to choose another file)");
                result[g.Name] = beside;
            }
            else throw new RecurUserException($"{g.Name}: --shots {shots} needs exemplars: pass --fewshot-data PATH (a training jsonl such as gsm8k/train.jsonl), or --shots 0");
        }
        return result;
    }

    /// <summary>
    /// Refuses a non-empty folder without --force; with it, removes the files an earlier evaluation wrote there
    /// (<paramref name="checkOnly"/>: only the refusal, so that it comes before the model is loaded).
    /// </summary>
    static void PrepareOutput(string dir, bool force, bool checkOnly = false)
    {
        if (File.Exists(dir)) throw new RecurUserException($"--out {dir}: is a file; expected a folder");
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
        {
            if (!force) throw new RecurUserException($"--out {dir}: folder is not empty (use --force to replace an earlier evaluation there)");
            if (checkOnly) return;
            foreach (var f in Directory.EnumerateFiles(dir).Where(f => Path.GetFileName(f) is var n && (n == ResultsFile
                || (n.StartsWith("samples_", StringComparison.Ordinal) && n.EndsWith(".jsonl", StringComparison.Ordinal))
                || (n.StartsWith("plot_", StringComparison.Ordinal) && n.EndsWith(".png", StringComparison.Ordinal)))).ToList())
                File.Delete(f);
        }
        if (!checkOnly) Directory.CreateDirectory(dir);
    }

    // ---- console ---------------------------------------------------------------------------------

    /// <summary>A console bound to the current Console.Out (so redirection, e.g. in tests, is honoured).</summary>
    static IAnsiConsole OutConsole() => Common.OutConsole();

    interface IProgressSink
    {
        Action<int, int> Start(string label, int total, string unit);
        void Done(string label, TimeSpan elapsed, EvalResult result, IReadOnlyList<string> notes);
    }

    /// <summary>One live progress line on a terminal (ProgressLine); plain lines (at most one per 10 s per task) otherwise.</summary>
    static void RunWithProgress(IAnsiConsole console, Action<IProgressSink> body)
    {
        bool live = !Console.IsOutputRedirected && console.Profile.Capabilities.Interactive;
        if (!live) { body(new PlainProgress(console)); return; }
        var line = ProgressLine.ForConsole();
        try { body(new LiveProgress(line)); }
        finally { line.Finish(completed: false); }
    }

    static string Summary(EvalResult r) =>
        string.Join(", ", r.Metrics.Where(kv => !kv.Key.Contains("_stderr", StringComparison.Ordinal))
            .Select(kv => $"{kv.Key} {kv.Value.ToString("0.0000", CultureInfo.InvariantCulture)}"));

    sealed class PlainProgress(IAnsiConsole console) : IProgressSink
    {
        public Action<int, int> Start(string label, int total, string unit)
        {
            console.WriteLine($"{label}: 0/{total} {unit}");
            var last = Stopwatch.StartNew();
            return (done, all) =>
            {
                if (done < all && last.Elapsed.TotalSeconds < 10) return;
                last.Restart();
                if (done < all) console.WriteLine($"{label}: {done}/{all} {unit}");
            };
        }

        public void Done(string label, TimeSpan elapsed, EvalResult result, IReadOnlyList<string> notes)
        {
            foreach (var n in notes) Console.Error.WriteLine($"note: {label}: {n}");
            console.WriteLine($"{label}: done in {elapsed.TotalSeconds:0.0} s: {Summary(result)}");
        }
    }

    sealed class LiveProgress(ProgressLine line) : IProgressSink
    {
        public Action<int, int> Start(string label, int total, string unit)
        {
            line.Start($"{label} (0/{total} {unit})", total);
            return (done, all) => line.Update(done, all, $"{label} ({done}/{all} {unit})");
        }

        public void Done(string label, TimeSpan elapsed, EvalResult result, IReadOnlyList<string> notes)
        {
            line.Finish();
            foreach (var n in notes) line.Log($"note: {label}: {n}");
            line.Log($"{label}: done in {elapsed.TotalSeconds:0.0} s: {Summary(result)}");
        }
    }
}
