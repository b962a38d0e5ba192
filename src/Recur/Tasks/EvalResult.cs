using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Recur.Checkpoints;

namespace Recur.Tasks;

/// <summary>A per-sample record (prompt, output, extracted answer, correctness...) written one per line.</summary>
public interface IEvalSample
{
    /// <summary>0-based position in the evaluated data.</summary>
    int Index { get; }
}

/// <summary>
/// Aggregated metrics of one task. Keys follow lm-eval's results JSON, <c>metric,filter</c>
/// (e.g. <c>exact_match,flexible-extract</c>, <c>acc_norm,none</c>) with <c>metric_stderr,filter</c> beside
/// each mean, so numbers can be compared with a harness run key by key.
/// </summary>
/// <param name="Settings">What shaped the numbers (shots, prompt style, exemplar source...): print them with every result (METHOD §8).</param>
public sealed record EvalResult(string Task, int Samples, IReadOnlyDictionary<string, double> Metrics,
    IReadOnlyDictionary<string, string> Settings, IReadOnlyList<string> Warnings)
{
    /// <summary>One line: task, settings, and each metric as value ± stderr.</summary>
    public string Summary()
    {
        var sb = new StringBuilder(Task).Append(" n=").Append(Samples);
        foreach (var (k, v) in Settings) sb.Append(' ').Append(k).Append('=').Append(v);
        foreach (var (k, v) in Metrics)
        {
            if (k.Contains("_stderr,", StringComparison.Ordinal)) continue;
            sb.Append(" | ").Append(k).Append(' ').Append(v.ToString("0.0000", CultureInfo.InvariantCulture));
            int comma = k.IndexOf(',');
            var se = comma < 0 ? k + "_stderr" : k[..comma] + "_stderr" + k[comma..];
            if (Metrics.TryGetValue(se, out var s) && !double.IsNaN(s)) sb.Append(" ± ").Append(s.ToString("0.0000", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary>Builds the metric dictionary in insertion order.</summary>
    internal sealed class Builder
    {
        readonly Dictionary<string, double> _m = [];
        public Builder Mean(string metric, string filter, IReadOnlyList<double> perSample)
        {
            _m[$"{metric},{filter}"] = LmEval.Mean(perSample);
            _m[$"{metric}_stderr,{filter}"] = LmEval.MeanStderr(perSample);
            return this;
        }
        /// <summary>
        /// A group's mean over its subtasks weighted by size (the mean over all samples) and the pooled stderr of
        /// lm_eval/api/metrics.py <c>pooled_sample_stderr</c>: sqrt(Σ(nᵢ−1)sᵢ² / (N−k) / N), sᵢ² the subtask's sample variance.
        /// </summary>
        public Builder PooledMean(string metric, string filter, IReadOnlyList<IReadOnlyList<double>> groups)
        {
            var all = groups.SelectMany(g => g).ToList();
            _m[$"{metric},{filter}"] = LmEval.Mean(all);
            int n = all.Count, k = groups.Count;
            double ss = 0;
            foreach (var g in groups)
            {
                if (g.Count < 2) continue;
                double se = LmEval.MeanStderr(g);
                ss += (g.Count - 1) * se * se * g.Count;
            }
            _m[$"{metric}_stderr,{filter}"] = n - k < 1 ? double.NaN : Math.Sqrt(ss / (n - k) / n);
            return this;
        }
        public Builder Value(string metric, string filter, double value) { _m[$"{metric},{filter}"] = value; return this; }
        public IReadOnlyDictionary<string, double> Build() => _m;
    }
}

/// <summary>The result of evaluating a task: the aggregate and every sample.</summary>
public sealed record EvalRun<TSample>(EvalResult Result, IReadOnlyList<TSample> Samples) where TSample : IEvalSample;

/// <summary>Writes per-sample records as JSON lines (snake_case keys, readable Unicode), atomically.</summary>
public static class SampleLog
{
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string ToJsonLine(IEvalSample sample) => JsonSerializer.Serialize(sample, sample.GetType(), Json);

    public static void Write(string path, IEnumerable<IEvalSample> samples)
    {
        var sb = new StringBuilder();
        foreach (var s in samples) sb.Append(ToJsonLine(s)).Append('\n');
        AtomicFile.WriteAllText(path, sb.ToString());
    }
}

/// <summary>Shared plumbing for the task classes.</summary>
internal static class TaskUtil
{
    /// <summary>Calls <paramref name="run"/> on consecutive batches and checks it answers each item once.</summary>
    public static List<TOut> Batched<TIn, TOut>(IReadOnlyList<TIn> items, int batchSize, Func<IReadOnlyList<TIn>, IReadOnlyList<TOut>> run,
        Action<int, int>? progress)
    {
        if (batchSize < 1) throw new RecurUserException($"batch size must be at least 1 (got {batchSize})");
        var results = new List<TOut>(items.Count);
        for (int start = 0; start < items.Count; start += batchSize)
        {
            var batch = items.Skip(start).Take(batchSize).ToList();
            var outs = run(batch);
            if (outs.Count != batch.Count)
                throw new InvalidOperationException($"the model returned {outs.Count} results for {batch.Count} requests");
            results.AddRange(outs);
            progress?.Invoke(results.Count, items.Count);
        }
        return results;
    }
}
