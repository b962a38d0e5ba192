using System.Globalization;
using Recur.Engine;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;

namespace Recur.Evaluation;

/// <summary>How a task reaches the model.</summary>
public enum EvalTaskKind { Gsm8k, Math, MultipleChoice, Lambada, ValLoss }

/// <summary>
/// A task name the <c>eval</c> verb accepts.
/// </summary>
/// <param name="Name">Recur's name (used in file names and results.json).</param>
/// <param name="PlotMetrics">Metrics drawn against T (accuracies share one axis; val_loss draws its loss).</param>
public sealed record EvalTaskInfo(string Name, EvalTaskKind Kind, IReadOnlyList<string> PlotMetrics)
{
    /// <summary>The first plotted metric, shown first in tables.</summary>
    public string MainMetric => PlotMetrics[0];

    /// <summary>What progress counts: generated answers, scored (context, continuation) requests, or rows.</summary>
    public string ProgressUnit => Kind switch
    {
        EvalTaskKind.Gsm8k or EvalTaskKind.Math => "problems",
        EvalTaskKind.ValLoss => "rows",
        _ => "requests",
    };
}

/// <summary>Settings shared by every task of one evaluation.</summary>
/// <param name="Shots">Exemplars before each GSM8K / MATH question (1 in the paper); multiple choice is zero-shot.</param>
/// <param name="FewshotPath">Training jsonl the exemplars are drawn from (first K, lm-eval's first_n).</param>
/// <param name="SeqLen">Row length for val_loss.</param>
public sealed record EvalSettings(int Shots = 1, string? FewshotPath = null, Gsm8kPromptStyle PromptStyle = Gsm8kPromptStyle.Sean,
    int? Limit = null, bool SkipBadLines = false, int BatchSize = 32, int MaxNewTokens = 256, int SeqLen = 1024);

/// <summary>The result of one task at one recurrence: its aggregate and every sample.</summary>
/// <param name="Notes">Things the user should know about this run (e.g. prompts cut to fit the context).</param>
/// <param name="MeanIterations">Adaptive runs: mean recurrent iterations per generated token (null for fixed T).</param>
/// <param name="Adaptive">Adaptive runs: the full iteration accounting.</param>
public sealed record TaskOutcome(EvalResult Result, IReadOnlyList<IEvalSample> Samples, IReadOnlyList<string> Notes,
    double? MeanIterations = null, AdaptiveStats? Adaptive = null);

/// <summary>The tasks Recur can evaluate, by name.</summary>
public static class EvalTasks
{
    static readonly EvalTaskInfo[] All =
    [
        new("gsm8k", EvalTaskKind.Gsm8k, ["exact_match,flexible-extract", "exact_match,strict-match"]),
        new("math", EvalTaskKind.Math, ["exact_match,none", "exact_match,boxed-fallback"]),
        new("hellaswag", EvalTaskKind.MultipleChoice, ["acc_norm,none", "acc,none"]),
        new("arc_easy", EvalTaskKind.MultipleChoice, ["acc_norm,none", "acc,none"]),
        new("arc_challenge", EvalTaskKind.MultipleChoice, ["acc_norm,none", "acc,none"]),
        new("piqa", EvalTaskKind.MultipleChoice, ["acc_norm,none", "acc,none"]),
        new("winogrande", EvalTaskKind.MultipleChoice, ["acc,none"]),
        new("multiple_choice", EvalTaskKind.MultipleChoice, ["acc_norm,none", "acc,none"]),
        new("lambada", EvalTaskKind.Lambada, ["acc,none"]),
        new("val_loss", EvalTaskKind.ValLoss, ["loss,none"]),
    ];

    static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["minerva_math"] = "math", ["lambada_openai"] = "lambada",
    };

    public static IReadOnlyList<string> Names { get; } = All.Select(t => t.Name).ToList();

    /// <summary>The task for a name or an lm-eval alias (minerva_math, lambada_openai); fails listing the known names.</summary>
    public static EvalTaskInfo Get(string name)
    {
        var key = Aliases.TryGetValue(name, out var a) ? a : name;
        return All.FirstOrDefault(t => string.Equals(t.Name, key, StringComparison.OrdinalIgnoreCase))
            ?? throw new RecurUserException($"unknown task '{name}'; known tasks: {string.Join(", ", Names)}");
    }

    /// <summary>Reads a task's data (and exemplars) once, for evaluation at any number of recurrences.</summary>
    public static LoadedTask Load(EvalTaskInfo info, string path, EvalSettings settings, ITokenizer tokenizer)
    {
        var load = new TaskLoadOptions(settings.Limit, settings.SkipBadLines);
        switch (info.Kind)
        {
            case EvalTaskKind.Gsm8k:
            {
                var task = Gsm8kTask.Create(new Gsm8kOptions(settings.PromptStyle, settings.Shots, settings.MaxNewTokens), settings.FewshotPath);
                var data = Gsm8kTask.Load(path, load);
                return new LoadedTask(info, task.Name, path, data.Docs.Count, data.Warnings, settings, task.Settings,
                    (m, t, p, c, a) =>
                    {
                        var gen = Generator(m, t, settings, p, c, a);
                        var run = task.Evaluate(gen, data, int.MaxValue);
                        return Outcome(run.Result, [.. run.Samples], gen);
                    });
            }
            case EvalTaskKind.Math:
            {
                var task = MathTask.Create(new MathOptions(settings.Shots, settings.MaxNewTokens), settings.FewshotPath);
                var data = MathTask.Load(path, load);
                return new LoadedTask(info, MathTask.Name, path, data.Docs.Count, data.Warnings, settings, task.Settings,
                    (m, t, p, c, a) =>
                    {
                        var gen = Generator(m, t, settings, p, c, a);
                        var run = task.Evaluate(gen, data, int.MaxValue);
                        return Outcome(run.Result, [.. run.Samples], gen);
                    });
            }
            case EvalTaskKind.MultipleChoice:
            {
                var task = MultipleChoiceTask.ForName(info.Name);
                var data = task.Load(path, load);
                return new LoadedTask(info, task.Name, path, data.Docs.Count, data.Warnings, settings, new Dictionary<string, string> { ["num_fewshot"] = "0" },
                    (m, t, p, c, _) =>
                    {
                        var run = task.Evaluate(new ModelLogLikelihood(m, t, settings.BatchSize) { Progress = p, Cancel = c }, data, int.MaxValue);
                        return new TaskOutcome(run.Result, [.. run.Samples], []);
                    });
            }
            case EvalTaskKind.Lambada:
            {
                var data = LambadaTask.Load(path, load);
                return new LoadedTask(info, LambadaTask.Name, path, data.Docs.Count, data.Warnings, settings, new Dictionary<string, string> { ["num_fewshot"] = "0" },
                    (m, t, p, c, _) =>
                    {
                        var run = LambadaTask.Evaluate(new ModelLogLikelihood(m, t, settings.BatchSize) { Progress = p, Cancel = c }, data, int.MaxValue);
                        return new TaskOutcome(run.Result, [.. run.Samples], []);
                    });
            }
            case EvalTaskKind.ValLoss:
            {
                var data = ValLossTask.Load(path, tokenizer, settings.SeqLen, load);
                var taskSettings = new Dictionary<string, string> { ["seq_len"] = settings.SeqLen.ToString(CultureInfo.InvariantCulture) };
                return new LoadedTask(info, ValLossTask.Name, path, data.Rows.Count, data.Warnings, settings, taskSettings,
                    (m, _, p, c, _) =>
                    {
                        var run = ValLossTask.Evaluate(m, data, p, c);
                        return new TaskOutcome(run.Result, [.. run.Samples], []);
                    });
            }
            default: throw new ArgumentOutOfRangeException(nameof(info));
        }
    }

    static IReadOnlyList<string> TruncationNotes(ModelGenerator g) => g.TruncatedPrompts == 0 ? [] :
        [$"{g.TruncatedPrompts} prompt{(g.TruncatedPrompts == 1 ? " was" : "s were")} cut from the left to fit the model's context minus the generation budget"];

    static ModelGenerator Generator(ICausalLM m, ITokenizer t, EvalSettings s, Action<int, int>? progress, CancellationToken cancel, AdaptiveOptions? adaptive) =>
        new(m, t, s.BatchSize) { Progress = progress, Cancel = cancel, Adaptive = adaptive };

    static TaskOutcome Outcome(EvalResult result, IReadOnlyList<IEvalSample> samples, ModelGenerator g)
    {
        if (g.Adaptive is null) return new TaskOutcome(result, samples, TruncationNotes(g));
        var s = g.AdaptiveStats;
        var notes = TruncationNotes(g).ToList();
        notes.Add($"adaptive (experimental): {s.MeanIterations:0.00} iterations per generated token over {s.Tokens} tokens (max {g.Adaptive.MaxIterations}); " +
            $"{s.PromptTokens} prompt tokens ran all {g.Adaptive.MaxIterations}" + (s.Probes > 0 ? $"; {s.Probes} coda+head probes" : ""));
        return new TaskOutcome(result, samples, notes, s.MeanIterations, s);
    }

    /// <summary>Whether a task can run with adaptive recurrence (generation tasks only: scoring has no decode steps).</summary>
    public static bool SupportsAdaptive(EvalTaskInfo info) => info.Kind is EvalTaskKind.Gsm8k or EvalTaskKind.Math;
}

/// <summary>A task whose data is in memory, ready to run against a model at its current recurrence.</summary>
public sealed class LoadedTask
{
    readonly Func<ICausalLM, ITokenizer, Action<int, int>?, CancellationToken, AdaptiveOptions?, TaskOutcome> _run;

    internal LoadedTask(EvalTaskInfo info, string lmEvalName, string path, int count, IReadOnlyList<string> warnings, EvalSettings settings,
        IReadOnlyDictionary<string, string> taskSettings, Func<ICausalLM, ITokenizer, Action<int, int>?, CancellationToken, AdaptiveOptions?, TaskOutcome> run)
    {
        Info = info;
        LmEvalName = lmEvalName;
        DataPath = path;
        Count = count;
        Warnings = warnings;
        Settings = settings;
        TaskSettings = taskSettings;
        _run = run;
    }

    public EvalTaskInfo Info { get; }
    /// <summary>The lm-eval task this mirrors (gsm8k_cot_sean, minerva_math, lambada_openai, ...).</summary>
    public string LmEvalName { get; }
    public string DataPath { get; }
    /// <summary>Examples (rows for val_loss) that will be evaluated.</summary>
    public int Count { get; }
    public IReadOnlyList<string> Warnings { get; }
    public EvalSettings Settings { get; }
    /// <summary>What shaped this task's numbers (shots, prompt style, exemplar source...).</summary>
    public IReadOnlyDictionary<string, string> TaskSettings { get; }

    /// <summary>
    /// Evaluates at the model's current recurrence, or with adaptive per-token recurrence (generation tasks only, see
    /// <see cref="EvalTasks.SupportsAdaptive"/>). <paramref name="progress"/> sees (done, total) in the task's units.
    /// </summary>
    public TaskOutcome Run(ICausalLM model, ITokenizer tokenizer, Action<int, int>? progress = null, CancellationToken cancel = default, AdaptiveOptions? adaptive = null)
    {
        if (adaptive is not null && !EvalTasks.SupportsAdaptive(Info))
            throw new RecurUserException($"{Info.Name}: adaptive recurrence applies to generation tasks (gsm8k, math) only");
        return _run(model, tokenizer, progress, cancel, adaptive);
    }
}
