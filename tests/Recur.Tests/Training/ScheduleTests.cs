using System.Text.Json;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Training;

/// <summary>The recurrence curriculum (METHOD §3.3) and the WSD learning-rate factor (§4.5) against tests/fixtures/training/curriculum.json.</summary>
public class ScheduleTests
{
    static JsonElement Fixture { get; } = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "training", "curriculum.json"))).RootElement;

    public static TheoryData<int> CurriculumIndices => new() { 0, 1 };

    static RecurrenceCurriculum FromFixture(JsonElement c) => new(
        RecurrenceCurriculum.ParseKind(c.GetProperty("warmup_type").GetString()!), c.GetProperty("r_max").GetInt32(),
        c.GetProperty("total_steps").GetInt64(), c.GetProperty("warmup_frac").GetDouble());

    [Theory, MemberData(nameof(CurriculumIndices))]
    public void Curriculum_matches_reference_at_every_step(int index)
    {
        var c = Fixture.GetProperty("curricula")[index];
        var curriculum = FromFixture(c);
        Assert.Equal(c.GetProperty("warmup_steps").GetInt64(), curriculum.WarmupSteps);
        var values = c.GetProperty("values").EnumerateArray().Select(v => v.GetInt32()).ToArray();
        var raw = c.GetProperty("raw").EnumerateArray().Select(v => v.GetDouble()).ToArray();
        Assert.Equal(curriculum.TotalSteps, values.Length);
        for (int t = 0; t < values.Length; t++)
        {
            Assert.Equal(raw[t], curriculum.Raw(t));
            Assert.Equal(values[t], curriculum.MeanRecurrence(t));
        }
    }

    [Theory]
    [InlineData(CurriculumKind.Linear)]
    [InlineData(CurriculumKind.OneMinusSqrt)]
    public void Curriculum_starts_at_one(CurriculumKind kind)
    {
        Assert.Equal(1, new RecurrenceCurriculum(kind, 32, 50_000, 0.75).MeanRecurrence(0));
    }

    [Theory]
    [InlineData(CurriculumKind.Linear)]
    [InlineData(CurriculumKind.OneMinusSqrt)]
    public void Curriculum_is_monotone_and_reaches_max_at_warmup_end(CurriculumKind kind)
    {
        var c = new RecurrenceCurriculum(kind, 16, 1000, 0.5);
        Assert.Equal(500, c.WarmupSteps);
        for (int t = 1; t < 1000; t++) Assert.True(c.MeanRecurrence(t) >= c.MeanRecurrence(t - 1), $"decreases at t = {t}");
        Assert.True(c.MeanRecurrence(499) <= 16);
        Assert.All(Enumerable.Range(500, 500), t => Assert.Equal(16, c.MeanRecurrence(t)));
    }

    [Fact]
    public void One_minus_sqrt_curriculum_never_runs_ahead_of_linear()
    {
        var lin = new RecurrenceCurriculum(CurriculumKind.Linear, 32, 1000, 0.75);
        var sqrt = new RecurrenceCurriculum(CurriculumKind.OneMinusSqrt, 32, 1000, 0.75);
        // √v ≥ v on [0, 1], so f(u) = 1 − √(1 − u) ≤ u: the 1-sqrt mean stays at or below the linear one.
        for (int t = 0; t < 1000; t++) Assert.True(sqrt.MeanRecurrence(t) <= lin.MeanRecurrence(t), $"t = {t}");
        Assert.Equal(Math.Ceiling(32 * (1 - Math.Sqrt(0.5))), sqrt.MeanRecurrence(375));
        Assert.Equal(16, lin.MeanRecurrence(375));
    }

    [Fact]
    public void Constant_curriculum_is_max_from_the_first_step()
    {
        var c = RecurrenceCurriculum.Constant(32, 100);
        Assert.Equal(0, c.WarmupSteps);
        Assert.All(Enumerable.Range(0, 100), t => Assert.Equal(32, c.MeanRecurrence(t)));
    }

    [Fact]
    public void Zero_warmup_fraction_means_no_curriculum()
    {
        var c = new RecurrenceCurriculum(CurriculumKind.Linear, 8, 10, 0.0);
        Assert.All(Enumerable.Range(0, 10), t => Assert.Equal(8, c.MeanRecurrence(t)));
    }

    [Theory]
    [InlineData("quadratic")]
    [InlineData("")]
    public void Unknown_curriculum_name_is_a_user_error(string name)
    {
        var e = Assert.Throws<RecurUserException>(() => RecurrenceCurriculum.ParseKind(name));
        Assert.Contains("1-sqrt", e.Message);
    }

    [Theory]
    [InlineData(0, 100, 0.5)]
    [InlineData(4, 0, 0.5)]
    [InlineData(4, 100, 1.5)]
    [InlineData(4, 100, double.NaN)]
    public void Curriculum_rejects_bad_values(int rMax, long steps, double frac)
    {
        Assert.Throws<RecurUserException>(() => new RecurrenceCurriculum(CurriculumKind.Linear, rMax, steps, frac));
    }

    [Fact]
    public void Wsd_factor_matches_reference_at_every_step()
    {
        var w = Fixture.GetProperty("wsd");
        var s = new WsdSchedule(w.GetProperty("total_steps").GetInt64(), w.GetProperty("warmup_frac").GetDouble(),
            w.GetProperty("cooldown_frac").GetDouble(), w.GetProperty("min_lr_ratio").GetDouble());
        Assert.Equal(w.GetProperty("warmup_steps").GetInt64(), s.WarmupSteps);
        Assert.Equal(w.GetProperty("stable_steps").GetInt64(), s.StableSteps);
        Assert.Equal(w.GetProperty("decay_steps").GetInt64(), s.DecaySteps);
        var ts = w.GetProperty("t").EnumerateArray().Select(v => v.GetInt64()).ToArray();
        var factors = w.GetProperty("factor").EnumerateArray().Select(v => v.GetDouble()).ToArray();
        Assert.Equal(101, ts.Length);
        for (int i = 0; i < ts.Length; i++)
            Assert.True(factors[i] == s.Factor(ts[i]), $"t = {ts[i]}: expected {factors[i]:R}, got {s.Factor(ts[i]):R}");
    }

    [Fact]
    public void Wsd_warms_up_from_min_ratio_and_ends_at_min_ratio()
    {
        var s = new WsdSchedule(1000, 0.1, 0.5, 0.01);
        Assert.Equal(0.01, s.Factor(0));
        Assert.Equal(0.5 * 0.99 + 0.01, s.Factor(50), 15);
        Assert.Equal(1.0, s.Factor(100));
        Assert.Equal(1.0, s.Factor(499));
        Assert.Equal(1.0, s.Factor(500));
        Assert.Equal(0.01 + 0.99 * 0.5, s.Factor(750), 15);
        Assert.Equal(0.01, s.Factor(1000));
        Assert.Equal(0.01, s.Factor(5000));
    }

    [Fact]
    public void Wsd_rejects_warmup_and_cooldown_longer_than_the_run()
    {
        var e = Assert.Throws<RecurUserException>(() => new WsdSchedule(100, 0.5, 0.6));
        Assert.Contains("no room", e.Message);
    }
}
