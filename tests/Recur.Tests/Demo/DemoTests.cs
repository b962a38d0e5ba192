using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Demo;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Demo;

[Collection("Exclusive")]
public class DemoTests
{
    static JsonNode WithoutTimings(string resultsPath)
    {
        var node = JsonNode.Parse(File.ReadAllText(resultsPath))!.AsObject();
        node.Remove("date"); node.Remove("machine"); node.Remove("wall_seconds");
        foreach (var m in node["models"]!.AsArray()) m!.AsObject().Remove("wall_seconds");
        return node;
    }

    /// <summary>
    /// The CI smoke run of `recur demo --quick` (running sums): the artefacts exist and are well formed (not the
    /// numbers), the equal-FLOPs baseline is within one step of the recurrent model's FLOPs, and a second run with the
    /// same seed gives the same results.json apart from timings.
    /// </summary>
    [Fact]
    public void Quick_demo_writes_report_plots_and_results_and_repeats_exactly()
    {
        var dir = Path.Combine(TestModels.TempDir(), "demo");
        var r = CliProcess.Run("demo", "--quick", "--out", dir, "--threads", "1");
        Assert.True(r.Code == 0, r.Stderr + r.Stdout);
        foreach (var f in new[] { "report.md", "accuracy_vs_recurrence.png", "pretrained_vs_random.png", "loss_vs_flops.png", "results.json" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        foreach (var png in new[] { "accuracy_vs_recurrence.png", "pretrained_vs_random.png", "loss_vs_flops.png" })
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(Path.Combine(dir, png)).Take(4));
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "results.json"))))
        {
            var models = doc.RootElement.GetProperty("models").EnumerateArray().ToList();
            Assert.Equal([DepthDemo.BaseName, DepthDemo.BaselineName, DepthDemo.RecurrentName, DepthDemo.RandomName], models.Select(m => m.GetProperty("name").GetString()));
            var rec = models[2];
            Assert.True(rec.GetProperty("recurrent").GetBoolean());
            Assert.Equal(["T=1", "T=2", "T=4", "T=8"], rec.GetProperty("by_t").EnumerateObject().Select(p => p.Name));
            Assert.Equal(["1-2", "3-4", "5-8", "all"], rec.GetProperty("by_t").GetProperty("T=1").EnumerateObject().Select(p => p.Name));
            // Equal training FLOPs for the baseline and the recurrent model, within one optimizer step.
            double fb = models[1].GetProperty("train_flops").GetDouble(), fr = rec.GetProperty("train_flops").GetDouble();
            Assert.InRange(fb / fr, 0.95, 1.05);
            Assert.Contains(doc.RootElement.GetProperty("comparisons").EnumerateArray(), c => c.GetProperty("claim").GetString() == "a");
        }
        var report = File.ReadAllText(Path.Combine(dir, "report.md"));
        Assert.Contains("## Gates: does the base learn the step, and is it depth-limited?", report);
        Assert.Contains("## Claims, per bucket", report);

        var dir2 = Path.Combine(TestModels.TempDir(), "demo2");
        var r2 = CliProcess.Run("demo", "--quick", "--out", dir2, "--threads", "1");
        Assert.True(r2.Code == 0, r2.Stderr + r2.Stdout);
        Assert.Equal(WithoutTimings(Path.Combine(dir, "results.json")).ToJsonString(), WithoutTimings(Path.Combine(dir2, "results.json")).ToJsonString());

        // Refuses to overwrite without --force.
        var again = CliProcess.Run("demo", "--quick", "--out", dir);
        Assert.Equal(1, again.Code);
        Assert.Contains("--force", again.Stderr);
    }

    [Fact]
    public void Demo_options_refuse_unknown_keys_and_bad_values_with_one_error_line()
    {
        var dir = TestModels.TempDir();
        var cfg = Path.Combine(dir, "o.json");
        File.WriteAllText(cfg, "{\"pretrain_stepz\": 5}");
        var r = CliProcess.Run("demo", "--quick", "--out", Path.Combine(dir, "out"), "--config", cfg);
        Assert.Equal(1, r.Code);
        Assert.Contains("unknown key 'pretrain_stepz'", r.Stderr);
        File.WriteAllText(cfg, "{\"buckets\": [\"1-30\"]}");
        r = CliProcess.Run("demo", "--quick", "--out", Path.Combine(dir, "out"), "--config", cfg);
        Assert.Equal(1, r.Code);
        Assert.Contains("bucket", r.Stderr);
        File.WriteAllText(cfg, "{\"base_model\": \"" + dir.Replace("\\", "/", StringComparison.Ordinal) + "\"}");
        r = CliProcess.Run("demo", "--quick", "--out", Path.Combine(dir, "out2"), "--config", cfg);
        Assert.Equal(1, r.Code);
        Assert.Contains("base_model", r.Stderr);
        Assert.Contains("not a model folder", r.Stderr);
        r = CliProcess.Run("demo", "--quick", "--out", Path.Combine(dir, "out"), "--task", "mazes");
        Assert.Equal(1, r.Code);
        Assert.Contains("--task", r.Stderr);
    }

    [Fact]
    public void Default_options_carry_gapped_rows_for_sums_and_none_for_chains()
    {
        var sum = DepthDemoOptions.Default.ForTask(Recur.Data.DepthTaskKind.Sum).Validate("default");
        Assert.True(sum.PretrainGapped > 0 && sum.PostGapped > 0);
        // Gapped rows exist for sums only: the chains task must still validate from the same defaults.
        var chains = DepthDemoOptions.Default.ForTask(Recur.Data.DepthTaskKind.Chains).Validate("default");
        Assert.Equal(0.0, chains.PretrainGapped);
        Assert.Equal(0.0, chains.PostGapped);
        Assert.Contains("running sum", Assert.Throws<RecurUserException>(() => (DepthDemoOptions.Default with { Task = Recur.Data.DepthTaskKind.Chains }).Validate("x")).Message);
    }

    [Fact]
    public void Adapter_init_option_takes_default_or_identity_only()
    {
        Assert.Equal("default", DepthDemoOptions.Default.AdapterInit);
        Assert.Equal("identity", DepthDemoOptions.Override(DepthDemoOptions.Default, "{\"adapter_init\": \"identity\"}", "o.json").AdapterInit);
        var e = Assert.Throws<RecurUserException>(() => DepthDemoOptions.Override(DepthDemoOptions.Default, "{\"adapter_init\": \"zero\"}", "o.json"));
        Assert.Contains("adapter_init must be default or identity", e.Message);
    }

    [Fact]
    public void Long_preset_is_the_identity_adapter_242_cut_with_twice_the_post_training_and_random_init()
    {
        var d = DepthDemoOptions.Default;
        var l = DepthDemoOptions.LongRun.Validate("long");
        Assert.Equal("2,4,2", l.Shape);
        Assert.Equal("identity", l.AdapterInit);
        Assert.Equal(3, l.TrainRecurrence);
        Assert.Equal(3, l.BackpropDepth);
        Assert.Equal(2 * d.RecurrentSteps, l.RecurrentSteps);
        // Claim (c) is measured in the same run, and claim (a) is read at the train recurrence, so it must be scored.
        Assert.False(l.SkipRandomInit);
        Assert.Contains(l.TrainRecurrence, l.Recurrences);
        Assert.Equal(d.Recurrences.Append(3).Order(), l.Recurrences);
        // Everything else (data, pretraining, rates, evaluation) is the default's.
        var rest = l with { Shape = d.Shape, AdapterInit = d.AdapterInit, TrainRecurrence = d.TrainRecurrence, BackpropDepth = d.BackpropDepth, RecurrentSteps = d.RecurrentSteps, Recurrences = d.Recurrences };
        Assert.Equal(JsonSerializer.Serialize(d, DepthDemoOptions.Json), JsonSerializer.Serialize(rest, DepthDemoOptions.Json));
        // --config still overrides fields on top of the preset.
        var o = DepthDemoOptions.Override(l, "{\"recurrent_steps\": 150}", "o.json");
        Assert.Equal(150, o.RecurrentSteps);
        Assert.Equal("2,4,2", o.Shape);
    }

    [Fact]
    public void Preset_picks_quick_long_or_default_and_refuses_both()
    {
        Assert.Equal(DepthDemoOptions.QuickRun.RecurrentSteps, DepthDemoOptions.Preset(quick: true, longRun: false).RecurrentSteps);
        Assert.Equal("2,4,2", DepthDemoOptions.Preset(quick: false, longRun: true).Shape);
        Assert.Equal(JsonSerializer.Serialize(DepthDemoOptions.Default, DepthDemoOptions.Json), JsonSerializer.Serialize(DepthDemoOptions.Preset(false, false), DepthDemoOptions.Json));
        var e = Assert.Throws<RecurUserException>(() => DepthDemoOptions.Preset(quick: true, longRun: true));
        Assert.Contains("--quick and --long cannot be combined", e.Message);
    }

    [Fact]
    public void Long_with_quick_or_with_word_problems_is_one_error_line_and_leaves_the_run_folder_alone()
    {
        var dir = Path.Combine(TestModels.TempDir(), "run");
        Directory.CreateDirectory(dir);
        var keep = Path.Combine(dir, "report.md");
        File.WriteAllText(keep, "an earlier run");
        Cli.CliErrorTests.OneLine(CliProcess.Run("demo", "--quick", "--long", "--out", dir, "--force"), "--quick and --long cannot be combined");
        Cli.CliErrorTests.OneLine(CliProcess.Run("demo", "--long", "--task", "word-problems", "--out", dir, "--force"), "--long applies to the depth tasks");
        Assert.Equal("an earlier run", File.ReadAllText(keep));
    }

    [Fact]
    public void A_refused_demo_invocation_leaves_an_existing_run_folder_alone_even_with_force()
    {
        var dir = Path.Combine(TestModels.TempDir(), "run");
        Directory.CreateDirectory(dir);
        var keep = Path.Combine(dir, "report.md");
        File.WriteAllText(keep, "an earlier run");
        var cfg = Path.Combine(TestModels.TempDir(), "bad.json");
        File.WriteAllText(cfg, "{\"shape\": 5}");
        Cli.CliErrorTests.OneLine(CliProcess.Run("demo", "--config", cfg, "--out", dir, "--force"), "--config " + cfg);
        Cli.CliErrorTests.OneLine(CliProcess.Run("demo", "--task", "mazes", "--out", dir, "--force"), "--task must be");
        Assert.Equal("an earlier run", File.ReadAllText(keep));
    }

    [Fact]
    public void Paired_standard_error_is_the_se_of_per_problem_differences()
    {
        // Two models right on the same 3 of 4 problems except one swap: differences 0, 0, +1, −1.
        var d = Estimate.Paired([1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]);
        Assert.Equal(0.0, d.Mean, 12);
        Assert.Equal(Math.Sqrt(2.0 / 3.0 / 4.0), d.Se, 12); // sample variance of (0,0,1,−1) is 2/3
        Assert.False(d.Beyond2Se);
        var e = Estimate.Paired([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]);
        Assert.Equal(1.0, e.Mean);
        Assert.Equal(0.0, e.Se);
        Assert.True(e.Beyond2Se);
    }

    [Fact]
    public void Teacher_forced_score_reads_the_answer_at_each_prompts_last_position()
    {
        // A model whose logits favour the token after the last input token by its id (an identity-like toy) is
        // awkward to build; instead, a 1-layer random model must give the same per-problem scores batched (with
        // right padding) as one problem at a time.
        var o = DepthDemoOptions.QuickRun;
        var tok = DepthDemo.Tokenizer(o);
        var cfg = Recur.Model.Presets.TinyTest with { VocabSize = tok.VocabSize, MaxPositionEmbeddings = 256 };
        using var model = Recur.Training.TrainRun.RandomDecoder(cfg, 3);
        var test = Recur.Data.VariableChains.TestSet(o.TaskOptions with { Kind = Recur.Data.DepthTaskKind.Chains }, 1, 1, 4, 3)
            .Concat(Recur.Data.VariableChains.TestSet(o.TaskOptions, 1, 1, 4, 3)).ToList();
        var batched = DepthDemo.Score(model, tok, test, 5);
        for (int i = 0; i < test.Count; i++)
        {
            var one = DepthDemo.Score(model, tok, [test[i]], 1);
            Assert.Equal(one.Correct[0], batched.Correct[i]);
            Assert.Equal(one.Loss[0], batched.Loss[i], 4);
        }
    }

    [Fact]
    public void Report_writes_a_difference_that_rounds_to_zero_with_one_sign()
    {
        // Two problems, one bucket; the recurrent model's answer loss at T = 2 is 1e-5 nats below T = 1, which rounds
        // to zero at three decimals and used to print as "-+0.000".
        var o = DepthDemoOptions.Default with { Buckets = ["1-2"], TestMinK = 1, TestMaxK = 2, TrainRecurrence = 2, Recurrences = [1, 2] };
        var test = Recur.Data.VariableChains.TestSet(o.TaskOptions, 1, 1, 2, 1);
        Assert.Equal(2, test.Count);
        var rec = new DepthModelResult
        {
            Name = DepthDemo.RecurrentName, Description = "", Recurrent = true,
            Scores = new() { [1] = new([true, false], [0.5, 0.7]), [2] = new([true, false], [0.5, 0.69998]) },
        };
        var r = new DepthDemoResult(o, [rec], test, 1, "test machine", 40, "test data");
        var report = Recur.Cli.DepthDemoReport.Report(r, Recur.Cli.DepthDemoReport.Comparisons(r), quick: true);
        Assert.DoesNotContain("-+", report);
        Assert.Contains("| recurrent T=2 (train recurrence) − T=1 | +0.0 ± 0.0 | +0.000 ± 0.000 |", report);

        Assert.Equal("+0.000", Recur.Cli.DepthDemoReport.Signed(-1e-5, 3));
        Assert.Equal("−0.001", Recur.Cli.DepthDemoReport.Signed(-0.0006, 3));
        Assert.Equal("+0.0", Recur.Cli.DepthDemoReport.Signed(0, 1));
        Assert.Equal("−12.3", Recur.Cli.DepthDemoReport.Signed(-12.34, 1));
        Assert.Equal("+4.6", Recur.Cli.DepthDemoReport.Signed(4.56, 1));
    }

    [Fact]
    public void Answer_extraction_reads_the_number_after_the_marker()
    {
        Assert.Equal(12, DemoPipeline.Extract(" #### 12"));
        Assert.Equal(-3, DemoPipeline.Extract("#### -3\n"));
        Assert.Null(DemoPipeline.Extract(" 12"));
    }

    [Fact]
    public void Complemented_tokens_are_inputs_but_not_targets()
    {
        // Document: BOS 1, question 10 11 (inputs only), answer 20 21, EOS 2.
        int[] doc = [~1, ~10, ~11, 20, 21, 2];
        using var rows = new InMemoryRows([doc], seqLen: 5, batch: 1, seed: 0, padId: 0);
        var (x, y) = rows.Next();
        Assert.Equal([1L, 10, 11, 20, 21], x.data<long>().ToArray());
        Assert.Equal([-100L, -100, 20, 21, 2], y.data<long>().ToArray());
    }
}
