using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Evaluation;

namespace Recur.Tasks;

/// <summary>The two layouts a predictions file can have.</summary>
public enum PredictionFormat
{
    /// <summary>One object per document: <c>{"output", "answer" | "solution"}</c>, or <c>{"log_likelihoods", …doc fields}</c> for multiple choice.</summary>
    Plain,
    /// <summary>lm-eval's <c>--log_samples</c> file: one line per document and filter (<c>doc_id</c>, <c>doc</c>, <c>resps</c>, <c>filter</c>, metrics).</summary>
    LmEvalSamples,
}

/// <summary>
/// How Recur's per-item scores compare with the scores lm-eval itself wrote into a <c>--log_samples</c> file
/// (its metric value on each line): one comparison per (document, filter, metric).
/// </summary>
/// <param name="Differences">The first few disagreements: doc_id, filter, metric, lm-eval's value and Recur's.</param>
public sealed record LmEvalAgreement(int Compared, int Agreed, IReadOnlyList<string> Differences)
{
    public double Rate => Compared == 0 ? double.NaN : (double)Agreed / Compared;
}

/// <summary>Scores of a predictions file: the aggregate, every sample, what layout was detected, and (for lm-eval files) the agreement with lm-eval's own per-item scores.</summary>
public sealed record ScoredPredictions(EvalResult Result, IReadOnlyList<IEvalSample> Samples, PredictionFormat Format, string Detected,
    LmEvalAgreement? Agreement = null);

/// <summary>
/// Scores generations or log-likelihoods that already exist (from Recur, another tool, or lm-eval's
/// <c>--log_samples</c>) with the same extraction and metrics as a live run. One JSON object per line:
/// <list type="bullet">
/// <item>GSM8K family: <c>{"output": ..., "answer": "... #### N"}</c>;</item>
/// <item>MATH: <c>{"output": ..., "solution": "... \boxed{X} ..."}</c> or <c>{"output": ..., "answer": "X"}</c>;</item>
/// <item>multiple choice: <c>{"log_likelihoods": [...], ...}</c> with the task's own document fields (or the generic
/// <c>context</c>, <c>choices</c>, <c>gold</c>) at the top level or under <c>doc</c>;</item>
/// <item>lm-eval sample logs: the output is <c>resps[0][0]</c> (the raw generation; multiple choice: each request's
/// <c>resps[i][0][0]</c>), the document is <c>doc</c>. lm-eval writes one line per filter per document
/// (lm_eval/evaluator.py): lines are deduplicated by (<c>doc_id</c>, <c>filter</c>) and every filter is scored once
/// per document, so the sample count is lm-eval's.</item>
/// </list>
/// An optional <c>prompt</c> is carried into the per-sample records. Outputs are cut at the task's stop
/// sequences first, as the harness would have done.
/// </summary>
public static class PredictionScorer
{
    /// <summary>Scores <paramref name="path"/> for the lm-eval task <paramref name="task"/> (exemplar settings do not matter here).</summary>
    public static ScoredPredictions Score(string task, string path, TaskLoadOptions? options = null)
    {
        var info = EvalTasks.Get(task);
        if (info.Kind == EvalTaskKind.ValLoss || info.Name == "lambada_openai")
            throw new RecurUserException($"task '{info.Name}' cannot be scored from a predictions file; the generation tasks and the multiple-choice tasks can");
        return Score(info.Build(new EvalSettings(Shots: 0)), path, options);
    }

    public static ScoredPredictions Score(IEvalTask task, string path, TaskLoadOptions? options = null)
    {
        options ??= TaskLoadOptions.Default;
        var rows = Jsonl.Read(path, row => row, options with { Limit = null });
        var format = IsLmEvalLine(rows.Docs[0]) ? PredictionFormat.LmEvalSamples : PredictionFormat.Plain;
        foreach (var r in rows.Docs)
            if (IsLmEvalLine(r) != (format == PredictionFormat.LmEvalSamples))
                throw new RecurUserException($"{path}:{r.Line}: {(format == PredictionFormat.LmEvalSamples ? "not an lm-eval sample line (no 'doc_id'/'resps')" : "an lm-eval sample line")}, " +
                    $"but line {rows.Docs[0].Line} is {(format == PredictionFormat.LmEvalSamples ? "one" : "a plain prediction")}; one file holds one layout");

        var warnings = rows.Warnings.ToList();
        var docs = format == PredictionFormat.LmEvalSamples ? Dedupe(path, rows.Docs, warnings) : rows.Docs.Select(r => new DocLines(r, [])).ToList();
        if (options.Limit is int lim)
        {
            if (lim < docs.Count) docs = docs.Take(lim).ToList();
            else if (lim > docs.Count) warnings.Add($"{path}: limit {lim} is larger than the {docs.Count} documents available; using all {docs.Count}");
        }
        string detected = format == PredictionFormat.LmEvalSamples
            ? $"lm-eval --log_samples: {rows.Docs.Count} lines, {docs.Count} documents" +
              (docs.SelectMany(d => d.Filters.Keys).Distinct().ToList() is { Count: > 0 } fs ? $" (filters: {string.Join(", ", fs)})" : "")
            : $"plain predictions: {docs.Count} lines";
        var settings = new Dictionary<string, string> { ["predictions"] = path, ["predictions_format"] = format == PredictionFormat.LmEvalSamples ? "lm-eval-log-samples" : "plain" };

        try
        {
            return task switch
            {
                IGenerationTask g => ScoreGenerations(g, docs, format, detected, settings, warnings),
                MultipleChoiceTask mc => ScoreChoices(mc, docs, format, detected, settings, warnings),
                _ => throw new RecurUserException($"task '{task.Name}' cannot be scored from a predictions file; the generation tasks and the multiple-choice tasks can"),
            };
        }
        catch (JsonlLineException e) { throw new RecurUserException(e.Message, e); }
    }

    static bool IsLmEvalLine(JsonlRow r) => r.Has("doc_id") && r.Has("resps");

    /// <summary>A document: its first line, and for lm-eval files the line of each filter.</summary>
    sealed record DocLines(JsonlRow First, Dictionary<string, JsonlRow> Filters);

    static List<DocLines> Dedupe(string path, IReadOnlyList<JsonlRow> rows, List<string> warnings)
    {
        var byId = new Dictionary<string, DocLines>();
        var order = new List<DocLines>();
        int repeated = 0;
        foreach (var r in rows)
        {
            var id = r.Node("doc_id").ToJsonString();
            var filter = r.OptionalString("filter") ?? "none";
            if (!byId.TryGetValue(id, out var d))
            {
                d = new DocLines(r, []);
                byId[id] = d;
                order.Add(d);
            }
            if (!d.Filters.TryAdd(filter, r)) repeated++;
            else if (d.First.Object["resps"]?.ToJsonString() != r.Object["resps"]?.ToJsonString())
                throw new RecurUserException($"{path}:{r.Line}: doc_id {id} has a different raw response ('resps') than on line {d.First.Line}; a --log_samples file holds one model's responses");
        }
        if (repeated > 0) warnings.Add($"{path}: {repeated} repeated (doc_id, filter) line{(repeated == 1 ? "" : "s")} ignored");
        return order;
    }

    /// <summary>The document a line describes: lm-eval's <c>doc</c>, else the line itself.</summary>
    static JsonlRow DocOf(JsonlRow row) => row.Object["doc"] is JsonObject doc ? new JsonlRow(row.Path, row.Line, doc) : row;

    static ScoredPredictions ScoreGenerations(IGenerationTask task, List<DocLines> docs, PredictionFormat format, string detected,
        Dictionary<string, string> settings, List<string> warnings)
    {
        var samples = new List<IEvalSample>(docs.Count);
        int compared = 0, agreed = 0;
        var diffs = new List<string>();
        for (int i = 0; i < docs.Count; i++)
        {
            var row = docs[i].First;
            string output = row.Has("output") ? row.String("output")
                : row.Object["resps"] is JsonArray r && r.Count > 0 && r[0] is JsonArray inner && inner.Count > 0 && inner[0] is JsonValue v && v.TryGetValue(out string? s) ? s
                : throw row.Error(row.Has("resps") ? "field 'resps' must be [[\"generated text\"]] for a generation task" : "missing field 'output' (or lm-eval's 'resps')");
            string prompt = row.OptionalString("prompt")
                ?? (row.Object["arguments"]?["gen_args_0"]?["arg_0"] is JsonValue pv && pv.TryGetValue(out string? ps) ? ps : "");
            var gold = task.GoldOf(DocOf(row));
            var sample = task.ScoreOne(i, prompt, output, gold);
            samples.Add(sample);
            var ours = task.Correctness(sample);
            foreach (var (filter, line) in docs[i].Filters)
            {
                if (!ours.TryGetValue(filter, out var mine) || line.Object["exact_match"] is not JsonValue em) continue;
                compared++;
                bool theirs = Number(em) > 0.5;
                if (theirs == mine) agreed++;
                else if (diffs.Count < 20) diffs.Add($"doc_id {line.Node("doc_id").ToJsonString()} {filter}: lm-eval exact_match {(theirs ? 1 : 0)}, Recur {(mine ? 1 : 0)}");
            }
        }
        var result = task.AggregateSamples(samples, settings, warnings);
        return new ScoredPredictions(result, samples, format, detected, format == PredictionFormat.LmEvalSamples ? new LmEvalAgreement(compared, agreed, diffs) : null);
    }

    static ScoredPredictions ScoreChoices(MultipleChoiceTask task, List<DocLines> docs, PredictionFormat format, string detected,
        Dictionary<string, string> settings, List<string> warnings)
    {
        var reader = MultipleChoiceTask.Reader(task.Format);
        var samples = new List<ChoiceSample>(docs.Count);
        int compared = 0, agreed = 0;
        var diffs = new List<string>();
        for (int i = 0; i < docs.Count; i++)
        {
            var row = docs[i].First;
            var doc = reader(DocOf(row));
            var results = format == PredictionFormat.LmEvalSamples ? LogSampleLikelihoods(row) : PlainLikelihoods(row);
            if (results.Count != doc.Choices.Count)
                throw new RecurUserException($"{row.Path}:{row.Line}: {results.Count} log-likelihoods for {doc.Choices.Count} choices");
            var sample = MultipleChoiceTask.Score(i, doc, results);
            samples.Add(sample);
            foreach (var (_, line) in docs[i].Filters)
                foreach (var (metric, mine) in new[] { ("acc", sample.Acc), ("acc_norm", sample.AccNorm) })
                {
                    if (line.Object[metric] is not JsonValue v || (metric == "acc_norm" && !task.ReportsAccNorm)) continue;
                    compared++;
                    bool theirs = Number(v) > 0.5;
                    if (theirs == mine) agreed++;
                    else if (diffs.Count < 20) diffs.Add($"doc_id {line.Node("doc_id").ToJsonString()} {metric}: lm-eval {(theirs ? 1 : 0)}, Recur {(mine ? 1 : 0)}");
                }
        }
        var result = task.Aggregate(samples, warnings) with { Settings = new Dictionary<string, string>(task.Settings).Concat(settings).ToDictionary() };
        return new ScoredPredictions(result, [.. samples], format, detected, format == PredictionFormat.LmEvalSamples ? new LmEvalAgreement(compared, agreed, diffs) : null);
    }

    /// <summary>lm-eval writes each request's response (log-likelihood, is-greedy) as strings: <c>resps[i][0] = ["-1.25", "False"]</c>.</summary>
    static List<(double, bool)> LogSampleLikelihoods(JsonlRow row)
    {
        if (row.Object["resps"] is not JsonArray reqs) throw row.Error("field 'resps' must be a list");
        var list = new List<(double, bool)>(reqs.Count);
        foreach (var req in reqs)
        {
            var pair = req is JsonArray a && a.Count > 0 && a[0] is JsonArray p && p.Count >= 1 ? p
                : throw row.Error("field 'resps' must hold [[log-likelihood, is-greedy]] per choice");
            list.Add((Number(pair[0], row, "resps"), pair.Count > 1 && Bool(pair[1])));
        }
        return list;
    }

    static List<(double, bool)> PlainLikelihoods(JsonlRow row)
    {
        if (row.Node("log_likelihoods") is not JsonArray lls) throw row.Error("field 'log_likelihoods' must be a list of numbers, one per choice");
        var greedy = row.Object["is_greedy"] as JsonArray;
        return lls.Select((n, i) => (Number(n, row, "log_likelihoods"), greedy is not null && i < greedy.Count && Bool(greedy[i]))).ToList();
    }

    static double Number(JsonNode? n, JsonlRow row, string field) =>
        n is JsonValue v && TryNumber(v, out var d) ? d : throw row.Error($"field '{field}' holds {n?.ToJsonString() ?? "null"}, expected a number");

    static double Number(JsonValue v) => TryNumber(v, out var d) ? d : double.NaN;

    /// <summary>A JSON number, or a string as Python's <c>str(float)</c> writes it ("-1.5", "-inf", "nan").</summary>
    static bool TryNumber(JsonValue v, out double d)
    {
        d = double.NaN;
        if (v.GetValueKind() == JsonValueKind.Number) { d = v.GetValue<double>(); return true; }
        if (v.GetValueKind() == JsonValueKind.True) { d = 1; return true; }
        if (v.GetValueKind() == JsonValueKind.False) { d = 0; return true; }
        if (!v.TryGetValue(out string? s)) return false;
        s = s.Trim();
        switch (s)
        {
            case "inf": d = double.PositiveInfinity; return true;
            case "-inf": d = double.NegativeInfinity; return true;
            case "nan": d = double.NaN; return true;
            case "True": d = 1; return true;
            case "False": d = 0; return true;
        }
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out d);
    }

    static bool Bool(JsonNode? n) => n is JsonValue v && (v.GetValueKind() == JsonValueKind.True
        || (v.TryGetValue(out string? s) && s is "True" or "true" or "1"));
}
