using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>Native data layouts the multiple-choice reader understands.</summary>
public enum ChoiceFormat
{
    /// <summary><c>context</c>, <c>choices</c> (list), <c>gold</c> (index).</summary>
    Generic,
    /// <summary>HellaSwag: <c>activity_label</c>, <c>ctx_a</c>, <c>ctx_b</c>, <c>endings</c>, <c>label</c>.</summary>
    HellaSwag,
    /// <summary>ARC: <c>question</c>, <c>choices.text</c>, <c>choices.label</c>, <c>answerKey</c> (also AI2's <c>question.stem</c>/<c>question.choices</c>).</summary>
    Arc,
    /// <summary>PIQA: <c>goal</c>, <c>sol1</c>, <c>sol2</c>, <c>label</c>.</summary>
    Piqa,
    /// <summary>Winogrande: <c>sentence</c> with one <c>_</c>, <c>option1</c>, <c>option2</c>, <c>answer</c> ("1"/"2").</summary>
    Winogrande,
}

/// <summary>
/// One multiple-choice item in lm-eval's terms: <c>doc_to_text</c> (<see cref="Context"/>),
/// <c>doc_to_choice</c> (<see cref="Choices"/>) and the gold index. Normally each request is
/// (Context, delimiter + choice). With a <see cref="SharedContinuation"/> (Winogrande's partial evaluation) the
/// choices are the contexts and every request scores (choice, delimiter + SharedContinuation); Context then
/// only keeps the original sentence for the sample log.
/// </summary>
public sealed record ChoiceDoc(int Line, string Context, IReadOnlyList<string> Choices, int Gold, string? SharedContinuation = null);

/// <summary>One scored item: the log-likelihood of every choice and the two predictions.</summary>
public sealed record ChoiceSample(int Index, string Context, IReadOnlyList<string> Choices, int Gold,
    IReadOnlyList<double> LogLikelihoods, IReadOnlyList<bool> IsGreedy, int Pred, int PredNorm, bool Acc, bool AccNorm) : IEvalSample;

/// <summary>
/// Zero-shot multiple choice scored by log-likelihood, as EleutherAI/lm-evaluation-harness:lm_eval/api/task.py
/// (<c>output_type: multiple_choice</c>) does (METHOD §8): <c>acc</c> is the argmax of the summed continuation
/// log-likelihood, <c>acc_norm</c> the argmax after dividing each by the length in characters of its choice
/// text (the choice as <c>doc_to_choice</c> gives it, without the leading delimiter). Ties go to the first
/// choice, as <c>numpy.argmax</c>. Prompts follow the harness yamls for hellaswag, arc_easy/arc_challenge,
/// piqa and winogrande.
/// </summary>
public sealed class MultipleChoiceTask : LogLikelihoodTask<ChoiceDoc, ChoiceSample>
{
    /// <param name="targetDelimiter">lm-eval's <c>target_delimiter</c>, put between context and choice.</param>
    public MultipleChoiceTask(string name, ChoiceFormat format, string targetDelimiter = " ")
    {
        Name = name;
        Format = format;
        TargetDelimiter = targetDelimiter;
    }

    /// <summary>Task names accepted by <see cref="ForName"/>.</summary>
    public static IReadOnlyList<string> KnownNames { get; } = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "multiple_choice"];

    /// <summary>The task for an lm-eval task name (<c>multiple_choice</c> = the generic jsonl layout).</summary>
    public static MultipleChoiceTask ForName(string name) => name switch
    {
        "hellaswag" => new(name, ChoiceFormat.HellaSwag),
        "arc_easy" or "arc_challenge" => new(name, ChoiceFormat.Arc),
        "piqa" => new(name, ChoiceFormat.Piqa),
        "winogrande" => new(name, ChoiceFormat.Winogrande),
        "multiple_choice" => new(name, ChoiceFormat.Generic),
        _ => throw new RecurUserException($"unknown multiple-choice task '{name}'; expected one of {string.Join(", ", KnownNames)}"),
    };

    public string Name { get; }
    public ChoiceFormat Format { get; }
    public string TargetDelimiter { get; }

    /// <summary>winogrande.yaml lists only <c>acc</c>; the others list <c>acc</c> and <c>acc_norm</c>.</summary>
    public bool ReportsAccNorm => Format != ChoiceFormat.Winogrande;

    public TaskData<ChoiceDoc> Load(string path, TaskLoadOptions? options = null) => Jsonl.Read(path, Reader(Format), options);

    public static Func<JsonlRow, ChoiceDoc> Reader(ChoiceFormat format) => format switch
    {
        ChoiceFormat.Generic => ReadGeneric,
        ChoiceFormat.HellaSwag => ReadHellaSwag,
        ChoiceFormat.Arc => ReadArc,
        ChoiceFormat.Piqa => ReadPiqa,
        ChoiceFormat.Winogrande => ReadWinogrande,
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    static ChoiceDoc Checked(JsonlRow row, string context, IReadOnlyList<string> choices, int gold, string goldField, string? shared = null)
    {
        if (choices.Count < 2) throw row.Error($"needs at least two choices (got {choices.Count})");
        if (gold < 0 || gold >= choices.Count) throw row.Error($"field '{goldField}' gives answer {gold}, outside the {choices.Count} choices");
        return new ChoiceDoc(row.Line, context, choices, gold, shared);
    }

    public static ChoiceDoc ReadGeneric(JsonlRow row) =>
        Checked(row, row.String("context"), row.StringList("choices"), row.Int("gold"), "gold");

    /// <summary>EleutherAI/lm-evaluation-harness:lm_eval/tasks/hellaswag/utils.py <c>process_docs</c>.</summary>
    public static ChoiceDoc ReadHellaSwag(JsonlRow row)
    {
        var ctx = row.String("ctx_a") + " " + PyCapitalize(row.String("ctx_b"));
        var query = HellaSwagPreprocess(row.String("activity_label") + ": " + ctx);
        var endings = row.StringList("endings").Select(HellaSwagPreprocess).ToList();
        if (row.Object["label"] is JsonValue v && v.TryGetValue(out string? s) && s.Trim().Length == 0)
            throw row.Error("field 'label' is empty (HellaSwag's test split has no labels; use the validation split)");
        return Checked(row, query, endings, row.Int("label"), "label");
    }

    static readonly Regex Bracketed = new(@"\[.*?\]", RegexOptions.CultureInvariant);

    /// <summary>HellaSwag's <c>preprocess</c>: strip, " [title]" → ". ", drop [bracketed] WikiHow artefacts, one pass of "  " → " ".</summary>
    public static string HellaSwagPreprocess(string text)
    {
        text = LmEval.PyStrip(text).Replace(" [title]", ". ", StringComparison.Ordinal);
        text = Bracketed.Replace(text, "");
        return text.Replace("  ", " ", StringComparison.Ordinal);
    }

    /// <summary>Python's <c>str.capitalize()</c>: first character upper case, the rest lower case.</summary>
    public static string PyCapitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>arc_easy.yaml: <c>Question: {question}\nAnswer:</c>, choices <c>choices.text</c>, gold <c>choices.label.index(answerKey)</c>.</summary>
    public static ChoiceDoc ReadArc(JsonlRow row)
    {
        string question;
        IReadOnlyList<string> texts, labels;
        if (row.Node("question") is JsonObject q)
        {
            // AI2's original layout: {"question": {"stem": ..., "choices": [{"text", "label"}, ...]}, "answerKey": ...}
            question = q["stem"] is JsonValue sv && sv.TryGetValue(out string? stem) ? stem : throw row.Error("missing field 'question.stem'");
            if (q["choices"] is not JsonArray arr) throw row.Error("missing field 'question.choices'");
            texts = arr.Select(c => c?["text"] is JsonValue t && t.TryGetValue(out string? x) ? x : throw row.Error("each of 'question.choices' needs a string 'text'")).ToList();
            labels = arr.Select(c => c?["label"] is JsonValue t && t.TryGetValue(out string? x) ? x : throw row.Error("each of 'question.choices' needs a string 'label'")).ToList();
        }
        else
        {
            question = row.String("question");
            if (row.Node("choices") is not JsonObject ch) throw row.Error("field 'choices' must be an object with 'text' and 'label' lists");
            texts = row.StringList("choices.text", ch["text"] ?? throw row.Error("missing field 'choices.text'"));
            labels = row.StringList("choices.label", ch["label"] ?? throw row.Error("missing field 'choices.label'"));
        }
        if (texts.Count != labels.Count) throw row.Error($"'choices' has {texts.Count} texts but {labels.Count} labels");
        var key = row.StringOrNumber("answerKey");
        int gold = labels.ToList().IndexOf(key);
        if (gold < 0) throw row.Error($"answerKey '{key}' is not one of the choice labels ({string.Join(", ", labels)})");
        return Checked(row, "Question: " + question + "\nAnswer:", texts, gold, "answerKey");
    }

    /// <summary>piqa.yaml: <c>Question: {goal}\nAnswer:</c>, choices <c>[sol1, sol2]</c>, gold <c>label</c>.</summary>
    public static ChoiceDoc ReadPiqa(JsonlRow row)
    {
        if (!row.Has("label")) throw row.Error("missing field 'label' (PIQA's labels ship in a separate .lst file; merge them into the jsonl)");
        return Checked(row, "Question: " + row.String("goal") + "\nAnswer:", [row.String("sol1"), row.String("sol2")], row.Int("label"), "label");
    }

    /// <summary>
    /// EleutherAI/lm-evaluation-harness:lm_eval/tasks/winogrande/preprocess_winogrande.py: with i the index of
    /// the first <c>_</c>, choice k is <c>sentence[:i] + option_k</c> and the shared continuation is
    /// <c>sentence[i+1:].strip()</c>; <c>answer</c> "1"/"2" gives gold 0/1.
    /// </summary>
    public static ChoiceDoc ReadWinogrande(JsonlRow row)
    {
        var sentence = row.String("sentence");
        int i = sentence.IndexOf('_');
        if (i < 0) throw row.Error("field 'sentence' has no '_' blank to fill");
        var answer = row.StringOrNumber("answer").Trim();
        int gold = answer switch
        {
            "1" => 0,
            "2" => 1,
            "" => throw row.Error("field 'answer' is empty (Winogrande's test split has no labels; use the validation split)"),
            _ => throw row.Error($"field 'answer' must be \"1\" or \"2\" (got '{answer}')"),
        };
        var prefix = sentence[..i];
        return Checked(row, sentence, [prefix + row.String("option1"), prefix + row.String("option2")], gold, "answer",
            shared: LmEval.PyStrip(sentence[(i + 1)..]));
    }

    /// <summary>lm-eval's <c>construct_requests</c> for <c>multiple_choice</c>, in choice order.</summary>
    public IReadOnlyList<(string Context, string Continuation)> BuildRequests(ChoiceDoc doc) =>
        doc.SharedContinuation is string shared
            ? doc.Choices.Select(c => (c, TargetDelimiter + shared)).ToList()
            : doc.Choices.Select(c => (doc.Context, TargetDelimiter + c)).ToList();

    /// <summary>lm-eval's <c>process_results</c> for <c>multiple_choice</c>.</summary>
    public static ChoiceSample Score(int index, ChoiceDoc doc, IReadOnlyList<(double LogProb, bool IsGreedy)> results)
    {
        if (results.Count != doc.Choices.Count)
            throw new ArgumentException($"{results.Count} log-likelihoods for {doc.Choices.Count} choices", nameof(results));
        var lls = results.Select(r => r.LogProb).ToList();
        // len() of the choice string in Python counts code points.
        var norm = lls.Select((ll, i) => ll / doc.Choices[i].EnumerateRunes().Count()).ToList();
        int pred = LmEval.ArgMax(lls), predNorm = LmEval.ArgMax(norm);
        return new ChoiceSample(index, doc.Context, doc.Choices, doc.Gold, lls, results.Select(r => r.IsGreedy).ToList(),
            pred, predNorm, pred == doc.Gold, predNorm == doc.Gold);
    }

    public EvalResult Aggregate(IReadOnlyList<ChoiceSample> samples, IReadOnlyList<string> warnings)
    {
        var b = new EvalResult.Builder().Mean("acc", "none", samples.Select(s => s.Acc ? 1.0 : 0.0).ToList());
        if (ReportsAccNorm) b.Mean("acc_norm", "none", samples.Select(s => s.AccNorm ? 1.0 : 0.0).ToList());
        return new EvalResult(Name, samples.Count, b.Build(), Settings, warnings);
    }

    protected override string TaskName => Name;

    protected override TaskData<ChoiceDoc> ReadDocs(string path, TaskLoadOptions? options) => Load(path, options);

    protected override EvalRun<ChoiceSample> ScoreDocs(ILogLikelihood model, TaskData<ChoiceDoc> data, int batchSize, Action<int, int>? progress) =>
        Evaluate(model, data, batchSize, progress);

    /// <summary>Scores every choice of every item (requests flattened and batched) and aggregates.</summary>
    public EvalRun<ChoiceSample> Evaluate(ILogLikelihood model, TaskData<ChoiceDoc> data, int batchSize = 64, Action<int, int>? progress = null)
    {
        var perDoc = data.Docs.Select(BuildRequests).ToList();
        var flat = perDoc.SelectMany(r => r).ToList();
        var results = TaskUtil.Batched(flat, batchSize, model.Score, progress);
        var samples = new List<ChoiceSample>(data.Docs.Count);
        int at = 0;
        for (int i = 0; i < data.Docs.Count; i++)
        {
            samples.Add(Score(i, data.Docs[i], results.GetRange(at, perDoc[i].Count)));
            at += perDoc[i].Count;
        }
        return new EvalRun<ChoiceSample>(Aggregate(samples, data.Warnings), samples);
    }
}
