namespace Recur.Tasks;

/// <summary>One MATH problem with its normalised gold answer.</summary>
/// <param name="Subject">The <c>type</c> (Hendrycks MATH) or <c>subject</c> (MATH-500) field, when present.</param>
public sealed record MathDoc(int Line, string Problem, string Gold, string? Subject = null);

/// <summary>
/// One scored MATH answer. <c>Extracted</c> comes from the final-answer sentence only, as the harness does;
/// <c>ExtractedBoxed</c> falls back to the output's last <c>\boxed{}</c> when that sentence is missing.
/// </summary>
public sealed record MathSample(int Index, string Prompt, string Output, string Gold, string Extracted, string ExtractedBoxed,
    bool Correct, bool CorrectBoxed, string? Subject = null) : IEvalSample;

/// <summary>
/// Minerva-style MATH (EleutherAI/lm-evaluation-harness:lm_eval/tasks/minerva_math, METHOD §8): prompt
/// <c>Problem:\n{problem}\n\nSolution:</c>, greedy, stop at <c>Problem:</c>; the answer is X in "Final Answer:
/// The final answer is X. I hope it is correct.", normalised with Minerva's rules and compared with the
/// normalised last <c>\boxed{}</c> of the reference solution by <see cref="MinervaMath.IsEquivalent"/> (sympy-level, <see cref="MathEquivalence"/>).
/// </summary>
/// <remarks>
/// <c>minerva_math</c> is lm-eval's group of seven subject tasks (benchmarks/minerva_math.yaml): its
/// <c>exact_match</c> is the size-weighted mean of the subjects', i.e. the mean over all problems, and its stderr
/// the pooled one (lm_eval/api/metrics.py <c>pooled_sample_stderr</c>) when the data carries the subject
/// (<c>type</c>). <c>minerva_math_algebra</c> etc. keep only the problems of their subject.
/// <c>exact_match,boxed-fallback</c> is Recur's extra metric (a bare <c>\boxed{}</c> answer also counts); the
/// harness's <c>math_verify</c> (the math-verify package) is not reproduced. The Minerva exemplars are not
/// shipped: exemplars are the first K problems of a training jsonl, each solution given the final-answer
/// sentence built from its last <c>\boxed{}</c>.
/// </remarks>
public sealed class MathTask : GenerationTask<MathDoc, MathSample>
{
    public const string GroupName = "minerva_math";

    /// <summary>The subject tasks of the <c>minerva_math</c> group and the <c>type</c> value each keeps (EleutherAI/hendrycks_math).</summary>
    public static IReadOnlyList<(string Name, string Type)> Subtasks { get; } =
    [
        ("minerva_math_algebra", "Algebra"),
        ("minerva_math_counting_and_prob", "Counting & Probability"),
        ("minerva_math_geometry", "Geometry"),
        ("minerva_math_intermediate_algebra", "Intermediate Algebra"),
        ("minerva_math_num_theory", "Number Theory"),
        ("minerva_math_prealgebra", "Prealgebra"),
        ("minerva_math_precalc", "Precalculus"),
    ];

    /// <summary>minerva_math yaml <c>generation_kwargs.until</c>; the engine adds the model's EOS.</summary>
    public static IReadOnlyList<string> Stops { get; } = ["Problem:"];

    const string FinalAnswerMarker = "Final Answer: The final answer is";

    /// <param name="name"><c>minerva_math</c> (all subjects), a subject task, or <c>minerva_math500</c>.</param>
    public MathTask(string name = GroupName, GenerationTaskOptions? options = null, IReadOnlyList<Exemplar>? exemplarPool = null, string? fewshotSource = null)
        : base(name, options, exemplarPool, fewshotSource)
    {
        SubjectType = Subtasks.FirstOrDefault(s => s.Name == name).Type;
    }

    /// <summary>Builds the task, reading the first K (+1 spare) exemplars from <paramref name="fewshotPath"/> when K &gt; 0.</summary>
    public static MathTask Create(string name, GenerationTaskOptions options, string? fewshotPath)
    {
        if (options.NumFewshot == 0 || fewshotPath is null) return new MathTask(name, options, [], fewshotPath);
        return new MathTask(name, options, LoadExemplars(fewshotPath, options.NumFewshot + 1), fewshotPath);
    }

    /// <summary>The <c>type</c> a subject task keeps; null for the whole group and MATH-500.</summary>
    public string? SubjectType { get; }

    public override IReadOnlyList<string> StopSequences => Stops;

    protected override string ExemplarHint => "a MATH train.jsonl with problem, solution";

    public override IReadOnlyDictionary<string, string> Settings => new Dictionary<string, string>(base.Settings)
    {
        ["equivalence"] = "lm-eval is_equiv (sympy parse_latex + simplify), reproduced in C#",
    };

    /// <summary>
    /// Reads a MATH jsonl: <c>problem</c>, and <c>solution</c> (gold = its last <c>\boxed{}</c>, as the harness's
    /// <c>process_docs</c>) or, without a solution, <c>answer</c> (normalised). A subject task keeps the rows of its
    /// <c>type</c> only (then <c>Limit</c> counts those).
    /// </summary>
    public override TaskData<MathDoc> Load(string path, TaskLoadOptions? options = null)
    {
        if (SubjectType is null) return LoadDocs(path, options);
        options ??= TaskLoadOptions.Default;
        var all = LoadDocs(path, options with { Limit = null });
        var kept = all.Docs.Where(d => d.Subject == SubjectType).ToList();
        if (kept.Count == 0) throw new RecurUserException($"{path}: no problem of type '{SubjectType}' for {Name} (the rows need a 'type' field)");
        var warnings = all.Warnings.ToList();
        if (options.Limit is int lim)
        {
            if (lim < kept.Count) kept = kept.Take(lim).ToList();
            else if (lim > kept.Count) warnings.Add($"{path}: limit {lim} is larger than the {kept.Count} {SubjectType} problems available; using all {kept.Count}");
        }
        return all with { Docs = kept, Warnings = warnings };
    }

    /// <summary>Reads every problem of a MATH jsonl (see <see cref="Load"/>).</summary>
    public static TaskData<MathDoc> LoadDocs(string path, TaskLoadOptions? options = null) =>
        Jsonl.Read(path, row => new MathDoc(row.Line, row.String("problem"), Gold(row), row.OptionalString("type") ?? row.OptionalString("subject")), options);

    /// <summary>The normalised gold of a row: from <c>solution</c>'s last box, else <c>answer</c> normalised.</summary>
    public static string Gold(JsonlRow row)
    {
        if (row.Has("solution"))
            return MinervaMath.GoldFromSolution(row.String("solution")) ?? throw row.Error("field 'solution' has no \\boxed{...} answer");
        if (row.Has("answer")) return MinervaMath.NormalizeFinalAnswer(row.StringOrNumber("answer"));
        throw row.Error("missing field 'solution' (or 'answer')");
    }

    public override string GoldOf(JsonlRow doc) => Gold(doc);

    /// <summary>Reads the first <paramref name="count"/> problems of a training jsonl (<c>problem</c>, <c>solution</c>) as exemplars.</summary>
    public static IReadOnlyList<Exemplar> LoadExemplars(string path, int count) =>
        LoadExemplars(path, count, row => ToExemplar(row.String("problem"), row.String("solution"))
            ?? throw row.Error("field 'solution' has no \\boxed{...} answer to build an exemplar from"));

    /// <summary>
    /// The exemplar target: the solution, followed (unless it already has one) by the Minerva final-answer
    /// sentence with the unnormalised content of its last <c>\boxed{}</c>; null when there is no box.
    /// </summary>
    public static Exemplar? ToExemplar(string problem, string solution)
    {
        if (solution.Contains(FinalAnswerMarker, StringComparison.Ordinal)) return new Exemplar(problem, solution);
        if (MinervaMath.RemoveBoxed(MinervaMath.LastBoxedOnlyString(solution)) is not string boxed) return null;
        return new Exemplar(problem, $"{solution.TrimEnd()}\n{FinalAnswerMarker} ${boxed}$. I hope it is correct.");
    }

    /// <summary>utils.py <c>doc_to_text</c>.</summary>
    public override string DocToText(string problem) => "Problem:\n" + problem + "\n\nSolution:";

    protected override string QuestionOf(MathDoc doc) => doc.Problem;

    protected override string GoldOf(MathDoc doc) => doc.Gold;

    /// <summary>Scores one generation against a normalised gold answer (utils.py <c>process_results</c>).</summary>
    public override MathSample Score(int index, string prompt, string output, string gold) => ScoreOutput(index, prompt, output, gold);

    /// <summary>Scores one generation against a normalised gold answer (utils.py <c>process_results</c>).</summary>
    public static MathSample ScoreOutput(int index, string prompt, string output, string gold, string? subject = null)
    {
        var cut = LmEval.CutAtStopSequences(output, Stops);
        var raw = MinervaMath.GetUnnormalizedAnswer(cut);
        var extracted = MinervaMath.NormalizeFinalAnswer(raw);
        var boxed = raw == MinervaMath.InvalidAnswer
            ? MinervaMath.RemoveBoxed(MinervaMath.LastBoxedOnlyString(cut)) is string b ? MinervaMath.NormalizeFinalAnswer(b) : MinervaMath.InvalidAnswer
            : extracted;
        bool correct = MinervaMath.IsEquivalent(extracted, gold);
        return new MathSample(index, prompt, cut, gold, extracted, boxed, correct, boxed == extracted ? correct : MinervaMath.IsEquivalent(boxed, gold), subject);
    }

    public override IReadOnlyDictionary<string, bool> Correctness(MathSample s) =>
        new Dictionary<string, bool> { ["none"] = s.Correct, ["boxed-fallback"] = s.CorrectBoxed };

    public override EvalResult Aggregate(IReadOnlyList<MathSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings)
    {
        var b = new EvalResult.Builder();
        // The group's stderr pools the subjects' (lm-eval aggregates a group from its subtasks); a single task's is the plain one.
        if (Name == GroupName && samples.Count > 0 && samples.All(s => s.Subject is not null) && samples.Select(s => s.Subject).Distinct().Count() > 1)
        {
            b.PooledMean("exact_match", "none", samples.GroupBy(s => s.Subject).Select(g => g.Select(s => s.Correct ? 1.0 : 0.0).ToList()).ToList());
            b.PooledMean("exact_match", "boxed-fallback", samples.GroupBy(s => s.Subject).Select(g => g.Select(s => s.CorrectBoxed ? 1.0 : 0.0).ToList()).ToList());
        }
        else
        {
            b.Mean("exact_match", "none", samples.Select(s => s.Correct ? 1.0 : 0.0).ToList());
            b.Mean("exact_match", "boxed-fallback", samples.Select(s => s.CorrectBoxed ? 1.0 : 0.0).ToList());
        }
        return new EvalResult(Name, samples.Count, b.Build(), settings, warnings);
    }

    protected override MathSample ScoreDoc(int index, string prompt, string output, MathDoc doc) =>
        Score(index, prompt, output, doc.Gold) with { Subject = doc.Subject };
}
