using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using Recur.Tokenization;
using Recur.Training;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Library;

/// <summary>The facade end to end on a tiny random model with the word tokenizer of <see cref="ChatModels"/>.</summary>
public sealed class RecurModelTests
{
    /// <summary>
    /// What the facade should produce, computed below it: the saved folder loaded with ModelLoader, T and the s_0
    /// generator set by hand, greedy generation with Generation.Generate, decoded by the tokenizer.
    /// </summary>
    static string Reference(string folder, string prompt, int t, long seed, int maxNew)
    {
        using var tok = TokenizerLoader.Load(folder);
        using var m = (RecurrentModel)ModelLoader.Load(folder, ScalarType.Float32, CPU);
        using var gen = new Generator((ulong)seed);
        var stops = new HashSet<int>([.. m.EosTokenIds, .. tok.StopIds]);
        var ids = Generation.Generate(m.At(Recurrence.Fixed(t, gen)), [tok.Encode(prompt)], new GenerationOptions(maxNew, new SamplingOptions(Seed: seed), stops))[0];
        return tok.Decode(ids);
    }

    [Fact]
    public async Task Load_retrofit_generate_at_two_depths_save_and_load_again()
    {
        string plain = ChatModels.Plain(seed: 21);
        const string prompt = "the big cat sat on the mat";
        using var baseModel = RecurModel.Load(plain);
        Assert.False(baseModel.IsRecurrent);
        Assert.Null(baseModel.Recurrences);
        Assert.NotNull(baseModel.Tokenizer);
        Assert.Throws<RecurUserException>(() => baseModel.Generate(prompt, new GenerateOptions { Recurrences = 2 }));

        using var rec = baseModel.Retrofit(new RecurRetrofitOptions { Shape = "1,2,1", Seed = 4, MeanRecurrence = 3 });
        Assert.True(rec.IsRecurrent);
        Assert.Equal(3, rec.Recurrences);
        Assert.False(baseModel.IsRecurrent); // the base is left as it was
        Assert.Throws<RecurUserException>(() => rec.Retrofit());

        var o1 = new GenerateOptions { Recurrences = 1, MaxNewTokens = 8, Seed = 9 };
        var o3 = o1 with { Recurrences = 3 };
        string t1 = rec.Generate(prompt, o1);
        string t3 = rec.Generate(prompt, o3);
        Assert.Equal(3, rec.Recurrences); // a per-call T does not change the default

        string saved = Path.Combine(TestModels.TempDir(), "saved");
        rec.Save(saved);
        Assert.True(File.Exists(Path.Combine(saved, "tokenizer.json")), "the tokenizer is saved beside the model");
        Assert.Throws<RecurUserException>(() => rec.Save(saved));
        Assert.Equal(Reference(saved, prompt, 1, 9, 8), t1);
        Assert.Equal(Reference(saved, prompt, 3, 9, 8), t3);

        using var again = RecurModel.Load(saved);
        Assert.True(again.IsRecurrent);
        Assert.Equal(3, again.Recurrences); // mean_recurrence survives the round trip
        Assert.Equal(t3, again.Generate(prompt, o3 with { Recurrences = null }));
        Assert.Equal(t1, again.Generate(prompt, o1));

        // Streaming gives the same text in pieces.
        var pieces = new List<string>();
        await foreach (var p in again.GenerateStreamingAsync(prompt, o3)) pieces.Add(p);
        Assert.Equal(t3, string.Concat(pieces));

        // Token ids in and out match the text path.
        var ids = again.GenerateTokens(again.Tokenizer!.Encode(prompt), o3);
        Assert.Equal(t3, again.Tokenizer.Decode(ids));

        again.Recurrences = 1;
        Assert.Equal(t1, again.Generate(prompt, o1 with { Recurrences = null }));
        Assert.Throws<RecurUserException>(() => again.Recurrences = 0);
    }

    [Fact]
    public void Load_with_recurrences_option_and_bad_inputs()
    {
        string dir = ChatModels.Recurrent(seed: 8);
        using var m = RecurModel.Load(dir, new RecurLoadOptions { Recurrences = 2 });
        Assert.Equal(2, m.Recurrences);
        Assert.Throws<RecurUserException>(() => RecurModel.Load(Path.Combine(dir, "missing")));
        Assert.Throws<RecurUserException>(() => RecurModel.Load(dir, new RecurLoadOptions { Device = "tpu" }));
        Assert.Throws<RecurUserException>(() => RecurModel.Load(dir, new RecurLoadOptions { DType = "fp8" }));
        Assert.Throws<RecurUserException>(() => m.Generate("the cat", new GenerateOptions { MaxNewTokens = 0 }));
        Assert.Throws<RecurUserException>(() => m.Generate("the cat", new GenerateOptions { TopP = 0 }));
        Assert.Throws<RecurUserException>(() => m.Generate("the cat", new GenerateOptions { MaxNewTokens = 10_000 }));
    }

    [Fact]
    public void Train_runs_the_recipe_in_place_and_exports_the_model()
    {
        var r = TrainRecipe.Load(Path.Combine(SharedAssets.RepoRoot ?? ".", "recipes", "smoke.json"),
            ["steps=3", "val_every=0", "checkpoint_every=0", "peak_flops=1e9", "micro_batch=2", "seq_len=32"]);
        var tok = TrainRun.LoadTokenizer(r);
        using var m = RecurModel.FromModel(TrainRun.BuildModel(r, tok, CPU), tok);
        var before = ((nn.Module)m.Model).parameters().Select(p => p.clone()).ToList();
        string dir = Path.Combine(TestModels.TempDir(), "run");
        var steps = new List<StepMetrics>();
        var result = m.Train(r, dir, new SyncProgress<StepMetrics>(steps.Add));

        Assert.True(result.Completed);
        Assert.Equal([1L, 2L, 3L], steps.Select(s => s.GlobalStep));
        Assert.Equal(3, result.LastStep!.GlobalStep);
        Assert.True(File.Exists(Path.Combine(result.ModelDir!, "config.json")));
        Assert.True(File.Exists(Path.Combine(result.ModelDir!, CharTokenizerAdapter.FileName)));
        Assert.Equal(3, TrainRun.ReadMetrics(dir).Count);
        var after = ((nn.Module)m.Model).parameters().ToList();
        Assert.Contains(before.Zip(after), p => (p.First - p.Second).abs().max().item<float>() > 0);
        Assert.False(((nn.Module)m.Model).training, "the model is back in eval mode");
        Assert.Throws<RecurUserException>(() => m.Train(r, dir)); // the run folder is not empty
    }

    static TrainRecipe SmokeRecipe(params string[] sets) =>
        TrainRecipe.Load(Path.Combine(SharedAssets.RepoRoot ?? ".", "recipes", "smoke.json"),
            ["val_every=0", "peak_flops=1e9", "micro_batch=2", "seq_len=32", .. sets]);

    static List<Tensor> Weights(RecurModel m) => [.. ((nn.Module)m.Model).parameters().Select(p => p.detach().clone())];

    /// <summary>
    /// resume: true continues a cancelled run from its checkpoint — into a model whose weights were changed since,
    /// which the checkpoint's replace — and ends with the same weights as the run that was never stopped; on the
    /// finished run it returns at once.
    /// </summary>
    [Fact]
    public void Train_resume_continues_a_cancelled_run_to_the_weights_of_an_uninterrupted_one()
    {
        var r = SmokeRecipe("steps=4", "checkpoint_every=2", "keep_checkpoints=2");
        var tok = TrainRun.LoadTokenizer(r);
        string root = TestModels.TempDir();
        using var straight = RecurModel.FromModel(TrainRun.BuildModel(r, tok, CPU), TrainRun.LoadTokenizer(r));
        Assert.True(straight.Train(r, Path.Combine(root, "a")).Completed);

        string dir = Path.Combine(root, "b");
        using var m = RecurModel.FromModel(TrainRun.BuildModel(r, tok, CPU), tok);
        using var cts = new CancellationTokenSource();
        var first = m.Train(r, dir, new SyncProgress<StepMetrics>(s => { if (s.GlobalStep == 2) cts.Cancel(); }), cts.Token);
        Assert.False(first.Completed);
        Assert.Equal(2, first.LastStep!.GlobalStep);
        var e = Assert.Throws<RecurUserException>(() => m.Train(r, dir));
        Assert.Contains("resume: true", e.Message);
        Assert.Contains("overwrite: true", e.Message);
        using (no_grad())
            foreach (var p in ((nn.Module)m.Model).parameters()) p.mul_(Scalars.MinusOne); // the checkpoint must win

        var steps = new List<long>();
        var resumed = m.Train(r, dir, new SyncProgress<StepMetrics>(s => steps.Add(s.GlobalStep)), resume: true);

        Assert.True(resumed.Completed);
        Assert.Equal([3L, 4L], steps);
        Assert.Equal(4, TrainRun.ReadMetrics(dir).Count);
        Assert.All(Weights(straight).Zip(Weights(m)), p => Assert.True(TensorAssert.Same(p.First, p.Second), "resumed weights differ"));
        var again = m.Train(r, dir, resume: true);
        Assert.True(again.Completed);
        Assert.Null(again.LastStep);
        Assert.Equal(4, TrainRun.ReadMetrics(dir).Count);
        Assert.Throws<RecurUserException>(() => m.Train(SmokeRecipe("steps=5", "checkpoint_every=2"), dir, resume: true)); // not the run's recipe
    }

    [Fact]
    public void Train_with_overwrite_replaces_a_finished_run()
    {
        var r = SmokeRecipe("steps=2", "checkpoint_every=0");
        var tok = TrainRun.LoadTokenizer(r);
        using var m = RecurModel.FromModel(TrainRun.BuildModel(r, tok, CPU), tok);
        string dir = Path.Combine(TestModels.TempDir(), "run");
        Assert.True(m.Train(r, dir).Completed);
        File.WriteAllText(Path.Combine(dir, "stale.txt"), "from before");
        Assert.Throws<RecurUserException>(() => m.Train(r, dir));
        Assert.Throws<RecurUserException>(() => m.Train(r, dir, overwrite: true, resume: true));

        var result = m.Train(r, dir, overwrite: true);

        Assert.True(result.Completed);
        Assert.Equal(2, TrainRun.ReadMetrics(dir).Count);
        Assert.False(File.Exists(Path.Combine(dir, "stale.txt")));
    }

    /// <summary>
    /// Library errors name the API's parameters, never the CLI's flags; the CLI shows its flags for the same errors.
    /// </summary>
    [Fact]
    public void Library_errors_name_api_parameters_and_the_cli_maps_them_to_flags()
    {
        string dir = ChatModels.Recurrent(seed: 12);
        using var m = RecurModel.Load(dir);
        string copy = Path.Combine(TestModels.TempDir(), "copy");
        m.Save(copy);
        using var plain = RecurModel.Load(ChatModels.Plain(seed: 21), new RecurLoadOptions { ChatTemplate = "jinja" });
        (Action Call, string Parameter)[] cases =
        [
            (() => m.Save(copy), "overwrite: true"),
            (() => m.Generate("the cat", new GenerateOptions { MaxNewTokens = 10_000 }), "MaxNewTokens"),
            (() => m.Generate("the cat", new GenerateOptions { Temperature = double.PositiveInfinity }), "Temperature"),
            (() => m.Generate("the cat", new GenerateOptions { TopK = -1 }), "TopK"),
            (() => m.Generate("the cat", new GenerateOptions { TopP = 2 }), "TopP"),
            (() => plain.Retrofit(new RecurRetrofitOptions { Shape = "9,9,9" }), "Shape"),
            (() => plain.Retrofit(new RecurRetrofitOptions { Layers = "core=7-1" }), "Layers"),
            (() => _ = plain.ChatTemplate, "ChatTemplate"),
            (() => m.Recurrences = WeightCheck.MaxRecurrence + 1, "Recurrences"),
            (() => RecurModel.Load(dir, new RecurLoadOptions { Recurrences = 0 }).Dispose(), "RecurLoadOptions.Recurrences"),
            (() => RecurModel.Load(dir, new RecurLoadOptions { Device = "tpu" }).Dispose(), "RecurLoadOptions.Device"),
            (() => RecurModel.FromModel(TestModels.Random(Presets.TinyTest)).TokenizerFor("chat"), "RecurLoadOptions.Tokenizer"),
        ];
        foreach (var (call, parameter) in cases)
        {
            var e = Assert.Throws<RecurUserException>(call);
            Assert.Contains(parameter, e.Message);
            Assert.DoesNotContain("--", e.Message);
            Assert.Contains(parameter, e.Parameters);
            string cli = Recur.Cli.Common.Describe(e);
            Assert.Contains(Recur.Cli.Common.Flags[parameter], cli);
            Assert.DoesNotContain(parameter, cli);
        }
    }

    /// <summary>Notes name the load options too; the CLI shows its flags in them (chat and serve load through RecurModel.Load).</summary>
    [Fact]
    public void Load_notes_name_the_options_and_the_cli_shows_its_flags()
    {
        var notes = new List<string>();
        using var m = RecurModel.Load(ChatModels.Plain(chatTemplate: "{{ messages | join('\\n') }}", seed: 22), new RecurLoadOptions { Recurrences = 2, Notice = notes.Add });
        Assert.Equal(ChatFormat.Plain, m.ChatTemplate.Format);
        Assert.Contains(notes, n => n.StartsWith("RecurLoadOptions.Recurrences ignored: this is not a recurrent model", StringComparison.Ordinal));
        Assert.Contains(notes, n => n.EndsWith("(choose one with RecurLoadOptions.ChatTemplate)", StringComparison.Ordinal));
        Assert.All(notes, n => Assert.DoesNotContain("--", n));
        var cli = notes.Select(Recur.Cli.Common.Note).ToList();
        Assert.Contains(cli, n => n.StartsWith("--recurrences ignored", StringComparison.Ordinal));
        Assert.Contains(cli, n => n.EndsWith("(choose one with --chat-template)", StringComparison.Ordinal));
        Assert.All(cli, n => Assert.DoesNotContain("RecurLoadOptions", n));
    }

    /// <summary>The default generation budget (256) would leave no room for a prompt on the 256-token test model.</summary>
    [Fact]
    public void Evaluate_picks_a_generation_budget_that_fits_a_small_context()
    {
        using var m = RecurModel.Load(ChatModels.Recurrent(seed: 12));
        Assert.Equal(256, m.ContextLength);
        string data = Path.Combine(TestModels.TempDir(), "test.jsonl");
        File.WriteAllText(data, "{\"question\": \"the cat sat on the mat\", \"answer\": \"the dog ran #### 4\"}\n");
        var run = Assert.Single(m.Evaluate("gsm8k", data, [1], new EvaluateOptions { Shots = 0 }));
        Assert.Equal(1, run.Result.Samples);
        Assert.Equal(64, GenerationBudget.Fit(EvaluateOptions.DefaultMaxNewTokens, m.ContextLength));
        var e = Assert.Throws<RecurUserException>(() => m.Evaluate("gsm8k", data, [1], new EvaluateOptions { Shots = 0, MaxNewTokens = 256 }));
        Assert.Contains("MaxNewTokens 256 leaves no room", e.Message);
    }

    [Fact]
    public void Evaluate_val_loss_at_each_recurrence_reproducibly()
    {
        string dir = ChatModels.Recurrent(seed: 12);
        string data = Path.Combine(TestModels.TempDir(), "val.txt");
        File.WriteAllText(data, string.Join(" ", Enumerable.Repeat("the cat sat on the mat and the dog ran to the red mat", 12)));
        using var m = RecurModel.Load(dir);
        var runs = m.Evaluate("val_loss", data, [1, 2], new EvaluateOptions { SeqLen = 32, Seed = 3 });
        Assert.Equal([1, 2], runs.Select(r => r.Recurrences!.Value));
        Assert.All(runs, r => Assert.True(double.IsFinite(r.Result.Metrics["loss,none"]) && r.Result.Metrics["loss,none"] > 0));
        // Each T is reseeded, so T = 2 alone reproduces the T = 2 of the sweep.
        var alone = m.Evaluate("val_loss", data, [2], new EvaluateOptions { SeqLen = 32, Seed = 3 });
        Assert.Equal(runs[1].Result.Metrics["loss,none"], alone[0].Result.Metrics["loss,none"]);
        Assert.Equal(4, m.Recurrences); // the default T is restored
        Assert.Throws<RecurUserException>(() => m.Evaluate("nope", data));
    }

    /// <summary>
    /// A per-call T must not stay behind: the text path once set the model's T for its call and left it there, so
    /// a later GenerateTokens or Evaluate ran at that T while Recurrences still reported the default.
    /// </summary>
    [Fact]
    public void A_per_call_recurrence_does_not_leak_into_later_calls()
    {
        string dir = ChatModels.Recurrent(seed: 12);
        using var m = RecurModel.Load(dir);
        int t = m.Recurrences!.Value;
        Assert.NotEqual(1, t);
        var ids = m.Tokenizer!.Encode("the big cat sat on the mat");
        var o = new GenerateOptions { MaxNewTokens = 8, Seed = 9 };
        var atDefault = m.GenerateTokens(ids, o);
        Assert.NotEqual(atDefault, m.GenerateTokens(ids, o with { Recurrences = 1 })); // T matters for this model and prompt
        string data = Path.Combine(TestModels.TempDir(), "val.txt");
        File.WriteAllText(data, string.Join(" ", Enumerable.Repeat("the cat sat on the mat and the dog ran to the red mat", 12)));
        var eo = new EvaluateOptions { SeqLen = 32, Seed = 3 };
        double lossAtDefault = m.Evaluate("val_loss", data, [t], eo)[0].Result.Metrics["loss,none"];

        m.Generate("the big cat sat on the mat", o with { Recurrences = 1 });

        Assert.Equal(t, m.Recurrences);
        Assert.Equal(atDefault, m.GenerateTokens(ids, o));
        var run = Assert.Single(m.Evaluate("val_loss", data, null, eo));
        Assert.Equal(t, run.Recurrences);
        Assert.Equal(lossAtDefault, run.Result.Metrics["loss,none"]);
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
