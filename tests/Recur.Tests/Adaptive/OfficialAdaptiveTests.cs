using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Recur.Tests.Adaptive;

/// <summary>
/// <c>adaptive:kl-official</c> against tests/reference/official_adaptive.py, an independent PyTorch implementation of
/// Huginn's <c>generate_with_adaptive_compute(criterion="kl")</c> with the "full" cache lookup, on the tiny Huginn model
/// with s_0 = 0 (init_values.std = 0, so neither side draws random numbers).
/// </summary>
public sealed class OfficialAdaptiveTests(ITestOutputHelper output)
{
    static JsonArray Cases() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "parity", "huginn-tiny-adaptive.json")))!["cases"]!.AsArray();

    /// <summary>The tiny Huginn folder with init_values.std = 0.</summary>
    static RecurrentModel ZeroStateModel()
    {
        var dir = Path.Combine(TestModels.TempDir(), "huginn-std0");
        Directory.CreateDirectory(dir);
        var src = Path.Combine(TestModels.FixturesDir, "models", "huginn-tiny");
        File.Copy(Path.Combine(src, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
        cfg["init_values"]!["std"] = 0.0;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        return RecurrentCheckpoint.Load(dir, ScalarType.Float32, CPU);
    }

    [Fact]
    public void Kl_official_reproduces_huginns_adaptive_generation_token_for_token()
    {
        using var m = ZeroStateModel();
        foreach (var c in Cases())
        {
            var prompts = c!["prompt"]!.AsArray().Select(r => r!.AsArray().Select(x => (int)x!).ToArray()).ToList();
            int max = (int)c["max"]!, n = (int)c["new_tokens"]!, b = prompts.Count;
            double threshold = (double)c["threshold"]!;
            var o = AdaptiveOptions.Parse($"adaptive:kl-official={threshold.ToString(System.Globalization.CultureInfo.InvariantCulture)},max={max}");
            var stats = new AdaptiveStats();
            float worst = 0;
            var refLogits = c["logits"]!.AsArray();
            var outs = AdaptiveGeneration.Generate(m.At(Recurrence.Fixed(max)), prompts, new GenerationOptions(n), o, stats,
                onLogits: (step, logits) =>
                {
                    var expected = tensor(refLogits[step]!.AsArray().SelectMany(r => r!.AsArray().Select(x => (float)x!)).ToArray(), [b, logits.shape[1]]);
                    worst = Math.Max(worst, (logits - expected).abs().max().item<float>());
                });
            var tokens = c["tokens"]!.AsArray();
            for (int r = 0; r < b; r++)
                Assert.Equal(tokens.Select(step => (int)step![r]!), outs[r]);
            // Depths of the decoded tokens (step 0 is the prompt), as a histogram like AdaptiveStats keeps.
            var depths = c["depths"]!.AsArray().Skip(1).SelectMany(step => step!.AsArray().Select(x => (int)x!)).ToList();
            var hist = new long[max + 1];
            foreach (var d in depths) hist[d]++;
            Assert.Equal(hist.AsEnumerable().Reverse().SkipWhile(x => x == 0).Reverse(), stats.Histogram);
            output.WriteLine($"batch {b}, threshold {threshold}: mean depth {stats.MeanIterations:F2}, max |Δlogit| {worst:E2}");
            Assert.True(worst <= 1e-4, $"max |Δlogit| = {worst}");
        }
    }

    [Fact]
    public void Kl_official_differs_from_recurs_own_kl_rule()
    {
        // Same threshold and max: Recur's kl (KL the other way round, prompt at max, last-available cache) decodes
        // other depths or tokens, so the official path is not Recur's rule under another name.
        using var m = ZeroStateModel();
        var c = Cases()[0]!;
        var prompts = c["prompt"]!.AsArray().Select(r => r!.AsArray().Select(x => (int)x!).ToArray()).ToList();
        var official = new AdaptiveStats();
        var own = new AdaptiveStats();
        var a = AdaptiveGeneration.Generate(m.At(Recurrence.Fixed(8)), prompts, new GenerationOptions(10), AdaptiveOptions.Parse("adaptive:kl-official=0.1,max=8"), official);
        var b = AdaptiveGeneration.Generate(m.At(Recurrence.Fixed(8)), prompts, new GenerationOptions(10), AdaptiveOptions.Parse("adaptive:kl=0.1,max=8"), own);
        Assert.True(!a[0].SequenceEqual(b[0]) || !official.Histogram.SequenceEqual(own.Histogram));
    }

    [Fact]
    public void Kl_official_parses_with_huginns_default_threshold_and_refuses_warm_and_latest()
    {
        var o = AdaptiveOptions.Parse("adaptive:kl-official,max=16");
        Assert.Equal((ExitCriterion.KlOfficial, 1e-3, 16), (o.Criterion, o.EffectiveThreshold, o.MaxIterations));
        Assert.Equal("adaptive:kl-official=0.001,max=16", o.ToString());
        var again = AdaptiveOptions.Parse(o.ToString());
        Assert.Equal((o.Criterion, o.EffectiveThreshold, o.ToString()), (again.Criterion, again.EffectiveThreshold, again.ToString()));
        Assert.Contains("drop warm=1", Assert.Throws<RecurUserException>(() => AdaptiveOptions.Parse("adaptive:kl-official,max=8,warm=1")).Message);
        Assert.Contains("cache=latest", Assert.Throws<RecurUserException>(() => AdaptiveOptions.Parse("adaptive:kl-official,max=8,cache=latest")).Message);
        Assert.Contains("two exit criteria", Assert.Throws<RecurUserException>(() => AdaptiveOptions.Parse("adaptive:kl,kl-official,max=8")).Message);
    }

    [Fact]
    public void Kl_official_runs_a_left_padded_batch()
    {
        // The official code has no padding mask; Recur keeps pads out of attention as everywhere else. A row of a
        // padded batch must still give tokens of the vocabulary and stop at max_new_tokens.
        using var m = ZeroStateModel();
        var outs = AdaptiveGeneration.Generate(m.At(Recurrence.Fixed(6)), [[5, 6, 7, 8, 9], [10, 11]], new GenerationOptions(5),
            AdaptiveOptions.Parse("adaptive:kl-official=0.1,max=6"));
        Assert.All(outs, o => Assert.Equal(5, o.Count));
        Assert.All(outs.SelectMany(o => o), t => Assert.InRange(t, 0, 127));
    }
}
