using System.Diagnostics;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>Flags and recipe values that used to be accepted and then ran for minutes or allocated without bound.</summary>
public sealed class FlagLimitTests
{
    static void OneLineError(CliProcess.Result r, string expected, TimeSpan within, Stopwatch sw)
    {
        Assert.Equal(1, r.Code);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines, l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains(expected, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.True(sw.Elapsed < within, $"took {sw.Elapsed}");
    }

    [Theory]
    [InlineData("--temperature", "Infinity", "--temperature must be a finite number")]
    [InlineData("--temperature", "NaN", "--temperature must be a finite number")]
    [InlineData("--threads", "100000", "--threads must be between 0")]
    [InlineData("--recurrences", "1000000000", "at most 1024")]
    public void Absurd_generation_flags_are_one_line_errors(string flag, string value, string expected)
    {
        string dir = ChatModels.Plain();
        var sw = Stopwatch.StartNew();
        OneLineError(CliProcess.Run("generate", "--model", dir, "--prompt-ids", "1 5", flag, value), expected, TimeSpan.FromMinutes(2), sw);
    }

    [Fact]
    public void A_seq_len_beyond_the_context_is_refused_before_the_run_folder_exists()
    {
        string root = TestModels.TempDir();
        string recipe = Path.Combine(root, "r.json");
        File.WriteAllText(recipe, """
            {"name": "t", "model": "preset:tiny", "tokenizer": "char", "retrofit": {"shape": "1,2,1"},
             "synth_data": {"count": 40, "steps": "1-2", "max_value": 20, "seed": 1},
             "steps": 4, "micro_batch": 2, "seq_len": 100000000, "train_recurrence": 2, "backprop_depth": 1}
            """);
        string outDir = Path.Combine(root, "out");
        var sw = Stopwatch.StartNew();
        OneLineError(CliProcess.Run("train", "--recipe", recipe, "--out", outDir), "seq_len 100000000 exceeds the model's context of 256", TimeSpan.FromMinutes(2), sw);
        Assert.False(Directory.Exists(outDir));
    }
}
