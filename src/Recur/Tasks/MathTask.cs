using System.Globalization;
using System.Text;

namespace Recur.Tasks;

/// <summary>One MATH problem with its normalised gold answer.</summary>
/// <param name="Subject">The <c>type</c> (Hendrycks MATH) or <c>subject</c> (MATH-500) field, when present.</param>
public sealed record MathDoc(int Line, string Problem, string Gold, string? Subject = null);

/// <summary>A worked example: problem and a solution ending "Final Answer: The final answer is $X$. I hope it is correct."</summary>
public sealed record MathExemplar(string Problem, string Target);

/// <param name="NumFewshot">Exemplars before each problem; 1 in the paper (METHOD §8; the harness default is 4).</param>
/// <param name="MaxNewTokens">Generation budget; lm-eval's HF default <c>max_gen_toks</c> is 256.</param>
public sealed record MathOptions(int NumFewshot = 1, int MaxNewTokens = 256);

/// <summary>
/// One scored MATH answer. <c>Extracted</c> comes from the final-answer sentence only, as the harness does;
/// <c>ExtractedBoxed</c> falls back to the output's last <c>\boxed{}</c> when that sentence is missing.
/// </summary>
public sealed record MathSample(int Index, string Prompt, string Output, string Gold, string Extracted, string ExtractedBoxed,
    bool Correct, bool CorrectBoxed) : IEvalSample;

/// <summary>
/// Minerva-style MATH (EleutherAI/lm-evaluation-harness:lm_eval/tasks/minerva_math, METHOD §8): prompt
/// <c>Problem:\n{problem}\n\nSolution:</c>, greedy, stop at <c>Problem:</c>; the answer is X in "Final Answer:
/// The final answer is X. I hope it is correct.", normalised with Minerva's rules and compared with the
/// normalised last <c>\boxed{}</c> of the reference solution.
/// </summary>
/// <remarks>
/// Metrics: <c>exact_match,none</c> is the harness's extraction with <see cref="MinervaMath.IsEquivalent"/> in
/// place of sympy; <c>exact_match,boxed-fallback</c> also accepts a bare <c>\boxed{}</c> answer. The harness's
/// <c>math_verify</c> metric (the math-verify package) is not reproduced. The Minerva exemplars are not shipped:
/// exemplars are the first K problems of a training jsonl the user gives, each solution given the
/// final-answer sentence built from its last <c>\boxed{}</c>.
/// </remarks>
public sealed class MathTask
{
    public const string Name = "minerva_math";

    /// <summary>minerva_math yaml <c>generation_kwargs.until</c>; the engine adds the model's EOS.</summary>
    public static IReadOnlyList<string> StopSequences { get; } = ["Problem:"];

    const string FinalAnswerMarker = "Final Answer: The final answer is";

    readonly IReadOnlyList<MathExemplar> _pool;

    public MathTask(MathOptions? options = null, IReadOnlyList<MathExemplar>? exemplarPool = null, string? fewshotSource = null)
    {
        Options = options ?? new MathOptions();
        if (Options.NumFewshot < 0) throw new RecurUserException($"math: num_fewshot must be ≥ 0 (got {Options.NumFewshot})");
        if (Options.MaxNewTokens < 1) throw new RecurUserException($"math: max new tokens must be ≥ 1 (got {Options.MaxNewTokens})");
        _pool = exemplarPool ?? [];
        if (_pool.Count < Options.NumFewshot)
            throw new RecurUserException(Options.NumFewshot > 0 && _pool.Count == 0
                ? $"math: num_fewshot {Options.NumFewshot} needs a training jsonl (problem, solution) to draw exemplars from, or num_fewshot 0"
                : $"math: num_fewshot {Options.NumFewshot} but only {_pool.Count} exemplars are available");
        FewshotSource = fewshotSource;
    }

    /// <summary>Builds the task, reading the first K (+1 spare) exemplars from <paramref name="fewshotPath"/> when K &gt; 0.</summary>
    public static MathTask Create(MathOptions options, string? fewshotPath)
    {
        if (options.NumFewshot == 0 || fewshotPath is null) return new MathTask(options, [], fewshotPath);
        return new MathTask(options, LoadExemplars(fewshotPath, options.NumFewshot + 1).Docs, fewshotPath);
    }

    public MathOptions Options { get; }
    public string? FewshotSource { get; }
    public IReadOnlyList<MathExemplar> ExemplarPool => _pool;

    /// <summary>
    /// Reads a MATH jsonl: <c>problem</c>, and <c>solution</c> (gold = its last <c>\boxed{}</c>, as the harness's
    /// <c>process_docs</c>) or, without a solution, <c>answer</c> (normalised).
    /// </summary>
    public static TaskData<MathDoc> Load(string path, TaskLoadOptions? options = null) =>
        Jsonl.Read(path, row => new MathDoc(row.Line, row.String("problem"), GoldOf(row), row.OptionalString("type") ?? row.OptionalString("subject")), options);

    internal static string GoldOf(JsonlRow row)
    {
        if (row.Has("solution"))
            return MinervaMath.GoldFromSolution(row.String("solution")) ?? throw row.Error("field 'solution' has no \\boxed{...} answer");
        if (row.Has("answer")) return MinervaMath.NormalizeFinalAnswer(row.StringOrNumber("answer"));
        throw row.Error("missing field 'solution' (or 'answer')");
    }

    /// <summary>Reads the first <paramref name="count"/> problems of a training jsonl (<c>problem</c>, <c>solution</c>) as exemplars.</summary>
    public static TaskData<MathExemplar> LoadExemplars(string path, int count) =>
        Jsonl.Read(path, row =>
        {
            var solution = row.String("solution");
            return ToExemplar(row.String("problem"), solution) ?? throw row.Error("field 'solution' has no \\boxed{...} answer to build an exemplar from");
        }, new TaskLoadOptions(Limit: count));

    /// <summary>
    /// The exemplar target: the solution, followed (unless it already has one) by the Minerva final-answer
    /// sentence with the unnormalised content of its last <c>\boxed{}</c>; null when there is no box.
    /// </summary>
    public static MathExemplar? ToExemplar(string problem, string solution)
    {
        if (solution.Contains(FinalAnswerMarker, StringComparison.Ordinal)) return new MathExemplar(problem, solution);
        if (MinervaMath.RemoveBoxed(MinervaMath.LastBoxedOnlyString(solution)) is not string boxed) return null;
        return new MathExemplar(problem, $"{solution.TrimEnd()}\n{FinalAnswerMarker} ${boxed}$. I hope it is correct.");
    }

    /// <summary>utils.py <c>doc_to_text</c>.</summary>
    public static string DocToText(string problem) => "Problem:\n" + problem + "\n\nSolution:";

    /// <summary>Exemplars as <c>DocToText(p) + " " + target + "\n\n"</c>, then <c>DocToText(problem)</c>.</summary>
    public string BuildPrompt(string problem)
    {
        var sb = new StringBuilder();
        int used = 0;
        foreach (var ex in _pool)
        {
            if (used == Options.NumFewshot) break;
            if (ex.Problem == problem) continue;
            sb.Append(DocToText(ex.Problem)).Append(' ').Append(ex.Target).Append("\n\n");
            used++;
        }
        if (used < Options.NumFewshot)
            throw new RecurUserException($"math: num_fewshot {Options.NumFewshot} but only {used} exemplars differ from the problem; give a larger exemplar file");
        return sb.Append(DocToText(problem)).ToString();
    }

    /// <summary>Scores one generation against a normalised gold answer.</summary>
    public static MathSample Score(int index, string prompt, string output, string gold)
    {
        var cut = LmEval.CutAtStopSequences(output, StopSequences);
        var raw = MinervaMath.GetUnnormalizedAnswer(cut);
        var extracted = MinervaMath.NormalizeFinalAnswer(raw);
        var boxed = raw == MinervaMath.InvalidAnswer
            ? MinervaMath.RemoveBoxed(MinervaMath.LastBoxedOnlyString(cut)) is string b ? MinervaMath.NormalizeFinalAnswer(b) : MinervaMath.InvalidAnswer
            : extracted;
        return new MathSample(index, prompt, cut, gold, extracted, boxed, MinervaMath.IsEquivalent(extracted, gold), MinervaMath.IsEquivalent(boxed, gold));
    }

    public IReadOnlyDictionary<string, string> Settings => new Dictionary<string, string>
    {
        ["num_fewshot"] = Options.NumFewshot.ToString(CultureInfo.InvariantCulture),
        ["fewshot_source"] = Options.NumFewshot == 0 ? "none" : FewshotSource ?? "given",
        ["max_new_tokens"] = Options.MaxNewTokens.ToString(CultureInfo.InvariantCulture),
        ["equivalence"] = "normalised string or equal number (no sympy)",
    };

    public static EvalResult Aggregate(IReadOnlyList<MathSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings) =>
        new(Name, samples.Count, new EvalResult.Builder()
            .Mean("exact_match", "none", samples.Select(s => s.Correct ? 1.0 : 0.0).ToList())
            .Mean("exact_match", "boxed-fallback", samples.Select(s => s.CorrectBoxed ? 1.0 : 0.0).ToList())
            .Build(), settings, warnings);

    /// <summary>Generates a solution for every problem and scores it.</summary>
    public EvalRun<MathSample> Evaluate(IGenerator generator, TaskData<MathDoc> data, int batchSize = 32, Action<int, int>? progress = null)
    {
        var prompts = data.Docs.Select(d => BuildPrompt(d.Problem)).ToList();
        var outputs = TaskUtil.Batched(prompts, batchSize, b => generator.Generate(b, StopSequences, Options.MaxNewTokens), progress);
        var samples = data.Docs.Select((d, i) => Score(i, prompts[i], outputs[i], d.Gold)).ToList();
        return new EvalRun<MathSample>(Aggregate(samples, Settings, data.Warnings), samples);
    }
}
