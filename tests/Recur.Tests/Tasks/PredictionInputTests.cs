using System.Text.Json.Nodes;
using Recur.Evaluation;
using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Tasks;

/// <summary>Predictions files: lm-eval --log_samples (one line per filter per document) and plain lines, generation and multiple choice.</summary>
public class PredictionInputTests
{
    // gsm8k_cot_log_samples.jsonl has lm-eval's layout (lm_eval/evaluator.py, loggers/evaluation_tracker.py): three documents,
    // every strict-match line first, then every flexible-extract line, each with the exact_match lm-eval gave it.
    static readonly string Gsm8kLog = TaskFixtures.Path("gsm8k_cot_log_samples.jsonl");
    static readonly string ArcLog = TaskFixtures.Path("arc_easy_log_samples.jsonl");

    [Fact]
    public void A_log_samples_file_counts_each_document_once_and_scores_each_filter_once()
    {
        Assert.Equal(6, File.ReadAllLines(Gsm8kLog).Length);
        var scored = PredictionScorer.Score("gsm8k_cot", Gsm8kLog);
        Assert.Equal(PredictionFormat.LmEvalSamples, scored.Format);
        Assert.Contains("lm-eval --log_samples: 6 lines, 3 documents (filters: strict-match, flexible-extract)", scored.Detected);
        Assert.Equal(3, scored.Result.Samples);
        Assert.Equal(1.0 / 3, scored.Result.Metrics["exact_match,strict-match"], 12);
        Assert.Equal(1.0, scored.Result.Metrics["exact_match,flexible-extract"], 12);
        // The standard error is that of three samples, not six: sqrt(1/3)/sqrt(3).
        Assert.Equal(1.0 / 3, scored.Result.Metrics["exact_match_stderr,strict-match"], 12);
        Assert.Equal((6, 6), (scored.Agreement!.Compared, scored.Agreement.Agreed));
        var first = (Gsm8kSample)scored.Samples[0];
        Assert.Equal("Q: Natalia earns $9 an hour. How much for 2 hours?\nA:", first.Prompt);
    }

    [Fact]
    public void A_score_lm_eval_disagrees_with_is_reported_per_document_and_filter()
    {
        var lines = File.ReadAllLines(Gsm8kLog).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        lines[1]["exact_match"] = 1.0; // doc 1, strict-match: Recur finds no "The answer is N."
        var p = TaskFixtures.TempFile(string.Join("\n", lines.Select(l => l.ToJsonString())) + "\n");
        var ag = PredictionScorer.Score("gsm8k_cot", p).Agreement!;
        Assert.Equal(6, ag.Compared);
        Assert.Equal(5, ag.Agreed);
        Assert.Equal(["doc_id 1 strict-match: lm-eval exact_match 1, Recur 0"], ag.Differences);
    }

    [Fact]
    public void Limit_counts_documents_of_a_log_samples_file_and_repeated_lines_are_ignored_with_a_note()
    {
        var text = File.ReadAllText(Gsm8kLog);
        var p = TaskFixtures.TempFile(text + File.ReadAllLines(Gsm8kLog)[0] + "\n");
        var scored = PredictionScorer.Score("gsm8k_cot", p, new TaskLoadOptions(Limit: 2));
        Assert.Equal(2, scored.Result.Samples);
        Assert.Contains(scored.Result.Warnings, w => w.Contains("1 repeated (doc_id, filter) line ignored"));
    }

    [Fact]
    public void Plain_and_log_sample_lines_in_one_file_are_a_user_error_naming_the_line()
    {
        var first = File.ReadAllLines(Gsm8kLog)[0];
        var p = TaskFixtures.TempFile(first + "\n{\"output\": \"The answer is 3.\", \"answer\": \"#### 3\"}\n");
        var e = Assert.Throws<RecurUserException>(() => PredictionScorer.Score("gsm8k_cot", p));
        Assert.Contains($"{p}:2: not an lm-eval sample line", e.Message);
    }

    [Fact]
    public void Multiple_choice_scores_from_the_log_likelihoods_of_a_log_samples_file()
    {
        var scored = PredictionScorer.Score("arc_easy", ArcLog);
        Assert.Equal(PredictionFormat.LmEvalSamples, scored.Format);
        var s = scored.Samples.Cast<ChoiceSample>().ToList();
        // Doc 0: sums pick "cat" (-3.5); per character "the big blue whale" (-9/18) wins, the gold.
        Assert.Equal([2, 0], s.Select(x => x.Pred));
        Assert.Equal([1, 0], s.Select(x => x.PredNorm));
        Assert.Equal(0.5, scored.Result.Metrics["acc,none"], 12);
        Assert.Equal(1.0, scored.Result.Metrics["acc_norm,none"], 12);
        Assert.Equal(4, scored.Agreement!.Compared);
        Assert.Equal(4, scored.Agreement.Agreed);
    }

    [Fact]
    public void Multiple_choice_scores_from_plain_lines_with_the_task_document_and_log_likelihoods()
    {
        var p = TaskFixtures.TempFile(
            "{\"goal\": \"Open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"hit it\", \"label\": 0, \"log_likelihoods\": [-6.0, -4.0]}\n" +
            "{\"doc\": {\"goal\": \"Dry hair\", \"sol1\": \"use a towel\", \"sol2\": \"use water\"}, \"label\": 1, \"log_likelihoods\": [-2.0, -3.0]}\n");
        var e = Assert.Throws<RecurUserException>(() => PredictionScorer.Score("piqa", p));
        Assert.Contains($"{p}:2: missing field 'label'", e.Message);

        var q = TaskFixtures.TempFile(
            "{\"goal\": \"Open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"hit it\", \"label\": 0, \"log_likelihoods\": [-6.0, -4.0]}\n");
        var scored = PredictionScorer.Score("piqa", q);
        Assert.Equal(PredictionFormat.Plain, scored.Format);
        var x = (ChoiceSample)scored.Samples.Single();
        Assert.Equal(1, x.Pred);     // -4 > -6
        Assert.Equal(0, x.PredNorm); // -6/13 > -4/6
        Assert.Null(scored.Agreement);
    }

    [Theory]
    [InlineData("math", "minerva_math")]
    [InlineData("lambada", "lambada_openai")]
    public void Names_that_mean_several_lm_eval_tasks_are_refused_with_the_choices(string name, string suggestion)
    {
        var e = Assert.Throws<RecurUserException>(() => EvalTasks.Get(name));
        Assert.Contains($"task '{name}' is ambiguous", e.Message);
        Assert.Contains(suggestion, e.Message);
    }

    [Fact]
    public void Every_lm_eval_name_resolves_to_a_task_object_of_that_name()
    {
        foreach (var name in EvalTasks.Names.Where(n => n != "val_loss"))
        {
            var info = EvalTasks.Get(name);
            Assert.Equal(name, info.Build(new EvalSettings(Shots: 0)).Name);
            Assert.DoesNotContain('\n', info.Means); // printed as one note line
        }
        Assert.Equal("3.0", EvalTasks.Get("gsm8k").LmEvalVersion);
        Assert.Equal(["Question:", "</s>", "<|im_end|>"], ((IGenerationTask)EvalTasks.Get("gsm8k").Build(new EvalSettings(Shots: 0))).StopSequences);
        Assert.Equal(["Q:", "</s>", "<|im_end|>"], ((IGenerationTask)EvalTasks.Get("gsm8k_cot").Build(new EvalSettings(Shots: 0))).StopSequences);
    }
}
