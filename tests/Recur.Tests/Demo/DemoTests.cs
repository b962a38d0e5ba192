using System.Text.Json;
using Recur.Demo;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Demo;

[Collection("Exclusive")]
public class DemoTests
{
    /// <summary>The CI smoke run of `recur demo --quick`: the artefacts exist and are well formed (not the numbers).</summary>
    [Fact]
    public void Quick_demo_writes_report_plots_and_results()
    {
        var dir = Path.Combine(TestModels.TempDir(), "demo");
        var r = CliProcess.Run("demo", "--quick", "--out", dir);
        Assert.True(r.Code == 0, r.Stderr + r.Stdout);
        foreach (var f in new[] { "report.md", "accuracy_vs_recurrence.png", "loss_vs_flops.png", "results.json" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        foreach (var png in new[] { "accuracy_vs_recurrence.png", "loss_vs_flops.png" })
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(Path.Combine(dir, png)).Take(4));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "results.json")));
        var models = doc.RootElement.GetProperty("models").EnumerateArray().ToList();
        Assert.Equal(4, models.Count);
        var rec = models.Single(m => m.GetProperty("name").GetString()!.Contains("from base"));
        Assert.True(rec.GetProperty("recurrent").GetBoolean());
        Assert.Equal(["T=1", "T=2", "T=4", "T=8"], rec.GetProperty("overall_accuracy").EnumerateObject().Select(p => p.Name));
        // Equal training FLOPs for the baseline and the recurrent model, within one optimizer step.
        double fb = models.Single(m => m.GetProperty("name").GetString()!.StartsWith("baseline")).GetProperty("train_flops").GetDouble();
        double fr = rec.GetProperty("train_flops").GetDouble();
        Assert.InRange(fb / fr, 0.95, 1.05);
        var report = File.ReadAllText(Path.Combine(dir, "report.md"));
        Assert.Contains("## Accuracy (%) against test-time recurrence T, per difficulty", report);
        Assert.Contains("## What the numbers show", report);
        // Refuses to overwrite without --force.
        var again = CliProcess.Run("demo", "--quick", "--out", dir);
        Assert.Equal(1, again.Code);
        Assert.Contains("--force", again.Stderr);
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
