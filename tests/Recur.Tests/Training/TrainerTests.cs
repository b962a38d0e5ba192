using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using Recur.Training;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Training;

public class TrainerTests
{
    static readonly string SmokeRecipe = Path.Combine(SharedAssets.RepoRoot ?? ".", "recipes", "smoke.json");

    static TrainRecipe Recipe(params string[] sets) =>
        TrainRecipe.Load(SmokeRecipe, ["steps=12", "checkpoint_every=4", "val_every=0", "keep_checkpoints=10", .. sets]);

    /// <summary>Runs the trainer as the CLI does; stops (like Ctrl-C) after <paramref name="stopAfter"/> steps.</summary>
    static List<StepMetrics> Run(TrainRecipe r, string dir, long? stopAfter = null, bool resume = false)
    {
        var metrics = new List<StepMetrics>();
        var tok = TrainRun.LoadTokenizer(r);
        ICausalLM model;
        TrainerState? state = null;
        if (resume)
        {
            var ckpt = RunCheckpoints.Latest(dir)!;
            state = RunCheckpoints.ReadState(ckpt);
            model = ModelLoader.Load(ckpt, ScalarType.Float32, CPU);
        }
        else model = TrainRun.BuildModel(r, tok, CPU);
        using var cts = new CancellationTokenSource();
        var hooks = new TrainerHooks
        {
            Data = TrainRun.DataHooks(tok),
            OnStep = m => { metrics.Add(m); if (stopAfter is { } s && m.GlobalStep >= s) cts.Cancel(); },
        };
        using (model)
            new Trainer(r, SmokeRecipe, dir, model, hooks, state, TrainRun.TokenizerFiles(tok, Path.Combine(dir, "tok"))).Run(cts.Token);
        return metrics;
    }

    [Fact]
    public void Peak_flops_are_measured_once_per_process_and_dtype()
    {
        // A fresh measurement times 0.3 s of matmuls and never returns the same double twice; a reused one does, at once.
        double first = Trainer.MeasurePeak(ScalarType.Float32, CPU, n: 96);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        double second = Trainer.MeasurePeak(ScalarType.Float32, CPU, n: 96);
        Assert.Equal(first, second);
        Assert.True(sw.Elapsed.TotalSeconds < 0.25, $"the second call took {sw.Elapsed.TotalSeconds:0.00} s: it measured again");
        Assert.True(first > 0);
    }

    [Fact]
    public void Loss_falls_on_a_tiny_corpus()
    {
        var m = Run(Recipe("steps=30"), TestModels.TempDir());
        Assert.Equal(30, m.Count);
        Assert.True(m.TakeLast(5).Average(x => x.Loss) < m.Take(5).Average(x => x.Loss) - 0.5, $"{m[0].Loss} → {m[^1].Loss}");
    }

    [Fact]
    public void Resumed_run_reproduces_the_uninterrupted_losses_step_for_step()
    {
        var r = Recipe();
        var full = Run(r, TestModels.TempDir());
        var dir = TestModels.TempDir();
        var first = Run(r, dir, stopAfter: 5); // checkpoint written on stop, at step 5
        Assert.Equal(5, first.Count);
        var rest = Run(r, dir, resume: true);
        var joined = first.Concat(rest).ToList();
        Assert.Equal(full.Count, joined.Count);
        for (int i = 0; i < full.Count; i++)
        {
            Assert.Equal(full[i].N, joined[i].N);
            Assert.Equal(full[i].K, joined[i].K);
            Assert.True(Math.Abs(full[i].Loss - joined[i].Loss) <= 1e-6, $"step {i + 1}: {full[i].Loss} vs {joined[i].Loss}");
        }
    }

    [Fact]
    public void Checkpoints_are_loadable_models_and_only_the_newest_are_kept()
    {
        var dir = TestModels.TempDir();
        Run(Recipe("keep_checkpoints=2"), dir);
        var cks = RunCheckpoints.List(dir);
        Assert.Equal(2, cks.Count);
        Assert.EndsWith("phase1-step0000012", cks[^1]);
        using var m = ModelLoader.Load(cks[^1], ScalarType.Float32, CPU);
        Assert.IsType<RecurrentModel>(m);
        Assert.True(File.Exists(Path.Combine(cks[^1], "char_tokenizer.json")));
        Assert.Equal(12, RunCheckpoints.ReadState(cks[^1]).Step);
    }

    [Fact]
    public void A_failure_while_writing_a_checkpoint_leaves_the_previous_one_loadable()
    {
        var dir = TestModels.TempDir();
        Run(Recipe("steps=4"), dir);
        var good = RunCheckpoints.Latest(dir)!;
        // A half-written checkpoint is a temporary folder that never got renamed: simulate one and check it is ignored.
        var partial = Path.Combine(dir, "checkpoints", ".phase1-step0000008.tmp-1-x");
        Directory.CreateDirectory(partial);
        File.WriteAllText(Path.Combine(partial, "model.safetensors"), "truncated");
        Assert.Equal(good, RunCheckpoints.Latest(dir));
        // And a write over that very checkpoint that fails midway (after the weights, at a missing extra file)
        // leaves it as it was: same files, same weights, same state.
        var files = Directory.GetFiles(good).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))).OrderBy(f => f.Item1).ToList();
        using var model = (RecurrentModel)ModelLoader.Load(good, ScalarType.Float32, CPU);
        using (no_grad()) model.lm_head.weight!.add_(1f);
        Assert.ThrowsAny<Exception>(() => RecurrentCheckpoint.Save(model, good, force: true,
            extraFiles: new Dictionary<string, string> { ["extra.json"] = Path.Combine(dir, "no-such-file.json") }));
        var after = Directory.GetFiles(good).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))).OrderBy(f => f.Item1).ToList();
        Assert.Equal(files.Select(f => f.Item1), after.Select(f => f.Item1));
        Assert.All(files.Zip(after), p => Assert.True(p.First.Item2.AsSpan().SequenceEqual(p.Second.Item2), $"{p.First.Item1} changed"));
        using var again = (RecurrentModel)ModelLoader.Load(good, ScalarType.Float32, CPU);
        Assert.True((again.lm_head.weight! - model.lm_head.weight!).abs().max().item<float>() >= 0.5f, "the old weights are still there");
        Assert.Equal(4, RunCheckpoints.ReadState(good).Step);
        Assert.Equal(good, RunCheckpoints.Latest(dir));
    }

    [Fact]
    public void Non_recurrent_and_random_init_runs_train_with_the_same_loop()
    {
        var plain = Run(Recipe("retrofit=null", "steps=6"), TestModels.TempDir());
        Assert.All(plain, m => Assert.Equal(1, m.MeanRecurrence));
        var random = Run(Recipe("retrofit.init=random", "steps=6"), TestModels.TempDir());
        Assert.Equal(6, random.Count);
        // Equal shapes, different starting points: the losses differ.
        var pretrained = Run(Recipe("steps=6"), TestModels.TempDir());
        Assert.NotEqual(pretrained[0].Loss, random[0].Loss);
    }

    [Fact]
    public void Metrics_carry_flops_by_the_method_formula()
    {
        var r = Recipe("steps=3");
        var m = Run(r, TestModels.TempDir());
        long perLayer = Presets.TinyTest.ParamsPerLayer;
        long tokens = (long)r.MicroBatch * r.SeqLen;
        double expected = 0;
        foreach (var s in m) expected += (double)Flops.PerToken(perLayer, (1, 2, 1), s.MeanRecurrence, r.BackpropDepth) * tokens;
        Assert.Equal(expected, m[^1].Flops, 1e-6 * expected);
    }

    [Theory]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"stepz\": 3}", "unknown key 'stepz'")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"steps\": 0}", "'steps' must be ≥ 1")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"optimizer\": \"sgd\"}", "'optimizer' must be muon or adamw")]
    [InlineData("{\"model\": \"preset:tiny\"}", "'data' must list at least one source")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"steps\": \"many\"}", "key 'steps' has the wrong type")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"fixed_depth\": \"3\"}", "'fixed_depth'")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"fixed_depth\": \"3,0\"}", "'fixed_depth' must be \"n,k\" with n ≥ 0 and k ≥ 1")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"fixed_depth\": [3, 2]}", "'fixed_depth' must be \"n,k\"")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"optimizer\": 1}", "'optimizer' must be muon or adamw")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"optimizer\": \"Muon\"}", "'optimizer' must be muon or adamw")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"curriculum\": \"cosine\"}", "'curriculum' must be linear, 1-sqrt or constant")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"curriculum\": null}", "'curriculum' must be linear, 1-sqrt or constant")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"retrofit\": {\"shape\": \"1,2,1\", \"init\": \"zeros\"}}", "'retrofit.init' must be pretrained or random")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"retrofit\": {\"shape\": \"1,2,1\", \"adapter_init\": \"eye\"}}", "'retrofit.adapter_init' must be default or identity")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"retrofit\": {\"shape\": \"4,8\"}}", "'retrofit.shape' must be three integers p,r,c")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {\"steps\": \"one-four\"}}", "'synth_data.steps' must be a range A-B")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {\"count\": 0}}", "'synth_data.count' must be ≥ 1")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {\"max_value\": 3}}", "'synth_data.max_value' must be in 10..1000000")]
    [InlineData("{\"model\": \"preset:tiny\", \"synth_data\": {}, \"phases\": [{\"optimizer\": \"sgd\"}]}", "(phase 2): 'optimizer' must be muon or adamw")]
    public void Bad_recipes_fail_with_the_key_named(string json, string expected)
    {
        var p = Path.Combine(TestModels.TempDir(), "r.json");
        File.WriteAllText(p, json);
        var e = Assert.Throws<RecurUserException>(() => TrainRecipe.Load(p));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith(p, e.Message);
    }

    [Fact]
    public void Choices_and_fixed_depth_are_parsed_once_into_typed_values_and_written_back_as_in_the_file()
    {
        var r = TrainRecipe.Load(SmokeRecipe, ["optimizer=adamw", "curriculum=linear", "fixed_depth=3,2", "retrofit.init=random", "retrofit.adapter_init=identity"]);
        Assert.Equal(OptimizerKind.AdamW, r.Optimizer);
        Assert.Equal(CurriculumKind.Linear, r.Curriculum);
        Assert.Equal<FixedDepth?>(new FixedDepth(3, 2), r.FixedDepth);
        Assert.Equal((RetrofitInit.Random, AdapterInit.Identity), (r.Retrofit!.Init, r.Retrofit.AdapterInit));
        var json = JsonNode.Parse(r.ToJson())!.AsObject();
        Assert.Equal(("adamw", "linear", "3,2"), (json["optimizer"]!.GetValue<string>(), json["curriculum"]!.GetValue<string>(), json["fixed_depth"]!.GetValue<string>()));
        Assert.Equal(("random", "identity"), (json["retrofit"]!["init"]!.GetValue<string>(), json["retrofit"]!["adapter_init"]!.GetValue<string>()));
        // A run folder's recipe.json reads back to the same recipe (resume compares the two).
        Assert.Equal(r.ToJson(), TrainRecipe.FromJson(json, "recipe.json").ToJson());
        Assert.Equal(CurriculumKind.OneMinusSqrt, TrainRecipe.Load(SmokeRecipe).Curriculum);
        Assert.Null(TrainRecipe.Load(SmokeRecipe).FixedDepth);
    }

    [Fact]
    public void The_recipe_curriculum_is_the_schedule_the_trainer_and_flops_use()
    {
        var r = TrainRecipe.Load(SmokeRecipe, ["steps=100", "train_recurrence=8", "curriculum=linear", "curriculum_fraction=0.5"]);
        var c = r.MakeCurriculum();
        Assert.Equal((CurriculumKind.Linear, 8, 100L, 50L), (c.Kind, c.MaxRecurrence, c.TotalSteps, c.WarmupSteps));
        var constant = TrainRecipe.Load(SmokeRecipe, ["curriculum=constant"]).MakeCurriculum();
        Assert.Equal(constant.MaxRecurrence, constant.MeanRecurrence(0));
    }

    [Fact]
    public void Set_overrides_reach_nested_keys_and_parse_json_values()
    {
        var r = TrainRecipe.Load(SmokeRecipe, ["retrofit.shape=2,1,1", "val_recurrences=[1,3]", "muon_lr=0.5"]);
        Assert.Equal("2,1,1", r.Retrofit!.Shape);
        Assert.Equal([1, 3], r.ValRecurrences);
        Assert.Equal(0.5, r.MuonLr);
    }

    [Fact]
    public void Phases_override_fields_and_keep_the_rest()
    {
        var p = Path.Combine(TestModels.TempDir(), "r.json");
        var obj = JsonNode.Parse(File.ReadAllText(SmokeRecipe), documentOptions: new() { CommentHandling = System.Text.Json.JsonCommentHandling.Skip })!.AsObject();
        obj["steps"] = 4;
        obj["checkpoint_every"] = 0;
        obj["phases"] = new JsonArray(new JsonObject { ["steps"] = 3, ["train_recurrence"] = 2 });
        File.WriteAllText(p, obj.ToJsonString());
        var r = TrainRecipe.Load(p);
        Assert.Equal(2, r.PhaseCount);
        Assert.Equal(3, r.Phase(1, p).Steps);
        Assert.Equal(2, r.Phase(1, p).TrainRecurrence);
        Assert.Equal(r.SeqLen, r.Phase(1, p).SeqLen);
        var m = Run(r, TestModels.TempDir());
        Assert.Equal(7, m.Count);
        Assert.Equal(1, m[4].Phase);
        Assert.Equal(1, m[4].Step); // schedules restart per phase
    }
}
