using System.Text.Json.Nodes;

namespace Recur.Tasks;

/// <summary>Scores of a predictions file: the aggregate and every sample.</summary>
public sealed record ScoredPredictions(EvalResult Result, IReadOnlyList<IEvalSample> Samples);

/// <summary>
/// Scores generations that already exist (from Recur, another tool, or lm-eval's <c>--log_samples</c>) with
/// the same extraction and metrics as a live run. One JSON object per line:
/// <list type="bullet">
/// <item>GSM8K: <c>{"output": ..., "answer": "... #### N"}</c> (a bare <c>"answer": "N"</c> or number also works);</item>
/// <item>MATH: <c>{"output": ..., "solution": "... \boxed{X} ..."}</c> or <c>{"output": ..., "answer": "X"}</c>;</item>
/// <item>lm-eval sample logs: the output is <c>resps[0][0]</c> and the fields above are read from <c>doc</c>.</item>
/// </list>
/// An optional <c>prompt</c> is carried into the per-sample records. Outputs are cut at the task's stop
/// sequences first, as the harness would have done.
/// </summary>
public static class PredictionScorer
{
    public static IReadOnlyList<string> Gsm8kNames { get; } = ["gsm8k", "gsm8k_cot", "gsm8k_cot_sean"];
    public static IReadOnlyList<string> MathNames { get; } = ["math", "minerva_math", "minerva_math500"];

    public static ScoredPredictions Score(string task, string path, TaskLoadOptions? options = null)
    {
        var settings = new Dictionary<string, string> { ["predictions"] = path };
        if (Gsm8kNames.Contains(task))
        {
            var data = Jsonl.Read(path, row => (Output: Output(row), Gold: Gsm8kTask.GoldAnswer(Gold(row, ["answer", "target"])), Prompt: row.OptionalString("prompt") ?? ""), options);
            var samples = data.Docs.Select((d, i) => Gsm8kTask.Score(i, d.Prompt, d.Output, d.Gold)).ToList();
            return new ScoredPredictions(Gsm8kTask.Aggregate(task, samples, settings, data.Warnings), samples);
        }
        if (MathNames.Contains(task))
        {
            var data = Jsonl.Read(path, row => (Output: Output(row), Gold: MathGold(row), Prompt: row.OptionalString("prompt") ?? ""), options);
            var samples = data.Docs.Select((d, i) => MathTask.Score(i, d.Prompt, d.Output, d.Gold)).ToList();
            var result = MathTask.Aggregate(samples, settings, data.Warnings) with { Task = task };
            return new ScoredPredictions(result, samples);
        }
        throw new RecurUserException($"task '{task}' cannot be scored from a predictions file; expected one of {string.Join(", ", Gsm8kNames.Concat(MathNames))}");
    }

    /// <summary>Writes one JSON line per sample (prompt, output, extracted answers, gold, correctness).</summary>
    public static void WriteSamples(string path, ScoredPredictions scored) => SampleLog.Write(path, scored.Samples);

    static string Output(JsonlRow row)
    {
        if (row.Has("output")) return row.String("output");
        if (row.Object["resps"] is JsonArray r && r.Count > 0 && r[0] is JsonArray inner && inner.Count > 0 && inner[0] is JsonValue v && v.TryGetValue(out string? s))
            return s;
        throw row.Error("missing field 'output' (or lm-eval's 'resps')");
    }

    /// <summary>The first of <paramref name="fields"/> present at the top level, else in lm-eval's <c>doc</c>.</summary>
    static string Gold(JsonlRow row, string[] fields)
    {
        foreach (var f in fields) if (row.Has(f)) return row.StringOrNumber(f);
        if (row.Object["doc"] is JsonObject doc)
        {
            var inner = new JsonlRow(row.Path, row.Line, doc);
            foreach (var f in fields) if (inner.Has(f)) return inner.StringOrNumber(f);
        }
        throw row.Error($"missing field '{fields[0]}'");
    }

    static string MathGold(JsonlRow row)
    {
        if (row.Has("solution") || row.Has("answer")) return MathTask.GoldOf(row);
        if (row.Object["doc"] is JsonObject doc) return MathTask.GoldOf(new JsonlRow(row.Path, row.Line, doc));
        throw row.Error("missing field 'solution' (or 'answer')");
    }
}
