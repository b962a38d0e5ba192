using System.Globalization;
using Recur.Engine;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;

namespace Recur.Evaluation;

/// <summary>How a task reaches the model.</summary>
public enum EvalTaskKind
{
    /// <summary>Prompts in, generated text out (GSM8K family, MATH): <see cref="IGenerationTask"/>.</summary>
    Generation,
    /// <summary>(context, continuation) log-likelihoods (multiple choice, LAMBADA): <see cref="ILogLikelihoodTask"/>.</summary>
    LogLikelihood,
    /// <summary>Validation loss on packed text rows (not an lm-eval task).</summary>
    ValLoss,
}

/// <summary>
/// A task name the <c>eval</c> verb accepts: lm-eval's own task name, what it means, and the version of lm-eval's
/// rules (the yaml's <c>metadata.version</c>) that Recur reproduces.
/// </summary>
/// <param name="Name">The lm-eval task name (used in file names and results.json); <c>multiple_choice</c> and <c>val_loss</c> are Recur's.</param>
/// <param name="PlotMetrics">Metrics drawn against T (accuracies share one axis; val_loss draws its loss).</param>
/// <param name="LmEvalVersion">lm-eval's version of the task's rules; null for Recur-only tasks.</param>
/// <param name="Means">One line saying which lm-eval task and rules the name stands for.</param>
public sealed record EvalTaskInfo(string Name, EvalTaskKind Kind, IReadOnlyList<string> PlotMetrics, string? LmEvalVersion, string Means)
{
    /// <summary>The first plotted metric, shown first in tables.</summary>
    public string MainMetric => PlotMetrics[0];

    /// <summary>Whether the task generates text (and so takes exemplars and adaptive recurrence).</summary>
    public bool Generative => Kind == EvalTaskKind.Generation;

    /// <summary>What progress counts: generated answers, scored (context, continuation) requests, or rows.</summary>
    public string ProgressUnit => Kind switch
    {
        EvalTaskKind.Generation => "problems",
        EvalTaskKind.ValLoss => "rows",
        _ => "requests",
    };

    internal Func<EvalSettings, IEvalTask>? Create { get; init; }

    /// <summary>The task object for these settings (generation and log-likelihood kinds).</summary>
    public IEvalTask Build(EvalSettings settings) =>
        Create?.Invoke(settings) ?? throw new InvalidOperationException($"{Name} has no task object");
}

/// <summary>Settings shared by every task of one evaluation.</summary>
/// <param name="Shots">Exemplars before each GSM8K / MATH question (1 in the paper); multiple choice is zero-shot.</param>
/// <param name="FewshotPath">Training jsonl the exemplars are drawn from (first K, lm-eval's first_n).</param>
/// <param name="SeqLen">Row length for val_loss.</param>
public sealed record EvalSettings(int Shots = 1, string? FewshotPath = null,
    int? Limit = null, bool SkipBadLines = false, int BatchSize = 32, int MaxNewTokens = 256, int SeqLen = 1024)
{
    public GenerationTaskOptions Generation => new(Shots, MaxNewTokens);
}

/// <summary>The result of one task at one recurrence: its aggregate and every sample.</summary>
/// <param name="Notes">Things the user should know about this run (e.g. prompts cut to fit the context).</param>
/// <param name="MeanIterations">Adaptive runs: mean recurrent iterations per generated token (null for fixed T).</param>
/// <param name="Adaptive">Adaptive runs: the full iteration accounting.</param>
public sealed record TaskOutcome(EvalResult Result, IReadOnlyList<IEvalSample> Samples, IReadOnlyList<string> Notes,
    double? MeanIterations = null, AdaptiveStats? Adaptive = null);

/// <summary>The tasks Recur can evaluate, by lm-eval name.</summary>
public static class EvalTasks
{
    static readonly string[] Gsm8kMetrics = ["exact_match,flexible-extract", "exact_match,strict-match"];
    static readonly string[] MathMetrics = ["exact_match,none", "exact_match,boxed-fallback"];
    static readonly string[] ChoiceMetrics = ["acc_norm,none", "acc,none"];

    static EvalTaskInfo Gsm8k(Gsm8kVariant v, string means) =>
        new(Gsm8kTask.NameOf(v), EvalTaskKind.Generation, Gsm8kMetrics, "3.0", means)
        { Create = s => Gsm8kTask.Create(v, s.Generation, s.FewshotPath) };

    static EvalTaskInfo Math(string name, string version, string means) =>
        new(name, EvalTaskKind.Generation, MathMetrics, version, means) { Create = s => MathTask.Create(name, s.Generation, s.FewshotPath) };

    static EvalTaskInfo Hendrycks(string name, string means) =>
        new(name, EvalTaskKind.Generation, ["exact_match,none"], "1.0", means) { Create = s => HendrycksMathTask.Create(name, s.Generation, s.FewshotPath) };

    static EvalTaskInfo Choice(string name, string? version, string means) =>
        new(name, EvalTaskKind.LogLikelihood, name == "winogrande" ? ["acc,none"] : ChoiceMetrics, version, means)
        { Create = _ => MultipleChoiceTask.ForName(name) };

    static readonly EvalTaskInfo[] All =
    [
        Gsm8k(Gsm8kVariant.Gsm8k, "lm-eval gsm8k: 'Question: …\\nAnswer:' prompt, stop at 'Question:', strict-match '#### N'"),
        Gsm8k(Gsm8kVariant.Cot, "lm-eval gsm8k_cot: 'Q: …\\nA:' prompt, stop at 'Q:', strict-match 'The answer is N.'"),
        Gsm8k(Gsm8kVariant.CotSean, "the paper's gsm8k_cot_sean: gsm8k_cot with 'A: Let's think step by step.' (METHOD §8)"),
        Math(MathTask.GroupName, "1.0", "lm-eval minerva_math (group of 7 subjects, v3.0 each): Minerva prompt and normalisation, sympy-level equivalence"),
        .. MathTask.Subtasks.Select(st => Math(st.Name, "3.0", $"lm-eval {st.Name}: the {st.Type} problems of minerva_math")),
        Math("minerva_math500", "3.0", "lm-eval minerva_math500: minerva_math rules on MATH-500"),
        Hendrycks(HendrycksMathTask.GroupName, "lm-eval hendrycks_math (group of 7 subjects, v1.0 each): 'Problem: …\\nAnswer:', answer between the first and last $, Hendrycks' strip_string equality"),
        .. HendrycksMathTask.Subtasks.Select(st => Hendrycks(st.Name, $"lm-eval {st.Name}: the {st.Type} problems of hendrycks_math")),
        Choice("hellaswag", "1.0", "lm-eval hellaswag: acc and acc_norm over 4 endings"),
        Choice("arc_easy", "1.0", "lm-eval arc_easy: 'Question: …\\nAnswer:', acc and acc_norm"),
        Choice("arc_challenge", "1.0", "lm-eval arc_challenge: 'Question: …\\nAnswer:', acc and acc_norm"),
        Choice("piqa", "1.0", "lm-eval piqa: 'Question: …\\nAnswer:', acc and acc_norm"),
        Choice("winogrande", "1.0", "lm-eval winogrande: partial evaluation, acc"),
        Choice("multiple_choice", null, "Recur's generic multiple choice (context, choices, gold), scored as lm-eval's multiple_choice"),
        new("lambada_openai", EvalTaskKind.LogLikelihood, ["acc,none"], "1.0", "lm-eval lambada_openai: acc (greedy last word) and perplexity")
            { Create = _ => new LambadaTask() },
        new("val_loss", EvalTaskKind.ValLoss, ["loss,none"], null, "Recur's validation loss per T (the paper's multi_recurence_eval.py), not an lm-eval task"),
    ];

    /// <summary>Names that mean more than one lm-eval task: refused with the choices.</summary>
    static readonly Dictionary<string, string> Ambiguous = new(StringComparer.OrdinalIgnoreCase)
    {
        ["math"] = "minerva_math (Minerva prompt, sympy equivalence), hendrycks_math (string equality after strip_string) or minerva_math500",
        ["lambada"] = "lambada_openai (lm-eval's 'lambada' is a group that also holds lambada_standard, which is not implemented)",
        ["arc"] = "arc_easy or arc_challenge",
    };

    public static IReadOnlyList<string> Names { get; } = All.Select(t => t.Name).ToList();

    /// <summary>The task for a lm-eval task name (case-insensitive); fails listing the known names or the choices an ambiguous name has.</summary>
    public static EvalTaskInfo Get(string name)
    {
        if (Ambiguous.TryGetValue(name, out var choices))
            throw new RecurUserException($"task '{name}' is ambiguous; use {choices}");
        return All.FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase))
            ?? throw new RecurUserException($"unknown task '{name}'; known tasks: {string.Join(", ", Names)}");
    }

    /// <summary>Reads a task's data (and exemplars) once, for evaluation at any number of recurrences.</summary>
    public static LoadedTask Load(EvalTaskInfo info, string path, EvalSettings settings, ITokenizer tokenizer)
    {
        var load = new TaskLoadOptions(settings.Limit, settings.SkipBadLines);
        switch (info.Kind)
        {
            case EvalTaskKind.Generation:
            {
                var task = (IGenerationTask)info.Build(settings);
                var prepared = task.Prepare(path, load);
                return new LoadedTask(info, task.Name, path, prepared.Count, prepared.Warnings, settings, task.Settings,
                    (m, t, p, c, a) =>
                    {
                        var gen = new ModelGenerator(m, t, settings.BatchSize) { Progress = p, Cancel = c, Adaptive = a };
                        var run = prepared.Run(gen, int.MaxValue, null);
                        return Outcome(run.Result, run.Samples, gen);
                    });
            }
            case EvalTaskKind.LogLikelihood:
            {
                var task = (ILogLikelihoodTask)info.Build(settings);
                var prepared = task.Prepare(path, load);
                return new LoadedTask(info, task.Name, path, prepared.Count, prepared.Warnings, settings, task.Settings,
                    (m, t, p, c, _) =>
                    {
                        var run = prepared.Run(new ModelLogLikelihood(m, t, settings.BatchSize) { Progress = p, Cancel = c }, int.MaxValue, null);
                        return new TaskOutcome(run.Result, run.Samples, []);
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
    public static bool SupportsAdaptive(EvalTaskInfo info) => info.Generative;
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
            throw new RecurUserException($"{Info.Name}: adaptive recurrence applies to generation tasks (gsm8k family, minerva_math) only");
        return _run(model, tokenizer, progress, cancel, adaptive);
    }

    /// <summary>
    /// One step of a sweep over test-time recurrences (METHOD §7.1), the one used by <c>RecurModel.Evaluate</c> and
    /// <c>recur eval</c>: a recurrent model runs at <paramref name="setting"/> (a fixed T, or an adaptive rule up to
    /// its maximum) with s_0 drawn from a generator seeded with <paramref name="seed"/> afresh, so that any one result
    /// is reproduced by running it alone; a plain model (setting null) runs as it is.
    /// </summary>
    public TaskOutcome RunAt(ICausalLM model, ITokenizer tokenizer, RecurrenceSetting? setting, long seed, Action<int, int>? progress = null,
        CancellationToken cancel = default)
    {
        if (model is not RecurrentModel rm) return Run(model, tokenizer, progress, cancel);
        if (setting is null) throw new ArgumentNullException(nameof(setting), "a recurrent model runs at a recurrence");
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        var atT = rm.At(Recurrence.Fixed(setting.Fixed ?? setting.Adaptive!.MaxIterations, gen));
        return Run(atT, tokenizer, progress, cancel, setting.Adaptive);
    }

    /// <summary>
    /// The recurrences a sweep runs: <paramref name="given"/> for a recurrent model, or its <paramref name="defaultT"/>
    /// (null: the config's mean_recurrence); a plain model runs once, without T (one null entry).
    /// </summary>
    public static IReadOnlyList<RecurrenceSetting?> Sweep(ICausalLM model, IReadOnlyList<RecurrenceSetting>? given, int? defaultT = null) =>
        model is RecurrentModel rm ? [.. given ?? new[] { new RecurrenceSetting(defaultT ?? rm.DefaultRecurrences, null) }] : [null];
}
