using System.Text.Json.Nodes;
using Recur.Cli;
using Recur.Tests.Evaluation;
using Recur.Tests.Support;
using Recur.Tests.Tasks;
using Xunit;

namespace Recur.Tests.Adaptive;

[Collection("Console")]
public sealed class AdaptiveEvalCliTests(EvalModels models) : IClassFixture<EvalModels>
{
    [Fact]
    public void Eval_reports_mean_iterations_next_to_fixed_T_and_draws_the_frontier()
    {
        var dir = Path.Combine(TestModels.TempDir("recur-eval-adaptive"), "out");
        var (code, stdout, stderr) = EvalCliTests.Eval("--model", models.Recurrent, "--tasks", "gsm8k_cot_sean,lambada_openai",
            "--data", $"{TaskFixtures.Path("gsm8k_test.jsonl")},{TaskFixtures.Path("lambada.jsonl")}", "--fewshot-data", TaskFixtures.Path("gsm8k_train.jsonl"),
            "--max-new-tokens", "4", "--batch-size", "2", "--recurrences", "1,3,adaptive:kl=1e9,max=3,adaptive:max=2", "--out", dir);
        Assert.True(code == 0, stderr);
        Assert.Contains("adaptive recurrence runs only for generation tasks; skipped for lambada_openai", stderr);
        var r = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, EvalCommand.ResultsFile)))!;
        var gsm = r["tasks"]!["gsm8k_cot_sean"]!;
        Assert.Equal(["1", "3", "adaptive:kl=1000000000,max=3", "adaptive:max=2"], gsm["results"]!.AsObject().Select(kv => kv.Key));
        Assert.Equal(1.0, (double)gsm["mean_iterations"]!["1"]!);
        Assert.Equal(3.0, (double)gsm["mean_iterations"]!["3"]!);
        // kl with a huge threshold exits as soon as two distributions exist; no criterion runs every token to max.
        Assert.Equal(2.0, (double)gsm["mean_iterations"]!["adaptive:kl=1000000000,max=3"]!);
        Assert.Equal(2.0, (double)gsm["mean_iterations"]!["adaptive:max=2"]!);
        var a = gsm["adaptive"]!["adaptive:kl=1000000000,max=3"]!;
        Assert.True((long)a["generated_tokens"]! > 0);
        Assert.Equal(2 * (long)a["generated_tokens"]!, (long)a["iterations"]!);
        Assert.Equal(["1", "3"], r["tasks"]!["lambada_openai"]!["results"]!.AsObject().Select(kv => kv.Key));
        Assert.Contains("mean iterations / token", stdout);
        Assert.True(File.Exists(Path.Combine(dir, "plot_gsm8k_cot_sean_frontier.png")));
        Assert.False(File.Exists(Path.Combine(dir, "plot_lambada_openai_frontier.png")));
        Assert.True(File.Exists(Path.Combine(dir, "samples_gsm8k_cot_sean_adaptive_max2.jsonl")));
    }

    [Fact]
    public void A_bad_adaptive_spec_is_one_error_line()
    {
        var (code, _, err) = EvalCliTests.Eval("--model", models.Recurrent, "--tasks", "gsm8k_cot_sean", "--data", TaskFixtures.Path("gsm8k_test.jsonl"),
            "--recurrences", "2,adaptive:kl=5e-4", "--out", Path.Combine(TestModels.TempDir("recur-eval-adaptive"), "out"));
        Assert.Equal(1, code);
        Assert.Contains("needs max=T", err);
    }
}
