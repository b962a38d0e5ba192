using System.CommandLine;
using Recur.Cli;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>Defaults that fit the model and the run: reply budgets from the context, a finished run left alone.</summary>
public sealed class DefaultsTests
{
    [Fact]
    public void Chat_picks_a_reply_budget_that_fits_a_small_context_and_says_so()
    {
        // The test model has a 256-token context: the usual 512-token budget would leave no room for the conversation.
        var outw = new StringWriter();
        var errw = new StringWriter();
        var root = new RootCommand();
        root.Subcommands.Add(ChatCommand.Create(new StringReader("the cat\n/exit\n"), outw, errw));
        int code = root.Parse(["chat", "--model", ChatModels.Plain(), "--seed", "1"]).Invoke();
        Assert.True(code == 0, errw.ToString());
        Assert.Contains("note: --max-new-tokens 64: a quarter of the model's 256-token context", errw.ToString());
    }

    [Fact]
    public void Resuming_a_finished_run_says_there_is_nothing_to_do()
    {
        string dir = Path.Combine(TestModels.TempDir(), "run");
        var recipe = Path.Combine(SharedAssets.RepoRoot!, "recipes", "smoke.json");
        var first = CliProcess.Run("train", "--recipe", recipe, "--out", dir, "--set", "steps=2", "--set", "val_every=0", "--set", "checkpoint_every=0");
        Assert.True(first.Code == 0, first.Stderr);
        var metrics = File.ReadAllText(Path.Combine(dir, "metrics.jsonl"));
        var again = CliProcess.Run("train", "--resume", dir);
        Assert.True(again.Code == 0, again.Stderr);
        Assert.Contains($"nothing to do: {dir} has finished (phase 1 of 1, step 2 of 2)", again.Stdout);
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(dir, "metrics.jsonl")));
        Assert.True(Directory.Exists(Path.Combine(dir, "model")));
    }
}
