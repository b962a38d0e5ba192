namespace Recur.Tasks;

/// <summary>One LAMBADA passage split into context and final word.</summary>
public sealed record LambadaDoc(int Line, string Context, string Continuation);

public sealed record LambadaSample(int Index, string Context, string Continuation, double LogLikelihood, bool IsGreedy) : IEvalSample;

/// <summary>
/// LAMBADA (EleutherAI/lm-evaluation-harness:lm_eval/tasks/lambada/lambada_openai.yaml): the context is the
/// text up to its last space, the continuation is " " + the last word. <c>acc</c> = the continuation is the
/// greedy prediction; <c>perplexity</c> = exp(−mean log-likelihood) over all passages (lm-eval's
/// <c>perplexity</c> aggregation; its bootstrap stderr is not computed).
/// </summary>
public sealed class LambadaTask : LogLikelihoodTask<LambadaDoc, LambadaSample>
{
    public const string Name = "lambada_openai";

    protected override string TaskName => Name;

    protected override TaskData<LambadaDoc> ReadDocs(string path, TaskLoadOptions? options) => Load(path, options);

    protected override EvalRun<LambadaSample> ScoreDocs(ILogLikelihood model, TaskData<LambadaDoc> data, int batchSize, Action<int, int>? progress) =>
        Evaluate(model, data, batchSize, progress);

    public static TaskData<LambadaDoc> Load(string path, TaskLoadOptions? options = null) =>
        Jsonl.Read(path, row => Split(row.Line, row.String("text")), options);

    /// <summary><c>text.split(' ')[:-1]</c> joined by spaces, and <c>' ' + text.split(' ')[-1]</c>.</summary>
    public static LambadaDoc Split(int line, string text)
    {
        int i = text.LastIndexOf(' ');
        return i < 0 ? new LambadaDoc(line, "", " " + text) : new LambadaDoc(line, text[..i], " " + text[(i + 1)..]);
    }

    public static LambadaSample Score(int index, LambadaDoc doc, (double LogProb, bool IsGreedy) result) =>
        new(index, doc.Context, doc.Continuation, result.LogProb, result.IsGreedy);

    public static EvalResult Aggregate(IReadOnlyList<LambadaSample> samples, IReadOnlyList<string> warnings) =>
        new(Name, samples.Count, new EvalResult.Builder()
            .Value("perplexity", "none", Math.Exp(-LmEval.Mean(samples.Select(s => s.LogLikelihood).ToList())))
            .Mean("acc", "none", samples.Select(s => s.IsGreedy ? 1.0 : 0.0).ToList())
            .Build(), new Dictionary<string, string> { ["num_fewshot"] = "0" }, warnings);

    public static EvalRun<LambadaSample> Evaluate(ILogLikelihood model, TaskData<LambadaDoc> data, int batchSize = 64, Action<int, int>? progress = null)
    {
        var requests = data.Docs.Select(d => (d.Context, d.Continuation)).ToList();
        var results = TaskUtil.Batched(requests, batchSize, model.Score, progress);
        var samples = data.Docs.Select((d, i) => Score(i, d, results[i])).ToList();
        return new EvalRun<LambadaSample>(Aggregate(samples, data.Warnings), samples);
    }
}
