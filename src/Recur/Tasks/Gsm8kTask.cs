using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>Which GSM8K chain-of-thought prompt to use (METHOD §8).</summary>
public enum Gsm8kPromptStyle
{
    /// <summary>lm-eval's <c>gsm8k_cot</c>: <c>Q: {question}\nA:</c>.</summary>
    LmEvalCot,
    /// <summary>The paper's <c>gsm8k_cot_sean</c>: <c>Q: {question}\nA: Let's think step by step.</c>, exemplars included.</summary>
    Sean,
}

/// <summary>One GSM8K problem: <c>question</c> and <c>answer</c> (reasoning ending <c>#### N</c>).</summary>
public sealed record Gsm8kDoc(int Line, string Question, string Answer)
{
    /// <summary>lm-eval's target: the text after the last <c>####</c>, stripped.</summary>
    public string Gold => Gsm8kTask.GoldAnswer(Answer);
}

/// <summary>A worked example placed before the question: its question and the target <c>… The answer is N.</c></summary>
public sealed record Gsm8kExemplar(string Question, string Target);

/// <param name="Style">Prompt wording; the paper's variant by default.</param>
/// <param name="NumFewshot">Exemplars before each question; 1 as in the paper (eval.sh passes --num_fewshot=1, METHOD §8).</param>
/// <param name="MaxNewTokens">Generation budget; lm-eval's HF default <c>max_gen_toks</c> is 256.</param>
public sealed record Gsm8kOptions(Gsm8kPromptStyle Style = Gsm8kPromptStyle.Sean, int NumFewshot = 1, int MaxNewTokens = 256);

/// <summary>One scored GSM8K answer. <c>[invalid]</c> marks an extraction that found nothing.</summary>
public sealed record Gsm8kSample(int Index, string Prompt, string Output, string Gold,
    string StrictExtracted, string FlexibleExtracted, bool StrictCorrect, bool FlexibleCorrect) : IEvalSample;

/// <summary>
/// GSM8K chain-of-thought, scored like EleutherAI/lm-evaluation-harness:lm_eval/tasks/gsm8k/gsm8k-cot.yaml
/// (METHOD §8): greedy generation stopped at <c>Q:</c>, <c>&lt;/s&gt;</c>, <c>&lt;|im_end|&gt;</c>; two answer
/// filters (strict "The answer is N." and flexible "last number"); exact_match ignoring case, commas, dollar
/// signs, everything up to <c>#### </c> and a trailing period. The paper's <c>gsm8k_cot_sean</c> appends
/// "Let's think step by step." to every <c>A:</c>.
/// </summary>
/// <remarks>
/// The harness's eight hand-written exemplars are not shipped. Exemplars are the first K problems of a
/// training file (lm-eval's <c>first_n</c> sampler), each answer turned into the same shape: calculator
/// annotations <c>&lt;&lt;…&gt;&gt;</c> removed, reasoning lines joined by spaces, then "The answer is N.".
/// As in lm-eval, an exemplar identical to the question being asked is skipped.
/// </remarks>
public sealed class Gsm8kTask
{
    public const string SeanSuffix = " Let's think step by step.";

    /// <summary>gsm8k-cot.yaml <c>generation_kwargs.until</c>; the engine adds the model's EOS.</summary>
    public static IReadOnlyList<string> StopSequences { get; } = ["Q:", "</s>", "<|im_end|>"];

    /// <summary>gsm8k-cot.yaml filter <c>strict-match</c>: first "The answer is N" followed by any one character.</summary>
    public static RegexFilter Strict { get; } = new(@"The answer is (\-?[0-9\.\,]+).", groupSelect: 0);

    /// <summary>gsm8k-cot.yaml filter <c>flexible-extract</c>: the last number-like run.</summary>
    public static RegexFilter Flexible { get; } = new(@"(-?[$0-9.,]{2,})|(-?[0-9]+)", groupSelect: -1);

    /// <summary>gsm8k-cot.yaml <c>metric_list</c>: exact_match, ignore_case, regexes_to_ignore.</summary>
    public static ExactMatch Match { get; } = new([",", @"\$", "(?s).*#### ", @"\.$"], ignoreCase: true);

    static readonly Regex Calculator = new("<<.*?>>", RegexOptions.CultureInvariant);

    readonly IReadOnlyList<Gsm8kExemplar> _pool;

    /// <param name="exemplarPool">Exemplars in order; at least <see cref="Gsm8kOptions.NumFewshot"/> (one more lets
    /// the task skip an exemplar equal to the question).</param>
    /// <param name="fewshotSource">Where the exemplars came from, for the result's settings.</param>
    public Gsm8kTask(Gsm8kOptions? options = null, IReadOnlyList<Gsm8kExemplar>? exemplarPool = null, string? fewshotSource = null)
    {
        Options = options ?? new Gsm8kOptions();
        if (Options.NumFewshot < 0) throw new RecurUserException($"gsm8k: num_fewshot must be ≥ 0 (got {Options.NumFewshot})");
        if (Options.MaxNewTokens < 1) throw new RecurUserException($"gsm8k: max new tokens must be ≥ 1 (got {Options.MaxNewTokens})");
        _pool = exemplarPool ?? [];
        if (_pool.Count < Options.NumFewshot)
            throw new RecurUserException(Options.NumFewshot > 0 && _pool.Count == 0
                ? $"gsm8k: num_fewshot {Options.NumFewshot} needs a training jsonl to draw exemplars from (e.g. gsm8k/train.jsonl), or num_fewshot 0"
                : $"gsm8k: num_fewshot {Options.NumFewshot} but only {_pool.Count} exemplars are available");
        FewshotSource = fewshotSource;
    }

    /// <summary>Builds the task, reading the first K (+1 spare) exemplars from <paramref name="fewshotPath"/> when K &gt; 0.</summary>
    public static Gsm8kTask Create(Gsm8kOptions options, string? fewshotPath)
    {
        if (options.NumFewshot == 0 || fewshotPath is null) return new Gsm8kTask(options, [], fewshotPath);
        var pool = LoadExemplars(fewshotPath, options.NumFewshot + 1);
        return new Gsm8kTask(options, pool.Docs, fewshotPath);
    }

    public Gsm8kOptions Options { get; }
    public string? FewshotSource { get; }
    public IReadOnlyList<Gsm8kExemplar> ExemplarPool => _pool;
    public string Name => Options.Style == Gsm8kPromptStyle.Sean ? "gsm8k_cot_sean" : "gsm8k_cot";

    /// <summary>Reads a GSM8K jsonl (<c>question</c>, <c>answer</c>).</summary>
    public static TaskData<Gsm8kDoc> Load(string path, TaskLoadOptions? options = null)
    {
        var data = Jsonl.Read(path, row => new Gsm8kDoc(row.Line, row.String("question"), row.StringOrNumber("answer")), options);
        int noHash = data.Docs.Count(d => !d.Answer.Contains("####", StringComparison.Ordinal));
        if (noHash == 0) return data;
        var w = $"{path}: {noHash} answer{(noHash == 1 ? "" : "s")} without '#### N'; the whole answer is the gold, as lm-eval does";
        return data with { Warnings = [.. data.Warnings, w] };
    }

    /// <summary>Reads the first <paramref name="count"/> problems of a training jsonl as exemplars (fewer if the file is shorter).</summary>
    public static TaskData<Gsm8kExemplar> LoadExemplars(string path, int count) =>
        Jsonl.Read(path, row =>
        {
            var answer = row.String("answer");
            if (!answer.Contains("####", StringComparison.Ordinal)) throw row.Error("field 'answer' has no '#### N' final answer to build an exemplar from");
            return ToExemplar(row.String("question"), answer);
        }, new TaskLoadOptions(Limit: count));

    /// <summary>Turns a GSM8K solution into an lm-eval-style CoT target: "reasoning… The answer is N."</summary>
    public static Gsm8kExemplar ToExemplar(string question, string answer)
    {
        int hash = answer.IndexOf("####", StringComparison.Ordinal);
        if (hash < 0) throw new ArgumentException("answer has no '#### N'", nameof(answer));
        var reasoning = Calculator.Replace(answer[..hash], "")
            .Split('\n')
            .Select(LmEval.PyStrip)
            .Where(l => l.Length > 0);
        var text = string.Join(" ", reasoning);
        var final = GoldAnswer(answer);
        return new Gsm8kExemplar(question, text.Length == 0 ? $"The answer is {final}." : $"{text} The answer is {final}.");
    }

    /// <summary><c>answer.split('####')[-1].strip()</c> (gsm8k-cot.yaml <c>doc_to_target</c>).</summary>
    public static string GoldAnswer(string answer)
    {
        int i = answer.LastIndexOf("####", StringComparison.Ordinal);
        return LmEval.PyStrip(i < 0 ? answer : answer[(i + 4)..]);
    }

    /// <summary>The question turn: <c>Q: {question}\nA:</c>, plus the suffix in the paper's variant.</summary>
    public string DocToText(string question) =>
        "Q: " + question + "\nA:" + (Options.Style == Gsm8kPromptStyle.Sean ? SeanSuffix : "");

    /// <summary>
    /// The full prompt: for each exemplar <c>DocToText(q) + " " + target + "\n\n"</c> (lm-eval's
    /// <c>target_delimiter</c> and <c>fewshot_delimiter</c>), then <c>DocToText(question)</c>.
    /// </summary>
    public string BuildPrompt(string question)
    {
        var sb = new StringBuilder();
        int used = 0;
        foreach (var ex in _pool)
        {
            if (used == Options.NumFewshot) break;
            if (ex.Question == question) continue;
            sb.Append(DocToText(ex.Question)).Append(' ').Append(ex.Target).Append("\n\n");
            used++;
        }
        if (used < Options.NumFewshot)
            throw new RecurUserException($"gsm8k: num_fewshot {Options.NumFewshot} but only {used} exemplars differ from the question; give a larger exemplar file");
        return sb.Append(DocToText(question)).ToString();
    }

    /// <summary>Scores one generation against the gold answer (already the text after <c>####</c>, or a full answer).</summary>
    public static Gsm8kSample Score(int index, string prompt, string output, string gold)
    {
        var cut = LmEval.CutAtStopSequences(output, StopSequences);
        var strict = Strict.Apply(cut);
        var flexible = Flexible.Apply(cut);
        return new Gsm8kSample(index, prompt, cut, gold, strict, flexible, Match.Matches(strict, gold), Match.Matches(flexible, gold));
    }

    public IReadOnlyDictionary<string, string> Settings => new Dictionary<string, string>
    {
        ["num_fewshot"] = Options.NumFewshot.ToString(CultureInfo.InvariantCulture),
        ["prompt_style"] = Options.Style == Gsm8kPromptStyle.Sean ? "sean" : "lm-eval-cot",
        ["fewshot_source"] = Options.NumFewshot == 0 ? "none" : FewshotSource ?? "given",
        ["max_new_tokens"] = Options.MaxNewTokens.ToString(CultureInfo.InvariantCulture),
    };

    public static EvalResult Aggregate(string name, IReadOnlyList<Gsm8kSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings) =>
        new(name, samples.Count, new EvalResult.Builder()
            .Mean("exact_match", "strict-match", samples.Select(s => s.StrictCorrect ? 1.0 : 0.0).ToList())
            .Mean("exact_match", "flexible-extract", samples.Select(s => s.FlexibleCorrect ? 1.0 : 0.0).ToList())
            .Build(), settings, warnings);

    /// <summary>Generates an answer for every problem and scores it.</summary>
    public EvalRun<Gsm8kSample> Evaluate(IGenerator generator, TaskData<Gsm8kDoc> data, int batchSize = 32, Action<int, int>? progress = null)
    {
        var prompts = data.Docs.Select(d => BuildPrompt(d.Question)).ToList();
        var outputs = TaskUtil.Batched(prompts, batchSize, b => generator.Generate(b, StopSequences, Options.MaxNewTokens), progress);
        var samples = data.Docs.Select((d, i) => Score(i, prompts[i], outputs[i], d.Gold)).ToList();
        return new EvalRun<Gsm8kSample>(Aggregate(Name, samples, Settings, data.Warnings), samples);
    }
}
