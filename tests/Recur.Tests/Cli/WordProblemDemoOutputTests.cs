using Recur.Cli;
using Recur.Demo;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>What <c>recur demo --task word-problems</c> prints and draws, from a finished run's numbers.</summary>
public sealed class WordProblemDemoOutputTests
{
    static DemoResult FakeRun()
    {
        SortedDictionary<int, SortedDictionary<int, double>> Acc(IEnumerable<int> ts, double p) =>
            new(ts.ToDictionary(t => t, t => new SortedDictionary<int, double>(Enumerable.Range(1, 4).ToDictionary(d => d, d => p / d + 0.01 * t))));
        DemoModelResult Model(string name, bool recurrent, double p) => new()
        {
            Name = name, Description = "", Recurrent = recurrent, Steps = 10, TrainFlops = 1.23e12,
            Accuracy = Acc(recurrent ? [1, 2, 4, 8] : [1], p),
            OverallAccuracy = new((recurrent ? new[] { 1, 2, 4, 8 } : [1]).ToDictionary(t => t, t => p / 2 + 0.01 * t)),
            ValLoss = new((recurrent ? new[] { 1, 2, 4, 8 } : [1]).ToDictionary(t => t, _ => 1.234)),
            Curve = [.. Enumerable.Range(1, 20).Select(s => (s * 6.1e10, 3.0 / s))],
        };
        return new DemoResult(DemoOptions.QuickRun, [Model("base (pretrained only)", false, 0.4), Model("baseline (non-recurrent)", false, 0.5),
            Model("recurrent from base", true, 0.45), Model("recurrent random init", true, 0.2)], 1, "test");
    }

    [Fact]
    public void Redirected_summary_keeps_each_row_of_the_table_on_one_line()
    {
        var r = FakeRun();
        var piped = new StringWriter();
        DemoCommand.PrintSummary(r, Common.OutConsole(piped, redirected: true));
        var lines = piped.ToString().Split('\n');
        // Every model's row, with its last column (answer loss), is one line: nothing is folded into a second one.
        foreach (var m in r.Models)
            Assert.Contains(lines, l => l.Contains(m.Name, StringComparison.Ordinal) && l.Contains("1.234", StringComparison.Ordinal));

        // At Spectre's assumed 80 columns the same table folds its cells (what piped output used to get).
        var narrow = new StringWriter();
        var console = Common.OutConsole(narrow, redirected: false);
        console.Profile.Width = 80;
        DemoCommand.PrintSummary(r, console);
        Assert.DoesNotContain(narrow.ToString().Split('\n'), l => l.Contains("baseline (non-recurrent)", StringComparison.Ordinal));
    }

    [Fact]
    public void Figures_are_written_for_a_finished_run()
    {
        string dir = TestModels.TempDir("recur-wp-plots");
        DemoCommand.WordProblemPlots(FakeRun(), dir);
        foreach (var png in new[] { "accuracy_vs_recurrence.png", "loss_vs_flops.png" })
            Assert.True(File.ReadAllBytes(Path.Combine(dir, png)) is [0x89, (byte)'P', (byte)'N', (byte)'G', ..], png);
    }
}
