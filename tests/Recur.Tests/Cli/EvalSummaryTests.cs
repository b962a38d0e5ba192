using System.Text.Json.Nodes;
using Recur.Cli;
using Recur.Evaluation;
using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Cli;

public class EvalSummaryTests
{
    const string Adaptive = "adaptive:kl=0.0005,max=8";

    static EvalReport Sweep()
    {
        var info = EvalTasks.Get("gsm8k");
        var report = new EvalReport(new JsonObject(), new JsonObject());
        report.AddTask(info, "test.jsonl", 100, new Dictionary<string, string>(), []);
        foreach (var (t, i) in new[] { "1", "2", "4", Adaptive }.Select((t, i) => (t, i)))
        {
            var metrics = new Dictionary<string, double>();
            foreach (var m in info.PlotMetrics) { metrics[m] = 0.1 * (i + 1); metrics[EvalReport.StderrKey(m)] = 0.0123; }
            report.AddRun(info.Name, t, new EvalResult(info.Name, 100, metrics, new Dictionary<string, string>(), []), "s.jsonl", 1, [],
                meanIterations: i == 3 ? 3.51 : double.Parse(t));
        }
        return report;
    }

    static string[] Render(EvalReport report, int width)
    {
        var sw = new StringWriter();
        var console = Common.OutConsole(sw, redirected: false);
        console.Profile.Width = width;
        console.Write(report.Summary(width));
        return sw.ToString().Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0).ToArray();
    }

    [Fact]
    public void A_sweep_that_does_not_fit_80_columns_prints_one_line_per_t_and_metric_with_no_cell_folded()
    {
        var lines = Render(Sweep(), 80);
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"{l.Length} columns: {l}"));
        var info = EvalTasks.Get("gsm8k");
        foreach (var m in info.PlotMetrics)
            Assert.Equal(4, lines.Count(l => l.Contains(m, StringComparison.Ordinal) && l.Contains("± 0.0123", StringComparison.Ordinal)));
        Assert.Contains(lines, l => l.Contains(Adaptive + "  ", StringComparison.Ordinal) && l.Contains("  0.4000 ± 0.0123", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("mean iterations / token", StringComparison.Ordinal) && l.Contains("3.51", StringComparison.Ordinal));
        Assert.Equal("gsm8k", lines[0].Trim());
    }

    [Fact]
    public void A_summary_that_fits_is_one_table_with_a_column_per_t()
    {
        var lines = Render(Sweep(), 200);
        var head = Assert.Single(lines, l => l.Contains("T=1", StringComparison.Ordinal));
        Assert.Contains(Adaptive, head);
        Assert.Contains("metric", head);
        Assert.All(lines, l => Assert.True(l.Length <= 200));
    }
}
