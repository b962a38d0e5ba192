using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>The lm-eval GSM8K tasks Recur reproduces (METHOD §8).</summary>
public enum Gsm8kVariant
{
    /// <summary>lm-eval's <c>gsm8k</c> (gsm8k.yaml): <c>Question: {q}\nAnswer:</c>, the whole reference answer as target, strict <c>#### N</c>.</summary>
    Gsm8k,
    /// <summary>lm-eval's <c>gsm8k_cot</c> (gsm8k-cot.yaml): <c>Q: {q}\nA:</c>, strict "The answer is N.".</summary>
    Cot,
    /// <summary>The paper's <c>gsm8k_cot_sean</c>: <c>gsm8k_cot</c> with "Let's think step by step." after every <c>A:</c>.</summary>
    CotSean,
}

/// <summary>One GSM8K problem: <c>question</c> and <c>answer</c> (reasoning ending <c>#### N</c>).</summary>
public sealed record Gsm8kDoc(int Line, string Question, string Answer)
{
    /// <summary>The text after the last <c>####</c>, stripped (gsm8k-cot.yaml's <c>doc_to_target</c>).</summary>
    public string Gold => Gsm8kTask.GoldAnswer(Answer);
}

/// <summary>One scored GSM8K answer. <c>[invalid]</c> marks an extraction that found nothing.</summary>
public sealed record Gsm8kSample(int Index, string Prompt, string Output, string Gold,
    string StrictExtracted, string FlexibleExtracted, bool StrictCorrect, bool FlexibleCorrect) : IEvalSample;

/// <summary>
/// GSM8K as EleutherAI/lm-evaluation-harness:lm_eval/tasks/gsm8k/gsm8k.yaml and gsm8k-cot.yaml score it
/// (METHOD §8): greedy generation stopped at the prompt's question marker, <c>&lt;/s&gt;</c> or
/// <c>&lt;|im_end|&gt;</c>; two answer filters (strict and flexible "last number"); exact_match ignoring case,
/// commas, dollar signs, everything up to <c>#### </c> and a trailing period.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item><c>gsm8k</c>: prompt <c>Question: {q}\nAnswer:</c>, stop at <c>Question:</c>; strict filter <c>#### (\-?[0-9\.\,]+)</c>;
/// target (and exemplar text) is the whole reference answer, calculator annotations included.</item>
/// <item><c>gsm8k_cot</c> / <c>gsm8k_cot_sean</c>: prompt <c>Q: {q}\nA:</c> (+ " Let's think step by step."), stop at
/// <c>Q:</c>; strict filter "The answer is N" plus one character; target is the text after <c>####</c>. The
/// harness's eight hand-written exemplars are not shipped: exemplars are the first K problems of a training
/// file, each answer turned into "reasoning without <c>&lt;&lt;…&gt;&gt;</c> annotations. The answer is N.".</item>
/// </list>
/// </remarks>
public sealed class Gsm8kTask : GenerationTask<Gsm8kDoc, Gsm8kSample>
{
    public const string SeanSuffix = " Let's think step by step.";

    /// <summary>gsm8k-cot.yaml <c>generation_kwargs.until</c>.</summary>
    public static IReadOnlyList<string> CotStopSequences { get; } = ["Q:", "</s>", "<|im_end|>"];

    /// <summary>gsm8k.yaml <c>generation_kwargs.until</c>.</summary>
    public static IReadOnlyList<string> PlainStopSequences { get; } = ["Question:", "</s>", "<|im_end|>"];

    /// <summary>gsm8k-cot.yaml filter <c>strict-match</c>: first "The answer is N" followed by any one character.</summary>
    public static RegexFilter CotStrict { get; } = new(@"The answer is (\-?[0-9\.\,]+).", groupSelect: 0);

    /// <summary>gsm8k.yaml filter <c>strict-match</c>: the first <c>#### N</c>.</summary>
    public static RegexFilter PlainStrict { get; } = new(@"#### (\-?[0-9\.\,]+)", groupSelect: 0);

    /// <summary>Both yamls' filter <c>flexible-extract</c>: the last number-like run.</summary>
    public static RegexFilter Flexible { get; } = new(@"(-?[$0-9.,]{2,})|(-?[0-9]+)", groupSelect: -1);

    /// <summary>Both yamls' <c>metric_list</c>: exact_match, ignore_case, regexes_to_ignore.</summary>
    public static ExactMatch Match { get; } = new([",", @"\$", "(?s).*#### ", @"\.$"], ignoreCase: true);

    static readonly Regex Calculator = new("<<.*?>>", RegexOptions.CultureInvariant);

    public Gsm8kTask(Gsm8kVariant variant, GenerationTaskOptions? options = null, IReadOnlyList<Exemplar>? exemplarPool = null, string? fewshotSource = null)
        : base(NameOf(variant), options, exemplarPool, fewshotSource)
    {
        Variant = variant;
        // gsm8k.yaml has no fewshot_config.sampler, so lm-eval uses its default seeded sampler with
        // --fewshot_random_seed's default 1234 (lm_eval/evaluator.py, set_fewshot_seed); the CoT yamls use first_n.
        if (variant == Gsm8kVariant.Gsm8k) FewshotSeed = LmEvalFewshotSeed;
    }

    /// <summary>lm-eval's default <c>fewshot_random_seed</c>.</summary>
    public const int LmEvalFewshotSeed = 1234;

    /// <summary>
    /// Builds the task. <c>gsm8k</c> reads the whole training file (the pool lm-eval samples from, in file order);
    /// the CoT variants read the first K (+1 spare) problems. Nothing is read when K = 0.
    /// </summary>
    public static Gsm8kTask Create(Gsm8kVariant variant, GenerationTaskOptions options, string? fewshotPath)
    {
        if (options.NumFewshot == 0 || fewshotPath is null) return new Gsm8kTask(variant, options, [], fewshotPath);
        int? count = variant == Gsm8kVariant.Gsm8k ? null : options.NumFewshot + 1;
        return new Gsm8kTask(variant, options, LoadExemplars(fewshotPath, count, variant), fewshotPath);
    }

    public Gsm8kVariant Variant { get; }

    /// <summary>The lm-eval task name of a variant.</summary>
    public static string NameOf(Gsm8kVariant variant) => variant switch
    {
        Gsm8kVariant.Gsm8k => "gsm8k",
        Gsm8kVariant.Cot => "gsm8k_cot",
        Gsm8kVariant.CotSean => "gsm8k_cot_sean",
        _ => throw new ArgumentOutOfRangeException(nameof(variant)),
    };

    bool IsCot => Variant != Gsm8kVariant.Gsm8k;

    public override IReadOnlyList<string> StopSequences => IsCot ? CotStopSequences : PlainStopSequences;

    public RegexFilter Strict => IsCot ? CotStrict : PlainStrict;

    protected override string ExemplarHint => "e.g. gsm8k/train.jsonl";

    public override IReadOnlyDictionary<string, string> Settings
    {
        get
        {
            var s = new Dictionary<string, string>(base.Settings);
            if (IsCot) s["exemplars"] = "first K training problems as 'reasoning. The answer is N.' (not the yaml's 8 hand-written ones)";
            else if (Options.NumFewshot > 0) s["exemplars"] = $"lm-eval's seeded draw: random.Random({FewshotSeed}).sample(train, K) per document in order";
            return s;
        }
    }

    /// <summary>Reads a GSM8K jsonl (<c>question</c>, <c>answer</c>).</summary>
    public override TaskData<Gsm8kDoc> Load(string path, TaskLoadOptions? options = null) => LoadDocs(path, options);

    /// <summary>Reads a GSM8K jsonl (<c>question</c>, <c>answer</c>).</summary>
    public static TaskData<Gsm8kDoc> LoadDocs(string path, TaskLoadOptions? options = null)
    {
        var data = Jsonl.Read(path, row => new Gsm8kDoc(row.Line, row.String("question"), row.StringOrNumber("answer")), options);
        int noHash = data.Docs.Count(d => !d.Answer.Contains("####", StringComparison.Ordinal));
        if (noHash == 0) return data;
        var w = $"{path}: {noHash} answer{(noHash == 1 ? "" : "s")} without '#### N'; the whole answer is the gold, as lm-eval does";
        return data with { Warnings = [.. data.Warnings, w] };
    }

    /// <summary>Reads the first <paramref name="count"/> problems of a training jsonl (all when null) as exemplars in the variant's target form.</summary>
    public static IReadOnlyList<Exemplar> LoadExemplars(string path, int? count, Gsm8kVariant variant) =>
        LoadExemplars(path, count, row =>
        {
            var answer = row.String("answer");
            if (variant == Gsm8kVariant.Gsm8k) return new Exemplar(row.String("question"), answer);
            if (!answer.Contains("####", StringComparison.Ordinal)) throw row.Error("field 'answer' has no '#### N' final answer to build an exemplar from");
            return ToCotExemplar(row.String("question"), answer);
        });

    /// <summary>Turns a GSM8K solution into an lm-eval-style CoT target: "reasoning… The answer is N."</summary>
    public static Exemplar ToCotExemplar(string question, string answer)
    {
        int hash = answer.IndexOf("####", StringComparison.Ordinal);
        if (hash < 0) throw new ArgumentException("answer has no '#### N'", nameof(answer));
        var reasoning = Calculator.Replace(answer[..hash], "")
            .Split('\n')
            .Select(LmEval.PyStrip)
            .Where(l => l.Length > 0);
        var text = string.Join(" ", reasoning);
        var final = GoldAnswer(answer);
        return new Exemplar(question, text.Length == 0 ? $"The answer is {final}." : $"{text} The answer is {final}.");
    }

    /// <summary><c>answer.split('####')[-1].strip()</c> (gsm8k-cot.yaml <c>doc_to_target</c>).</summary>
    public static string GoldAnswer(string answer)
    {
        int i = answer.LastIndexOf("####", StringComparison.Ordinal);
        return LmEval.PyStrip(i < 0 ? answer : answer[(i + 4)..]);
    }

    /// <summary>
    /// The exact_match reference of a reference answer: gsm8k.yaml compares with the whole answer (its ignore
    /// regexes cut everything up to <c>#### </c>), gsm8k-cot.yaml with the text after the last <c>####</c>.
    /// </summary>
    public string TargetOf(string answer) => IsCot ? GoldAnswer(answer) : answer;

    /// <summary>The question turn: <c>doc_to_text</c> of the variant.</summary>
    public override string DocToText(string question) => Variant switch
    {
        Gsm8kVariant.Gsm8k => "Question: " + question + "\nAnswer:",
        Gsm8kVariant.Cot => "Q: " + question + "\nA:",
        _ => "Q: " + question + "\nA:" + SeanSuffix,
    };

    protected override string QuestionOf(Gsm8kDoc doc) => doc.Question;

    protected override string GoldOf(Gsm8kDoc doc) => TargetOf(doc.Answer);

    /// <summary>The reference of a document row: <c>answer</c> (gsm8k-cot.yaml falls back to <c>target</c>).</summary>
    public override string GoldOf(JsonlRow doc) =>
        TargetOf(doc.Has("answer") || !IsCot || !doc.Has("target") ? doc.StringOrNumber("answer") : doc.StringOrNumber("target"));

    /// <summary>Scores one generation against a reference from <see cref="TargetOf"/>.</summary>
    public override Gsm8kSample Score(int index, string prompt, string output, string gold)
    {
        var cut = LmEval.CutAtStopSequences(output, StopSequences);
        var strict = Strict.Apply(cut);
        var flexible = Flexible.Apply(cut);
        return new Gsm8kSample(index, prompt, cut, gold, strict, flexible, Match.Matches(strict, gold), Match.Matches(flexible, gold));
    }

    public override IReadOnlyDictionary<string, bool> Correctness(Gsm8kSample s) =>
        new Dictionary<string, bool> { ["strict-match"] = s.StrictCorrect, ["flexible-extract"] = s.FlexibleCorrect };

    public override EvalResult Aggregate(IReadOnlyList<Gsm8kSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings) =>
        new(Name, samples.Count, new EvalResult.Builder()
            .Mean("exact_match", "strict-match", samples.Select(s => s.StrictCorrect ? 1.0 : 0.0).ToList())
            .Mean("exact_match", "flexible-extract", samples.Select(s => s.FlexibleCorrect ? 1.0 : 0.0).ToList())
            .Build(), settings, warnings);
}
