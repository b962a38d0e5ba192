using System.Text.Json.Nodes;
using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Tasks;

public class PredictionScorerTests
{
    [Fact]
    public void Gsm8k_predictions_score_like_a_live_run()
    {
        var path = TaskFixtures.Path("gsm8k_predictions.jsonl");
        var scored = PredictionScorer.Score("gsm8k_cot_sean", path);
        var expect = File.ReadAllLines(path).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        var samples = scored.Samples.Cast<Gsm8kSample>().ToList();
        Assert.Equal(expect.Count, samples.Count);
        Assert.Equal(expect.Select(e => (string)e["expect_strict"]!), samples.Select(s => s.StrictExtracted));
        Assert.Equal(expect.Select(e => (string)e["expect_flexible"]!), samples.Select(s => s.FlexibleExtracted));
        double strict = expect.Count(e => (bool)e["expect_strict_correct"]!) / (double)expect.Count;
        double flexible = expect.Count(e => (bool)e["expect_flexible_correct"]!) / (double)expect.Count;
        Assert.Equal(strict, scored.Result.Metrics["exact_match,strict-match"], 12);
        Assert.Equal(flexible, scored.Result.Metrics["exact_match,flexible-extract"], 12);
        Assert.Equal("gsm8k_cot_sean", scored.Result.Task);
        Assert.Equal(path, scored.Result.Settings["predictions"]);
    }

    [Fact]
    public void Math_predictions_read_solution_answer_and_lm_eval_sample_logs()
    {
        var scored = PredictionScorer.Score("minerva_math", TaskFixtures.Path("math_predictions.jsonl"));
        var s = scored.Samples.Cast<MathSample>().ToList();
        Assert.Equal(["0.5", "5", "3", "12"], s.Select(x => x.Gold));
        Assert.Equal([@"\dfrac{1}{2}", "[invalidanswer]", "3", "12.0"], s.Select(x => x.Extracted));
        Assert.Equal([true, false, true, true], s.Select(x => x.Correct));
        Assert.Equal([true, true, true, true], s.Select(x => x.CorrectBoxed));
        Assert.Equal(0.75, scored.Result.Metrics["exact_match,none"], 12);
        Assert.Equal(1.0, scored.Result.Metrics["exact_match,boxed-fallback"], 12);
    }

    [Fact]
    public void Per_sample_records_are_written_as_snake_case_json_lines()
    {
        var scored = PredictionScorer.Score("gsm8k_cot", TaskFixtures.Path("gsm8k_predictions.jsonl"));
        var outPath = Path.Combine(Path.GetDirectoryName(TaskFixtures.TempFile("")!)!, "samples.jsonl");
        SampleLog.Write(outPath, scored.Samples);
        var lines = File.ReadAllLines(outPath);
        Assert.Equal(scored.Samples.Count, lines.Length);
        var first = JsonNode.Parse(lines[0])!.AsObject();
        Assert.Equal(0, (int)first["index"]!);
        Assert.Equal("18", (string)first["gold"]!);
        Assert.Equal("18", (string)first["strict_extracted"]!);
        Assert.True((bool)first["flexible_correct"]!);
        Assert.Contains("$18", (string)first["output"]!);
        Assert.Equal("", (string)first["prompt"]!);
    }

    [Fact]
    public void Missing_output_and_unknown_task_are_user_errors()
    {
        var p = TaskFixtures.TempFile("{\"answer\": \"#### 3\"}\n");
        Assert.Contains($"{p}:1: missing field 'output'", Assert.Throws<RecurUserException>(() => PredictionScorer.Score("gsm8k", p)).Message);
        var q = TaskFixtures.TempFile("{\"output\": \"The answer is 3.\"}\n");
        Assert.Contains($"{q}:1: missing field 'answer'", Assert.Throws<RecurUserException>(() => PredictionScorer.Score("gsm8k", q)).Message);
        Assert.Contains("cannot be scored", Assert.Throws<RecurUserException>(() => PredictionScorer.Score("val_loss", q)).Message);
    }
}
