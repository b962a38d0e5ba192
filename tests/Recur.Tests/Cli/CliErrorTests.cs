using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>Bad input through the real CLI: one `error:` line naming the problem, a non-zero exit, no stack trace.</summary>
public class CliErrorTests
{
    internal static void OneLine(CliProcess.Result r, string expected)
    {
        Assert.Equal(1, r.Code);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void A_malformed_command_line_is_one_line_not_the_help_text()
    {
        OneLine(CliProcess.Run("generate", "--modle", "m"), "Unrecognized command or argument '--modle' (see 'recur generate --help')");
        OneLine(CliProcess.Run("generate", "--model", "m", "--prompt", "x", "--max-new-tokens", "99999999999"), "Cannot parse argument '99999999999'");
        OneLine(CliProcess.Run("frobnicate"), "Unrecognized command or argument 'frobnicate' (see 'recur --help')");
        var help = CliProcess.Run("generate", "--help");
        Assert.Equal(0, help.Code);
        Assert.Contains("--max-new-tokens", help.Stdout);
    }

    [Fact]
    public void Missing_model_path()
        => OneLine(CliProcess.Run("info", "--model", "/nonexistent/model"), "/nonexistent/model: model path not found");

    [Fact]
    public void Corrupted_weights_name_the_file()
    {
        var dir = TestModels.SaveRandom(Recur.Model.Presets.TinyTest);
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), [1, 2, 3]);
        OneLine(CliProcess.Run("generate", "--model", dir, "--prompt-ids", "1 2"), "model.safetensors: truncated safetensors file");
    }

    [Fact]
    public void Verbose_adds_the_stack_trace()
    {
        var r = CliProcess.Run("info", "--model", "/nonexistent/model", "--verbose");
        Assert.Equal(1, r.Code);
        Assert.Contains("   at ", r.Stderr);
    }

    [Fact]
    public void Bad_sampling_values_and_recurrences()
    {
        var dir = TestModels.SaveRandom(Recur.Model.Presets.TinyTest);
        OneLine(CliProcess.Run("generate", "--model", dir, "--prompt-ids", "1", "--top-p", "1.5"), "--top-p must be in (0, 1]");
        OneLine(CliProcess.Run("generate", "--model", dir, "--prompt-ids", "1 x"), "'x' is not an integer token id");
        var rec = Path.Combine(TestModels.TempDir(), "rec");
        Assert.Equal(0, CliProcess.Run("retrofit", "--model", dir, "--shape", "1,2,1", "--out", rec).Code);
        OneLine(CliProcess.Run("generate", "--model", rec, "--prompt-ids", "1", "--recurrences", "0"), "must be ≥ 1 (got 0)");
        OneLine(CliProcess.Run("retrofit", "--model", dir, "--shape", "1,2,1", "--out", rec), "already exists");
        OneLine(CliProcess.Run("retrofit", "--model", dir, "--shape", "4,4,4", "--out", rec + "2"), "needs 12 layers, but the base model has 4");
    }

    [Fact]
    public void Train_refuses_an_existing_run_folder_and_a_bad_recipe()
    {
        var dir = TestModels.TempDir();
        File.WriteAllText(Path.Combine(dir, "keep.txt"), "mine");
        var recipe = Path.Combine(SharedAssets.RepoRoot!, "recipes", "smoke.json");
        OneLine(CliProcess.Run("train", "--recipe", recipe, "--out", dir), "already exists and is not empty");
        Assert.Equal("mine", File.ReadAllText(Path.Combine(dir, "keep.txt")));
        OneLine(CliProcess.Run("train", "--recipe", recipe, "--out", dir + "-x", "--set", "steps=-1"), "'steps' must be ≥ 1");
        OneLine(CliProcess.Run("train", "--recipe", recipe, "--out", dir + "-y", "--set", "model=/nope"), "/nope: model path not found");
        Assert.False(Directory.Exists(dir + "-y"));
    }

    [Fact]
    public void A_bad_recipe_shape_is_named_by_its_recipe_key_not_the_retrofit_flag()
    {
        var recipe = Path.Combine(SharedAssets.RepoRoot!, "recipes", "smoke.json");
        var dir = TestModels.TempDir() + "-shape";
        var r = CliProcess.Run("train", "--recipe", recipe, "--out", dir, "--set", "retrofit.shape=4,8");
        OneLine(r, "'retrofit.shape' must be three integers p,r,c");
        Assert.DoesNotContain("--shape", r.Stderr);
        Assert.False(Directory.Exists(dir));
    }
}
