using Recur.Data;
using Recur.Checkpoints;
using Recur.Tests.Support;
using Recur.Tokenization;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Training;

/// <summary>
/// Run folders after a kill: leftovers of interrupted saves are removed on resume, a run stopped before its first
/// checkpoint can be started again without --force, and a recipe that cannot run leaves no folder behind.
/// </summary>
public sealed class RunFolderTests
{
    /// <summary>A run folder as a kill during the second save leaves it: one good checkpoint and the debris of another.</summary>
    static string KilledRun(bool withCheckpoint)
    {
        string dir = Path.Combine(TestModels.TempDir(), "run");
        Directory.CreateDirectory(Path.Combine(dir, ".scratch-0123abcd", "sub"));
        File.WriteAllText(Path.Combine(dir, ".scratch-0123abcd", "optimizer.safetensors"), "partial");
        File.WriteAllText(Path.Combine(dir, ".metrics.jsonl.tmp-77-abcd"), "partial");
        File.WriteAllText(Path.Combine(dir, TrainRun.RecipeFile), "{}");
        File.WriteAllText(Path.Combine(dir, TrainRun.MetricsFile), "{\"global_step\": 1}\n");
        Directory.CreateDirectory(Path.Combine(dir, "checkpoints", ".phase1-step000020.tmp-77-abcd"));
        File.WriteAllText(Path.Combine(dir, "checkpoints", ".phase1-step000020.tmp-77-abcd", "model.safetensors"), "partial");
        if (withCheckpoint)
        {
            Directory.CreateDirectory(Path.Combine(dir, "checkpoints", "phase1-step000010"));
            File.WriteAllText(Path.Combine(dir, "checkpoints", "phase1-step000010", RunCheckpoints.StateFile), "{}");
        }
        return dir;
    }

    [Fact]
    public void Leftovers_of_interrupted_saves_are_removed_and_nothing_else()
    {
        string dir = KilledRun(withCheckpoint: true);
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "mine");
        var removed = TrainRun.CleanLeftovers(dir);
        Assert.Equal(3, removed.Count);
        Assert.False(Directory.Exists(Path.Combine(dir, ".scratch-0123abcd")));
        Assert.False(File.Exists(Path.Combine(dir, ".metrics.jsonl.tmp-77-abcd")));
        Assert.False(Directory.Exists(Path.Combine(dir, "checkpoints", ".phase1-step000020.tmp-77-abcd")));
        Assert.True(File.Exists(Path.Combine(dir, "notes.txt")));
        Assert.True(File.Exists(Path.Combine(dir, TrainRun.MetricsFile)));
        Assert.True(Directory.Exists(Path.Combine(dir, "checkpoints", "phase1-step000010")));
    }

    [Fact]
    public void A_run_without_a_checkpoint_has_nothing_to_resume_unless_the_user_put_something_there()
    {
        Assert.True(TrainRun.NothingToResume(KilledRun(withCheckpoint: false)));
        Assert.False(TrainRun.NothingToResume(KilledRun(withCheckpoint: true)));
        string mine = KilledRun(withCheckpoint: false);
        File.WriteAllText(Path.Combine(mine, "notes.txt"), "mine");
        Assert.False(TrainRun.NothingToResume(mine));
    }

    static string Recipe(string dir, string data)
    {
        string path = Path.Combine(dir, "r.json");
        File.WriteAllText(path, $$"""
            {"name": "t", "model": "preset:tiny", "tokenizer": "char", "retrofit": {"shape": "1,2,1"},
             "data": [{"path": "{{data}}", "format": "text"}], "steps": 8, "micro_batch": 2, "seq_len": 32, "warmup": 0.1, "cooldown": 0.3,
             "train_recurrence": 2, "backprop_depth": 1, "checkpoint_every": 4, "keep_checkpoints": 1}
            """);
        return path;
    }

    [Fact]
    public void A_missing_data_file_fails_before_the_run_folder_is_created()
    {
        string root = TestModels.TempDir();
        RefusedBeforeTheRunFolder(root, ["--recipe", Recipe(root, Path.Combine(root, "nope.txt"))], "nope.txt", "does not exist");
    }

    /// <summary><c>recur train ARGS --out root/out</c> fails with one error naming <paramref name="expected"/> and leaves no run folder.</summary>
    static void RefusedBeforeTheRunFolder(string root, string[] args, params string[] expected)
    {
        string outDir = Path.Combine(root, "out");
        var r = CliProcess.Run(["train", .. args, "--out", outDir]);
        Assert.Equal(1, r.Code);
        foreach (var e in expected) Assert.Contains(e, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(Directory.Exists(outDir), "the run folder was created for a recipe that cannot run");
    }

    [Fact]
    public void An_lr_schedule_that_does_not_fit_fails_before_the_run_folder_is_created()
    {
        string root = TestModels.TempDir();
        string data = Path.Combine(root, "d.txt");
        File.WriteAllText(data, string.Concat(Enumerable.Repeat("the cat sat on the mat. ", 40)));
        // 3 steps with warm-up 0.5 and cool-down 0.5: ⌈1.5⌉ + ⌈1.5⌉ = 4 whole steps do not fit, although 0.5 + 0.5 ≤ 1.
        RefusedBeforeTheRunFolder(root, ["--recipe", Recipe(root, data), "--set", "steps=3", "--set", "warmup=0.5", "--set", "cooldown=0.5"], "leave no room in 3 steps");
    }

    [Fact]
    public void A_later_phase_with_a_bad_override_is_refused_when_the_recipe_is_loaded()
    {
        string root = TestModels.TempDir();
        string path = Recipe(root, Path.Combine(root, "d.txt"));
        var e = Assert.Throws<RecurUserException>(() => TrainRecipe.Load(path, ["phases=[{\"steps\": 0}]"]));
        Assert.Contains("phase 2", e.Message);
        Assert.Contains("'steps' must be ≥ 1", e.Message);
    }

    [Fact]
    public void A_run_stopped_before_its_first_checkpoint_starts_again_without_force_and_a_char_tokenizer_reads_a_data_file()
    {
        string root = TestModels.TempDir();
        string data = Path.Combine(root, "d.txt");
        File.WriteAllText(data, string.Join("\n", Enumerable.Range(0, 200).Select(i => $"{i} plus {i} is {2 * i}.")));
        string outDir = KilledRun(withCheckpoint: false);
        string recipe = Recipe(root, data);
        File.Copy(recipe, Path.Combine(outDir, TrainRun.RecipeFile), overwrite: true);
        var resume = CliProcess.Run("train", "--resume", outDir);
        Assert.Equal(1, resume.Code);
        Assert.Contains("start it again with --recipe", resume.Stderr);
        Assert.DoesNotContain(Directory.GetFileSystemEntries(outDir), e => Path.GetFileName(e).StartsWith(".scratch-", StringComparison.Ordinal));

        var again = CliProcess.RunWith(null, new Dictionary<string, string> { ["RECUR_DATA_CACHE"] = Path.Combine(root, "cache") },
            "train", "--recipe", recipe, "--out", outDir);
        Assert.True(again.Code == 0, again.Stderr + again.Stdout);
        Assert.Contains("starting it again", again.Stderr);
        Assert.NotNull(RunCheckpoints.Latest(outDir));
    }

    [Fact]
    public void The_char_tokenizer_has_an_identity_for_the_data_cache()
    {
        var tok = new CharTokenizerAdapter(new CharTokenizer(), "char");
        var a = TokenizerIdentity.Of(tok);
        Assert.Equal(64, a.Sha256.Length);
        Assert.Equal(a.Sha256, TokenizerIdentity.Of(new CharTokenizerAdapter(new CharTokenizer(), "char")).Sha256);
    }
}
