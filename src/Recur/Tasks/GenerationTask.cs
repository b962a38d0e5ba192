using System.Globalization;
using System.Text;

namespace Recur.Tasks;

/// <summary>A worked example placed before the question: its question and the target text after it.</summary>
public sealed record Exemplar(string Question, string Target);

/// <param name="NumFewshot">Exemplars before each question; 1 as in the paper (eval.sh passes --num_fewshot=1, METHOD §8).</param>
/// <param name="MaxNewTokens">Generation budget; lm-eval's HF default <c>max_gen_toks</c> is 256.</param>
public sealed record GenerationTaskOptions(int NumFewshot = 1, int MaxNewTokens = 256);

/// <summary>The result of running or scoring a task, with its samples as the sample log writes them.</summary>
public sealed record TaskRun(EvalResult Result, IReadOnlyList<IEvalSample> Samples);

/// <summary>
/// A task whose data is read and ready to run against a model of kind <typeparamref name="TModel"/>
/// (<see cref="IGenerator"/> or <see cref="ILogLikelihood"/>).
/// </summary>
/// <param name="Run">Runs every request in batches of the given size, reporting (done, total) to the progress callback.</param>
public sealed record PreparedTask<TModel>(string Path, int Count, IReadOnlyList<string> Warnings,
    Func<TModel, int, Action<int, int>?, TaskRun> Run);

/// <summary>What every task tells the registry and the CLI: its lm-eval name and what shaped its numbers.</summary>
public interface IEvalTask
{
    /// <summary>The lm-eval task name (results.json's <c>lm_eval_task</c>).</summary>
    string Name { get; }

    /// <summary>Shots, exemplar source, budgets...: printed with every result (METHOD §8).</summary>
    IReadOnlyDictionary<string, string> Settings { get; }
}

/// <summary>A generation task (GSM8K family, MATH): prompts in, text out, text scored.</summary>
public interface IGenerationTask : IEvalTask
{
    IReadOnlyList<string> StopSequences { get; }

    PreparedTask<IGenerator> Prepare(string path, TaskLoadOptions? options = null);

    /// <summary>The gold answer of a document row (as the task's <c>doc_to_target</c> / <c>process_docs</c> give it).</summary>
    string GoldOf(JsonlRow doc);

    /// <summary>Scores one generation against a gold answer from <see cref="GoldOf"/>.</summary>
    IEvalSample ScoreOne(int index, string prompt, string output, string gold);

    /// <summary>Per-filter correctness of a scored sample, keyed by lm-eval filter name.</summary>
    IReadOnlyDictionary<string, bool> Correctness(IEvalSample sample);

    EvalResult AggregateSamples(IReadOnlyList<IEvalSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings);
}

/// <summary>A log-likelihood task (multiple choice, LAMBADA): (context, continuation) pairs in, log-probabilities out.</summary>
public interface ILogLikelihoodTask : IEvalTask
{
    PreparedTask<ILogLikelihood> Prepare(string path, TaskLoadOptions? options = null);
}

/// <summary>
/// What the log-likelihood tasks share, as lm-eval's <c>ConfigurableTask</c> does for <c>loglikelihood</c> and
/// <c>multiple_choice</c>: zero-shot, the documents read once, their requests scored in batches and aggregated.
/// </summary>
public abstract class LogLikelihoodTask<TDoc, TSample> : ILogLikelihoodTask where TSample : IEvalSample
{
    string IEvalTask.Name => TaskName;

    /// <summary>The lm-eval task name.</summary>
    protected abstract string TaskName { get; }

    public IReadOnlyDictionary<string, string> Settings { get; } = new Dictionary<string, string> { ["num_fewshot"] = "0" };

    /// <summary>The task's documents from a jsonl file.</summary>
    protected abstract TaskData<TDoc> ReadDocs(string path, TaskLoadOptions? options);

    /// <summary>Scores every document's requests and aggregates.</summary>
    protected abstract EvalRun<TSample> ScoreDocs(ILogLikelihood model, TaskData<TDoc> data, int batchSize, Action<int, int>? progress);

    public PreparedTask<ILogLikelihood> Prepare(string path, TaskLoadOptions? options = null)
    {
        var data = ReadDocs(path, options);
        return new PreparedTask<ILogLikelihood>(path, data.Docs.Count, data.Warnings, (model, batch, progress) =>
        {
            var run = ScoreDocs(model, data, batch, progress);
            return new TaskRun(run.Result, [.. run.Samples]);
        });
    }
}

/// <summary>
/// What the generation tasks share, as lm-eval's <c>ConfigurableTask</c> does for <c>generate_until</c>:
/// few-shot exemplars (the first K of a training file, lm-eval's <c>first_n</c> sampler, or, when
/// <see cref="FewshotSeed"/> is set, lm-eval's default seeded sampler), the prompt
/// (<c>doc_to_text</c> of each exemplar, the target delimiter " ", its target, the fewshot delimiter "\n\n", then
/// <c>doc_to_text</c> of the question), generation in batches, scoring and aggregation.
/// </summary>
/// <remarks>As in lm-eval, an exemplar identical to the question being asked is skipped.</remarks>
public abstract class GenerationTask<TDoc, TSample> : IGenerationTask where TSample : IEvalSample
{
    readonly IReadOnlyList<Exemplar> _pool;

    /// <param name="exemplarPool">Exemplars in order; at least <see cref="GenerationTaskOptions.NumFewshot"/> (one more lets
    /// the task skip an exemplar equal to the question).</param>
    /// <param name="fewshotSource">Where the exemplars came from, for the result's settings.</param>
    protected GenerationTask(string name, GenerationTaskOptions? options, IReadOnlyList<Exemplar>? exemplarPool, string? fewshotSource)
    {
        Name = name;
        Options = options ?? new GenerationTaskOptions();
        if (Options.NumFewshot < 0) throw new RecurUserException($"{name}: num_fewshot must be ≥ 0 (got {Options.NumFewshot})");
        if (Options.MaxNewTokens < 1) throw new RecurUserException($"{name}: max new tokens must be ≥ 1 (got {Options.MaxNewTokens})");
        _pool = exemplarPool ?? [];
        if (_pool.Count < Options.NumFewshot)
            throw new RecurUserException(Options.NumFewshot > 0 && _pool.Count == 0
                ? $"{name}: num_fewshot {Options.NumFewshot} needs a training jsonl to draw exemplars from ({ExemplarHint}), or num_fewshot 0"
                : $"{name}: num_fewshot {Options.NumFewshot} but only {_pool.Count} exemplars are available");
        FewshotSource = fewshotSource;
    }

    public string Name { get; }
    public GenerationTaskOptions Options { get; }
    public string? FewshotSource { get; }
    public IReadOnlyList<Exemplar> ExemplarPool => _pool;

    /// <summary>
    /// When set, exemplars are drawn as lm-eval's default <c>ContextSampler</c> draws them (lm_eval/api/samplers.py):
    /// one <c>random.Random(seed)</c> per task, <c>sample(pool, K)</c> called once per document in document order, so
    /// document i gets the (i+1)-th draw; the pool is the whole few-shot file in file order. Nothing is excluded,
    /// as lm-eval excludes the document only when the few-shot split is the test split. Null: the first K.
    /// </summary>
    public int? FewshotSeed { get; protected init; }

    readonly List<int[]> _draws = [];
    PythonRandom? _rng;
    readonly Lock _drawLock = new();

    /// <summary>Pool indices of the exemplars document <paramref name="docIndex"/> gets under <see cref="FewshotSeed"/>.</summary>
    public IReadOnlyList<int> SeededDraw(int docIndex)
    {
        if (FewshotSeed is not int seed) throw new InvalidOperationException($"{Name}: exemplars are the first K, not seeded draws");
        ArgumentOutOfRangeException.ThrowIfNegative(docIndex);
        lock (_drawLock)
        {
            _rng ??= new PythonRandom((ulong)seed);
            while (_draws.Count <= docIndex) _draws.Add(_rng.SampleIndices(_pool.Count, Options.NumFewshot));
            return _draws[docIndex];
        }
    }

    /// <summary>lm-eval's <c>generation_kwargs.until</c>; the engine adds the model's EOS.</summary>
    public abstract IReadOnlyList<string> StopSequences { get; }

    /// <summary>The task's <c>doc_to_text</c> of a question.</summary>
    public abstract string DocToText(string question);

    /// <summary>Reads the task's test data.</summary>
    public abstract TaskData<TDoc> Load(string path, TaskLoadOptions? options = null);

    public abstract string GoldOf(JsonlRow doc);

    /// <summary>Scores one generation against the gold answer.</summary>
    public abstract TSample Score(int index, string prompt, string output, string gold);

    public abstract IReadOnlyDictionary<string, bool> Correctness(TSample sample);

    protected abstract string QuestionOf(TDoc doc);

    protected abstract string GoldOf(TDoc doc);

    /// <summary>Scores the generation for one document; a task may carry more of the document into the sample.</summary>
    protected virtual TSample ScoreDoc(int index, string prompt, string output, TDoc doc) => Score(index, prompt, output, GoldOf(doc));

    /// <summary>The kind of training file the exemplars come from, for error messages.</summary>
    protected virtual string ExemplarHint => "e.g. train.jsonl";

    /// <summary>Metrics of the scored samples, under lm-eval's keys.</summary>
    public abstract EvalResult Aggregate(IReadOnlyList<TSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings);

    public virtual IReadOnlyDictionary<string, string> Settings => new Dictionary<string, string>
    {
        ["num_fewshot"] = Options.NumFewshot.ToString(CultureInfo.InvariantCulture),
        ["fewshot_source"] = Options.NumFewshot == 0 ? "none" : FewshotSource ?? "given",
        ["max_new_tokens"] = Options.MaxNewTokens.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// The full prompt: for each exemplar <c>DocToText(q) + " " + target + "\n\n"</c> (lm-eval's
    /// <c>target_delimiter</c> and <c>fewshot_delimiter</c>), then <c>DocToText(question)</c>.
    /// </summary>
    /// <param name="docIndex">The document's position in evaluation order; chooses the draw under <see cref="FewshotSeed"/>.</param>
    public string BuildPrompt(string question, int docIndex = 0)
    {
        var sb = new StringBuilder();
        if (FewshotSeed is not null)
        {
            foreach (int i in SeededDraw(docIndex))
                sb.Append(DocToText(_pool[i].Question)).Append(' ').Append(_pool[i].Target).Append("\n\n");
            return sb.Append(DocToText(question)).ToString();
        }
        int used = 0;
        foreach (var ex in _pool)
        {
            if (used == Options.NumFewshot) break;
            if (ex.Question == question) continue;
            sb.Append(DocToText(ex.Question)).Append(' ').Append(ex.Target).Append("\n\n");
            used++;
        }
        if (used < Options.NumFewshot)
            throw new RecurUserException($"{Name}: num_fewshot {Options.NumFewshot} but only {used} exemplars differ from the question; give a larger exemplar file");
        return sb.Append(DocToText(question)).ToString();
    }

    /// <summary>Generates an answer for every document and scores it.</summary>
    public EvalRun<TSample> Evaluate(IGenerator generator, TaskData<TDoc> data, int batchSize = 32, Action<int, int>? progress = null)
    {
        var prompts = data.Docs.Select((d, i) => BuildPrompt(QuestionOf(d), i)).ToList();
        var outputs = TaskUtil.Batched(prompts, batchSize, b => generator.Generate(b, StopSequences, Options.MaxNewTokens), progress);
        var samples = data.Docs.Select((d, i) => ScoreDoc(i, prompts[i], outputs[i], d)).ToList();
        return new EvalRun<TSample>(Aggregate(samples, Settings, data.Warnings), samples);
    }

    public PreparedTask<IGenerator> Prepare(string path, TaskLoadOptions? options = null)
    {
        var data = Load(path, options);
        return new PreparedTask<IGenerator>(path, data.Docs.Count, data.Warnings, (g, batch, progress) =>
        {
            var run = Evaluate(g, data, batch, progress);
            return new TaskRun(run.Result, [.. run.Samples]);
        });
    }

    IEvalSample IGenerationTask.ScoreOne(int index, string prompt, string output, string gold) => Score(index, prompt, output, gold);

    IReadOnlyDictionary<string, bool> IGenerationTask.Correctness(IEvalSample sample) => Correctness((TSample)sample);

    EvalResult IGenerationTask.AggregateSamples(IReadOnlyList<IEvalSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings) =>
        Aggregate(samples.Cast<TSample>().ToList(), settings, warnings);

    /// <summary>Reads the first <paramref name="count"/> rows of a training jsonl as exemplars (fewer if the file is shorter; all when null).</summary>
    protected static IReadOnlyList<Exemplar> LoadExemplars(string path, int? count, Func<JsonlRow, Exemplar> convert) =>
        Jsonl.Read(path, convert, new TaskLoadOptions(Limit: count)).Docs;
}
