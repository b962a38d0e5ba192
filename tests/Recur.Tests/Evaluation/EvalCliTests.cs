using System.CommandLine;
using System.Text.Json.Nodes;
using Recur.Cli;
using Recur.Tests.Support;
using Recur.Tests.Tasks;
using Xunit;

namespace Recur.Tests.Evaluation;


/// <summary>Tiny model folders shared by the eval CLI tests (made once).</summary>
public sealed class EvalModels
{
    public string Recurrent { get; } = EvalFixtures.RecurrentFolder();
    public string Decoder { get; } = EvalFixtures.DecoderFolder();
}

[Collection("Console")]
public sealed class EvalCliTests(EvalModels models) : IClassFixture<EvalModels>
{
    static readonly string Gsm8kTest = TaskFixtures.Path("gsm8k_test.jsonl");
    static readonly string Gsm8kTrain = TaskFixtures.Path("gsm8k_train.jsonl");
    static readonly string HellaSwag = TaskFixtures.Path("hellaswag.jsonl");
    static readonly string Lambada = TaskFixtures.Path("lambada.jsonl");

    internal static (int Code, string Out, string Err) Eval(params string[] args)
    {
        var root = new RootCommand { Options = { Common.Verbose } };
        root.Subcommands.Add(EvalCommand.Create());
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var o = new StringWriter();
        var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try { return (root.Parse(["eval", .. args]).Invoke(), o.ToString(), e.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }

    static string OutDir() => Path.Combine(TestModels.TempDir("recur-eval-out"), "out");

    static readonly Lazy<string> ValTextFile = new(() =>
    {
        var p = Path.Combine(TestModels.TempDir("recur-eval-val"), "val.txt");
        File.WriteAllText(p, string.Join(" ", Enumerable.Repeat("the cat sat on the mat and looked at the dog.", 12)));
        return p;
    });

    static string ValText() => ValTextFile.Value;

    static JsonObject Results(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, EvalCommand.ResultsFile)))!.AsObject();

    static List<JsonObject> Samples(string dir, string file) =>
        File.ReadAllLines(Path.Combine(dir, file)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();

    static void AssertOneError(int code, string err, string expected)
    {
        Assert.Equal(1, code);
        var errors = err.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList();
        Assert.Single(errors);
        Assert.Contains(expected, errors[0]);
    }

    string[] FourTasks(string outDir, params string[] more) =>
    [
        "--model", models.Recurrent, "--tasks", "gsm8k_cot_sean,hellaswag,lambada_openai,val_loss",
        "--data", $"{Gsm8kTest},{HellaSwag},{Lambada},{ValText()}", "--fewshot-data", Gsm8kTrain,
        "--max-new-tokens", "6", "--seq-len", "32", "--out", outDir, .. more,
    ];

    /// <summary>
    /// One front door: <c>recur eval</c> loads through RecurModel.Load and sweeps T with the same step as
    /// RecurModel.Evaluate (reseeded per T), so both give the same numbers for the same model, data, T and seed.
    /// </summary>
    [Fact]
    public void The_cli_and_the_library_sweep_give_the_same_results()
    {
        string dir = OutDir();
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "val_loss", "--data", ValText(), "--recurrences", "1,3",
            "--seq-len", "32", "--seed", "5", "--out", dir);
        Assert.True(code == 0, err);
        var cli = Results(dir)["tasks"]!["val_loss"]!["results"]!;
        using var m = RecurModel.Load(models.Recurrent);
        var runs = m.Evaluate("val_loss", ValText(), [1, 3], new EvaluateOptions { SeqLen = 32, Seed = 5 });
        Assert.Equal([1, 3], runs.Select(r => r.Recurrences!.Value));
        foreach (var r in runs)
            Assert.Equal(r.Result.Metrics["loss,none"], (double)cli[r.Recurrences!.Value.ToString()]!["loss,none"]!);
    }

    [Fact]
    public void Results_json_holds_every_task_at_every_T_with_lm_eval_keys_settings_samples_and_plots()
    {
        var dir = OutDir();
        var (code, stdout, stderr) = Eval(FourTasks(dir, "--recurrences", "1,2", "--batch-size", "2"));
        Assert.True(code == 0, stderr);
        var r = Results(dir);
        Assert.Equal("recur-eval", (string)r["format"]!);
        Assert.True((bool)r["complete"]!);
        Assert.True((bool)r["recurrent"]!);
        Assert.Equal(Path.GetFullPath(models.Recurrent), (string)r["model"]!);
        var s = r["settings"]!;
        Assert.Equal(1, (int)s["shots"]!);
        Assert.Equal([1, 2], s["recurrences"]!.AsArray().Select(x => (int)x!));
        Assert.Equal(0, (long)s["seed"]!);
        Assert.Null(s["limit"]);
        Assert.Equal("float32", (string)s["dtype"]!);
        Assert.NotNull(r["date"]);

        var tasks = r["tasks"]!.AsObject();
        Assert.Equal(["gsm8k_cot_sean", "hellaswag", "lambada_openai", "val_loss"], tasks.Select(kv => kv.Key));
        Assert.Equal("gsm8k_cot_sean", (string)tasks["gsm8k_cot_sean"]!["lm_eval_task"]!);
        Assert.Equal("3.0", (string)tasks["gsm8k_cot_sean"]!["lm_eval_version"]!);
        Assert.Equal("lambada_openai", (string)tasks["lambada_openai"]!["lm_eval_task"]!);
        Assert.Null(tasks["val_loss"]!["lm_eval_task"]);
        Assert.Equal("1", (string)tasks["gsm8k_cot_sean"]!["settings"]!["num_fewshot"]!);
        foreach (var t in new[] { "1", "2" })
        {
            // Each aggregate equals the mean of its per-sample records.
            var gsm = tasks["gsm8k_cot_sean"]!["results"]![t]!;
            var gs = Samples(dir, $"samples_gsm8k_cot_sean_T{t}.jsonl");
            Assert.Equal(3, gs.Count);
            Assert.Equal(gs.Average(x => (bool)x["strict_correct"]! ? 1.0 : 0.0), (double)gsm["exact_match,strict-match"]!, 12);
            Assert.Equal(gs.Average(x => (bool)x["flexible_correct"]! ? 1.0 : 0.0), (double)gsm["exact_match,flexible-extract"]!, 12);
            Assert.NotNull(gsm["exact_match_stderr,flexible-extract"]);
            Assert.StartsWith("Q: ", (string)gs[0]["prompt"]!);
            Assert.EndsWith("A: Let's think step by step.", (string)gs[0]["prompt"]!);

            var hs = tasks["hellaswag"]!["results"]![t]!;
            var hsSamples = Samples(dir, $"samples_hellaswag_T{t}.jsonl");
            Assert.Equal(2, hsSamples.Count);
            Assert.Equal(hsSamples.Average(x => (bool)x["acc"]! ? 1.0 : 0.0), (double)hs["acc,none"]!, 12);
            Assert.Equal(hsSamples.Average(x => (bool)x["acc_norm"]! ? 1.0 : 0.0), (double)hs["acc_norm,none"]!, 12);

            var lam = tasks["lambada_openai"]!["results"]![t]!;
            var ls = Samples(dir, $"samples_lambada_openai_T{t}.jsonl");
            Assert.Equal(Math.Exp(-ls.Average(x => (double)x["log_likelihood"]!)), (double)lam["perplexity,none"]!, 6);

            var vl = tasks["val_loss"]!["results"]![t]!;
            var vs = Samples(dir, $"samples_val_loss_T{t}.jsonl");
            Assert.True(vs.Count >= 2);
            Assert.All(vs.SkipLast(1), x => Assert.Equal(32, (int)x["tokens"]!));
            Assert.Equal(vs.Average(x => (double)x["loss"]!), (double)vl["loss,none"]!, 12);
            Assert.Equal($"samples_val_loss_T{t}.jsonl", (string)tasks["val_loss"]!["samples_files"]![t]!);
        }

        foreach (var task in tasks.Select(kv => kv.Key))
        {
            var png = File.ReadAllBytes(Path.Combine(dir, $"plot_{task}.png"));
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
            Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
            Assert.Equal(960, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));
            Assert.Equal(520, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));
        }
        Assert.Contains("T=1", stdout);
        Assert.Contains("T=2", stdout);
        Assert.Contains("exact_match,flexible-extract", stdout);
        Assert.Contains("gsm8k_cot_sean T=2: done", stdout);
        Assert.Empty(Directory.GetFiles(dir, ".*tmp*"));
    }

    static string Scores(string dir)
    {
        var r = Results(dir);
        r.Remove("date");
        r.Remove("timing_seconds");
        return r.ToJsonString();
    }

    [Fact]
    public void The_same_command_twice_gives_identical_results_and_the_seed_matters()
    {
        var (a, b, c) = (OutDir(), OutDir(), OutDir());
        Assert.Equal(0, Eval(FourTasks(a, "--recurrences", "1,3", "--batch-size", "2")).Code);
        Assert.Equal(0, Eval(FourTasks(b, "--recurrences", "1,3", "--batch-size", "2")).Code);
        var sampleFiles = Directory.GetFiles(a, "samples_*.jsonl").Select(Path.GetFileName).Order().ToList();
        Assert.Equal(8, sampleFiles.Count);
        Assert.Equal(Scores(a).Replace(a, "OUT"), Scores(b).Replace(b, "OUT"));
        foreach (var f in sampleFiles) Assert.Equal(File.ReadAllBytes(Path.Combine(a, f!)), File.ReadAllBytes(Path.Combine(b, f!)));

        // Another seed draws another s_0, which moves the log-likelihoods.
        Assert.Equal(0, Eval(FourTasks(c, "--recurrences", "1,3", "--batch-size", "2", "--seed", "7")).Code);
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(a, "samples_lambada_openai_T3.jsonl")), File.ReadAllBytes(Path.Combine(c, "samples_lambada_openai_T3.jsonl")));
    }

    [Fact]
    public void Each_task_and_T_starts_from_the_seed_so_a_T_alone_reproduces_its_column()
    {
        var (both, alone) = (OutDir(), OutDir());
        string[] Args(string dir, string ts) =>
            ["--model", models.Recurrent, "--tasks", "lambada_openai,hellaswag", "--data", $"{Lambada},{HellaSwag}", "--recurrences", ts, "--out", dir];
        Assert.Equal(0, Eval(Args(both, "1,2")).Code);
        Assert.Equal(0, Eval(Args(alone, "2")).Code);
        Assert.Equal(File.ReadAllBytes(Path.Combine(both, "samples_lambada_openai_T2.jsonl")), File.ReadAllBytes(Path.Combine(alone, "samples_lambada_openai_T2.jsonl")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(both, "samples_hellaswag_T2.jsonl")), File.ReadAllBytes(Path.Combine(alone, "samples_hellaswag_T2.jsonl")));
    }

    [Fact]
    public void Predictions_mode_scores_gsm8k_and_math_without_a_model()
    {
        var dir = OutDir();
        var gsm = TaskFixtures.Path("gsm8k_predictions.jsonl");
        var (code, stdout, stderr) = Eval("--tasks", "gsm8k_cot_sean,minerva_math", "--predictions", $"{gsm},{TaskFixtures.Path("math_predictions.jsonl")}", "--out", dir);
        Assert.True(code == 0, stderr);
        var r = Results(dir);
        Assert.False((bool)r["recurrent"]!);
        var expect = File.ReadAllLines(gsm).Select(l => JsonNode.Parse(l)!).ToList();
        var g = r["tasks"]!["gsm8k_cot_sean"]!["results"]!["none"]!;
        Assert.Equal(expect.Average(e => (bool)e["expect_strict_correct"]! ? 1.0 : 0.0), (double)g["exact_match,strict-match"]!, 12);
        Assert.Equal(expect.Average(e => (bool)e["expect_flexible_correct"]! ? 1.0 : 0.0), (double)g["exact_match,flexible-extract"]!, 12);
        // math_predictions.jsonl: 3 of 4 final-answer sentences are right; all 4 with the \boxed{} fallback.
        var m = r["tasks"]!["minerva_math"]!["results"]!["none"]!;
        Assert.Equal(0.75, (double)m["exact_match,none"]!, 12);
        Assert.Equal(1.0, (double)m["exact_match,boxed-fallback"]!, 12);
        Assert.Equal(expect.Count, Samples(dir, "samples_gsm8k_cot_sean.jsonl").Count);
        Assert.Empty(Directory.GetFiles(dir, "*.png"));
        Assert.Contains("value", stdout);

        (code, _, stderr) = Eval("--tasks", "gsm8k_cot_sean", "--predictions", gsm, "--data", Gsm8kTest, "--out", OutDir());
        AssertOneError(code, stderr, "--data is not used with --predictions");
        (code, _, stderr) = Eval("--tasks", "val_loss", "--predictions", gsm, "--out", OutDir());
        AssertOneError(code, stderr, "--predictions scores the generation and multiple-choice tasks; 'val_loss' needs a --model");
    }

    [Fact]
    public void A_non_recurrent_model_is_evaluated_once_and_says_so()
    {
        var dir = OutDir();
        var (code, _, stderr) = Eval("--model", models.Decoder, "--tasks", "lambada_openai", "--data", $"lambada_openai={Lambada}", "--recurrences", "1,2", "--out", dir);
        Assert.True(code == 0, stderr);
        Assert.Contains("not recurrent: each task is evaluated once", stderr);
        var r = Results(dir);
        Assert.False((bool)r["recurrent"]!);
        Assert.Equal(["none"], r["tasks"]!["lambada_openai"]!["results"]!.AsObject().Select(kv => kv.Key));
        Assert.True(File.Exists(Path.Combine(dir, "samples_lambada_openai.jsonl")));
        Assert.Empty(Directory.GetFiles(dir, "*.png"));
    }

    [Fact]
    public void Unknown_task_lists_the_known_ones()
    {
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "gsm8k,mmlu", "--data", "a,b", "--out", OutDir());
        AssertOneError(code, err, "unknown task 'mmlu'; known tasks: gsm8k, gsm8k_cot, gsm8k_cot_sean, minerva_math, minerva_math_algebra");
    }

    [Fact]
    public void Missing_data_is_one_error()
    {
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", "/nonexistent/lambada.jsonl", "--out", OutDir());
        AssertOneError(code, err, "/nonexistent/lambada.jsonl: file not found");
        (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai,hellaswag", "--data", Lambada, "--out", OutDir());
        AssertOneError(code, err, "--data: 1 path for 2 tasks (lambada_openai, hellaswag)");
        (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai,hellaswag", "--data", $"lambada_openai={Lambada}", "--out", OutDir());
        AssertOneError(code, err, "--data: no file for task 'hellaswag'");
    }

    [Fact]
    public void Malformed_lines_name_the_line_and_can_be_skipped()
    {
        var data = TaskFixtures.TempFile("{\"text\": \"one two three\"}\n{\"text\": \"four five\n{\"text\": \"six seven\"}\n", "lambada.jsonl");
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", data, "--out", OutDir());
        AssertOneError(code, err, "lambada.jsonl:2: not valid JSON");
        var dir = OutDir();
        (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", data, "--skip-bad-lines", "--out", dir);
        Assert.True(code == 0, err);
        Assert.Contains("skipped 1 bad line", err);
        Assert.Equal(2, Samples(dir, "samples_lambada_openai_T2.jsonl").Count);
    }

    [Fact]
    public void A_limit_larger_than_the_data_uses_all_and_says_so()
    {
        var dir = OutDir();
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", Lambada, "--limit", "10", "--out", dir);
        Assert.True(code == 0, err);
        Assert.Contains("limit 10 is larger than the 2 examples available; using all 2", err);
        Assert.Equal(2, Samples(dir, "samples_lambada_openai_T2.jsonl").Count); // default T: the model's mean_recurrence (2)
        var one = OutDir();
        Assert.Equal(0, Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", Lambada, "--limit", "1", "--out", one).Code);
        Assert.Single(Samples(one, "samples_lambada_openai_T2.jsonl"));
    }

    [Theory]
    [InlineData("0", "--recurrences: T must be ≥ 1 (got 0)")]
    [InlineData("1,-2", "--recurrences: T must be ≥ 1 (got -2)")]
    [InlineData("1,x", "--recurrences: 'x' is not an integer")]
    public void Recurrences_below_one_are_refused(string ts, string expected)
    {
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", Lambada, "--recurrences", ts, "--out", OutDir());
        AssertOneError(code, err, expected);
    }

    [Fact]
    public void A_tokenizer_that_does_not_fit_the_model_is_refused()
    {
        var small = EvalFixtures.RecurrentFolder(vocab: 100); // the tokenizer has 157 ids
        var (code, _, err) = Eval("--model", small, "--tasks", "lambada_openai", "--data", Lambada, "--out", OutDir());
        AssertOneError(code, err, "does not fit the model");
    }

    [Fact]
    public void A_non_empty_out_needs_force()
    {
        var dir = OutDir();
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "results.json"), "{}");
        File.WriteAllText(Path.Combine(dir, "samples_old_T9.jsonl"), "{}");
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "mine");
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", Lambada, "--out", dir);
        AssertOneError(code, err, "folder is not empty (use --force");
        Assert.Equal("{}", File.ReadAllText(Path.Combine(dir, "results.json")));
        (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "lambada_openai", "--data", Lambada, "--out", dir, "--force");
        Assert.True(code == 0, err);
        Assert.False(File.Exists(Path.Combine(dir, "samples_old_T9.jsonl"))); // an earlier evaluation's file
        Assert.True(File.Exists(Path.Combine(dir, "notes.txt")));             // not ours: kept
        Assert.NotNull(Results(dir)["tasks"]!["lambada_openai"]);
    }

    [Fact]
    public void Shots_without_exemplars_is_one_error()
    {
        var data = TaskFixtures.TempFile(File.ReadAllText(Gsm8kTest), "test.jsonl"); // no train.jsonl beside it
        var (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "gsm8k_cot_sean", "--data", data, "--out", OutDir());
        AssertOneError(code, err, "gsm8k_cot_sean: --shots 1 needs exemplars: pass --fewshot-data PATH");
        var dir = OutDir();
        (code, _, err) = Eval("--model", models.Recurrent, "--tasks", "gsm8k_cot_sean", "--data", data, "--shots", "0", "--max-new-tokens", "4", "--out", dir);
        Assert.True(code == 0, err);
        Assert.StartsWith("Q: Sam buys", (string)Samples(dir, "samples_gsm8k_cot_sean_T2.jsonl")[0]["prompt"]!);
    }

    [SharedFact("data", "gsm8k", "test.jsonl")]
    public void Smoke_gsm8k_with_the_llama3_tokenizer_at_T_1_and_2()
    {
        if (SharedAssets.SkipReason("tokenizers", "llama3") is { } why) throw new InvalidOperationException(why);
        // A random recurrent model whose embedding matches Llama 3's 128256 ids, kept small in every other way.
        var dir = Path.Combine(TestModels.TempDir("recur-eval-llama3"), "model");
        var cfg = Recur.Model.Presets.TinyTest with { VocabSize = 128256, HiddenSize = 32, IntermediateSize = 64, NumAttentionHeads = 2, NumKeyValueHeads = 1, NumHiddenLayers = 3, MaxPositionEmbeddings = 2048, BosTokenId = 128000, EosTokenId = [128001] };
        using (var b = TestModels.Random(cfg, 5))
        using (var m = Recur.Checkpoints.Retrofit.FromDecoder(b, new Recur.Checkpoints.RetrofitOptions { Layers = Recur.Checkpoints.LayerMap.Default(3, 1, 1, 1), MeanRecurrence = 4 }))
            Recur.Checkpoints.RecurrentCheckpoint.Save(m, dir);
        var outDir = OutDir();
        var (code, _, err) = Eval("--model", dir, "--tokenizer", SharedAssets.Path("tokenizers", "llama3"), "--tasks", "gsm8k_cot_sean",
            "--data", SharedAssets.Path("data", "gsm8k", "test.jsonl"), "--limit", "5", "--recurrences", "1,2", "--max-new-tokens", "4", "--out", outDir);
        Assert.True(code == 0, err);
        Assert.Contains("exemplars from", err); // train.jsonl beside test.jsonl
        var r = Results(outDir);
        foreach (var t in new[] { "1", "2" })
        {
            var s = Samples(outDir, $"samples_gsm8k_cot_sean_T{t}.jsonl");
            Assert.Equal(5, s.Count);
            Assert.All(s, x => Assert.Contains("\n\nQ: ", (string)x["prompt"]!)); // one exemplar, then the question
            Assert.InRange((double)r["tasks"]!["gsm8k_cot_sean"]!["results"]![t]!["exact_match,flexible-extract"]!, 0, 1);
        }
        Assert.True(File.Exists(Path.Combine(outDir, "plot_gsm8k_cot_sean.png")));
    }
}
