using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Recur.Model;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Training;

/// <summary>FLOPs accounting (METHOD §6) against tests/fixtures/training/flops.json, by hand, and through <c>recur flops</c>.</summary>
public class FlopsTests
{
    static JsonElement Fixture { get; } = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "training", "flops.json"))).RootElement;
    static JsonElement Curricula { get; } = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "training", "curriculum.json"))).RootElement.GetProperty("curricula");

    static (int, int, int) FixtureShape => (Fixture.GetProperty("p").GetInt32(), Fixture.GetProperty("r").GetInt32(), Fixture.GetProperty("c").GetInt32());

    [Fact]
    public void Per_layer_counts_match_method_table()
    {
        // METHOD §2.6.
        Assert.Equal(44_044_288, Presets.TinyLlama11B.ParamsPerLayer);
        Assert.Equal(60_821_504, Presets.Llama32_1B.ParamsPerLayer);
        Assert.Equal(67_117_056, Presets.Olmo2_1B.ParamsPerLayer);
        Assert.Equal(Fixture.GetProperty("n_layer_params").GetInt64(), Presets.TinyLlama11B.ParamsPerLayer);
    }

    [Fact]
    public void Per_token_flops_match_reference_for_every_mean()
    {
        long n = Fixture.GetProperty("n_layer_params").GetInt64();
        int cap = Fixture.GetProperty("backprop_cap").GetInt32();
        var table = Fixture.GetProperty("flops_per_token");
        for (int r = 1; r <= 32; r++)
            Assert.Equal(table.GetProperty(r.ToString(CultureInfo.InvariantCulture)).GetInt64(), Flops.PerToken(n, FixtureShape, r, cap));
    }

    [Fact]
    public void Per_token_flops_by_hand()
    {
        // N_layer = 10, (1, 2, 1), cap 2. R = 3: N1 = (1 + 2·2 + 1)·10 = 60, N2 = 1·2·10 = 20 → 6·60 + 2·20 = 400.
        Assert.Equal((60L, 20L), Flops.Params(10, (1, 2, 1), 3, backpropCap: 2));
        Assert.Equal(400, Flops.PerToken(10, (1, 2, 1), 3, backpropCap: 2));
        // R = 1: N1 = (1 + 2 + 1)·10 = 40, N2 = 0 → 240.
        Assert.Equal(240, Flops.PerToken(10, (1, 2, 1), 1, backpropCap: 2));
        // Non-recurrent, 4 layers: 6·4·10.
        Assert.Equal(240, Flops.PerTokenNonRecurrent(10, 4));
    }

    [Fact]
    public void Baseline_flops_match_reference()
    {
        Assert.Equal(Fixture.GetProperty("baseline_flops_per_token_22_layers").GetInt64(), Flops.PerTokenNonRecurrent(Presets.TinyLlama11B.ParamsPerLayer, 22));
        var e = Flops.EstimateNonRecurrent(10, 4, steps: 3, tokensPerStep: 5);
        Assert.Equal((Int128)3600, e.Total);   // 240 · 3 · 5
    }

    public static TheoryData<int> Runs => new() { 0, 1 };

    [Theory, MemberData(nameof(Runs))]
    public void Curriculum_totals_match_reference(int index)
    {
        var run = Fixture.GetProperty("runs")[index];
        var c = Curricula[index];
        Assert.Equal(run.GetProperty("r_max").GetInt32(), c.GetProperty("r_max").GetInt32());
        var curriculum = new RecurrenceCurriculum(RecurrenceCurriculum.ParseKind(c.GetProperty("warmup_type").GetString()!), c.GetProperty("r_max").GetInt32(),
            c.GetProperty("total_steps").GetInt64(), c.GetProperty("warmup_frac").GetDouble());
        long n = Fixture.GetProperty("n_layer_params").GetInt64(), tokens = Fixture.GetProperty("tokens_per_step").GetInt64();
        Assert.Equal(run.GetProperty("histogram_step_counts").EnumerateArray().Select(x => x.GetInt64()), Flops.HistogramStepCounts(curriculum));
        Assert.Equal(Int128.Parse(run.GetProperty("total_flops_histogram").GetString()!, CultureInfo.InvariantCulture), Flops.Total(n, FixtureShape, curriculum, tokens));
        Assert.Equal(Int128.Parse(run.GetProperty("total_flops_direct").GetString()!, CultureInfo.InvariantCulture), Flops.TotalDirect(n, FixtureShape, curriculum, tokens));
    }

    [Fact]
    public void Curriculum_totals_by_hand()
    {
        // Linear to R_max 2 over half of 4 steps: W = 2, μ = 1, 1, 2, 2. N_layer 10, (1, 2, 1), cap 2: 240 at R 1, 360 at R 2.
        var c = new RecurrenceCurriculum(CurriculumKind.Linear, 2, 4, 0.5);
        Assert.Equal((Int128)((240 + 240 + 360 + 360) * 7), Flops.TotalDirect(10, (1, 2, 1), c, 7, backpropCap: 2));
        // RR's histogram: R 1 gets [⌊0⌋, ⌊0.5·2⌋) = 1 step, R 2 gets [1, 2) = 1 step plus the 2 after W.
        Assert.Equal([1L, 3L], Flops.HistogramStepCounts(c));
        Assert.Equal((Int128)((240 + 3 * 360) * 7), Flops.Total(10, (1, 2, 1), c, 7, backpropCap: 2));
        // A constant curriculum counts every step at R_max both ways.
        var k = RecurrenceCurriculum.Constant(3, 5);
        Assert.Equal((Int128)(400 * 5 * 7), Flops.Total(10, (1, 2, 1), k, 7, backpropCap: 2));
        Assert.Equal((Int128)(400 * 5 * 7), Flops.TotalDirect(10, (1, 2, 1), k, 7, backpropCap: 2));
    }

    [Fact]
    public void Paper_scale_totals_do_not_overflow()
    {
        var c = new RecurrenceCurriculum(CurriculumKind.OneMinusSqrt, 32, 50_000, 0.75);
        var e = Flops.Estimate(Presets.Olmo2_1B.ParamsPerLayer, (4, 6, 4), c, 1 << 20);
        Assert.True(e.Total > long.MaxValue);
        Assert.Equal(50_000, e.StepCounts.Sum());
    }

    // ---------------------------------------------------------------- recur flops

    static (int Code, string[] Lines, string Error) RunCli(params string[] args)
    {
        var r = CliProcess.Run(args);
        return (r.Code, r.Lines, r.Stderr);
    }

    [Fact]
    public void Flops_verb_prints_histogram_total_last()
    {
        var run = Fixture.GetProperty("runs")[0];   // R_max 32, 100 steps, 1-sqrt over 0.75
        var (code, lines, err) = RunCli("flops", "--base", "tinyllama-1.1b", "--shape", "4,8,4", "--train-recurrence", "32", "--steps", "100",
            "--tokens-per-step", "2^20", "--curriculum", "1-sqrt", "--curriculum-fraction", "0.75", "--backprop-depth", "8");
        Assert.True(code == 0, err);
        string expected = double.Parse(run.GetProperty("total_flops_histogram").GetString()!, CultureInfo.InvariantCulture).ToString("0.000e+00", CultureInfo.InvariantCulture);
        Assert.Equal(expected, lines[^1]);
        string perToken = ((double)Fixture.GetProperty("flops_per_token").GetProperty("32").GetInt64()).ToString("0.000e+00", CultureInfo.InvariantCulture);
        Assert.Contains(lines, l => l.StartsWith("per token", StringComparison.Ordinal) && l.Contains(perToken));
    }

    [Fact]
    public void Flops_verb_prices_the_non_recurrent_baseline()
    {
        var (code, lines, err) = RunCli("flops", "--base", "tinyllama-1.1b", "--non-recurrent", "--steps", "100", "--tokens-per-step", "1048576");
        Assert.True(code == 0, err);
        double total = (double)Fixture.GetProperty("baseline_flops_per_token_22_layers").GetInt64() * 100 * 1048576;
        Assert.Equal(total.ToString("0.000e+00", CultureInfo.InvariantCulture), lines[^1]);
    }

    [Theory]
    [InlineData("--base", "gpt-2", "--train-recurrence", "4")]
    [InlineData("--base", "tinyllama-1.1b")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "0")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--shape", "4,x,4")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--shape", "10,8,10")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--steps", "0")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--tokens-per-step", "lots")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--curriculum", "cosine")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--curriculum-fraction", "1.5")]
    [InlineData("--base", "tinyllama-1.1b", "--train-recurrence", "4", "--backprop-depth", "0")]
    [InlineData("--base", "tinyllama-1.1b", "--non-recurrent", "--train-recurrence", "4")]
    public void Flops_verb_rejects_bad_values_with_one_line(params string[] args)
    {
        var (code, lines, err) = RunCli(["flops", .. args]);
        Assert.Equal(1, code);
        Assert.Empty(lines);
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
