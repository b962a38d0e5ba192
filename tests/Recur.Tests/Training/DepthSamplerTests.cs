using System.Text.Json;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Training;

/// <summary>The depth sampler (METHOD §3.1) against PyTorch's draws in tests/fixtures/training/depth_sampler.json.</summary>
public class DepthSamplerTests
{
    public sealed record FixtureSample(int MeanRecurrence, long DataStep, int S, long SeedN, float Lambda, string LambdaHex, int P, int N, int K);

    public static IReadOnlyList<FixtureSample> Fixture { get; } = LoadFixture();

    static IReadOnlyList<FixtureSample> LoadFixture()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "training", "depth_sampler.json")));
        return doc.RootElement.GetProperty("samples").EnumerateArray().Select(e => new FixtureSample(
            e.GetProperty("mean_recurrence").GetInt32(), e.GetProperty("data_step").GetInt64(), e.GetProperty("backprop_depth_s").GetInt32(),
            e.GetProperty("seed_n").GetInt64(), (float)e.GetProperty("lambda").GetDouble(), e.GetProperty("lambda_f32_hex").GetString()!,
            e.GetProperty("p").GetInt32(), e.GetProperty("n").GetInt32(), e.GetProperty("k").GetInt32())).ToList();
    }

    static string Hex(float f) => BitConverter.SingleToInt32Bits(f).ToString("x8");

    /// <summary>
    /// The bit-for-bit comparison below can only catch a wrong sampler if the fixture's draws differ from each other
    /// and depend on the data step: several means, several (n, k), and draws one step off that do not match.
    /// </summary>
    [Fact]
    public void Fixture_draws_vary_enough_that_matching_them_is_not_vacuous()
    {
        Assert.Equal(30, Fixture.Count);
        Assert.True(Fixture.Select(f => f.MeanRecurrence).Distinct().Count() >= 3, "fewer than three mean recurrences");
        Assert.True(Fixture.Select(f => (f.N, f.K)).Distinct().Count() >= 5, "fewer than five distinct (n, k)");
        var sampler = new DepthSampler();
        int offByOneStepMatches = Fixture.Count(f => Hex((float)sampler.Sample(f.MeanRecurrence, f.DataStep + 1).Lambda) == f.LambdaHex);
        Assert.True(offByOneStepMatches == 0, $"{offByOneStepMatches} draws match one data step later");
    }

    [Fact]
    public void Sampler_seed_matches_reference_seed()
    {
        foreach (var f in Fixture) Assert.Equal(f.SeedN, DepthSampler.Seed(f.DataStep));
    }

    [Fact]
    public void Sampler_draws_equal_pytorch_draws_bit_for_bit()
    {
        var sampler = new DepthSampler();
        var mismatches = new List<string>();
        foreach (var f in Fixture)
        {
            var d = sampler.Sample(f.MeanRecurrence, f.DataStep);
            string got = Hex((float)d.Lambda);
            if (got != f.LambdaHex || d.N != f.N || d.K != f.K)
                mismatches.Add($"mean {f.MeanRecurrence} step {f.DataStep}: got λ={d.Lambda} ({got}) n={d.N} k={d.K}, expected λ={f.Lambda} ({f.LambdaHex}) n={f.N} k={f.K}");
        }
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }

    [Fact]
    public void Sampler_is_identical_for_equal_data_step()
    {
        var a = new DepthSampler();
        var b = new DepthSampler();
        foreach (long step in new long[] { 1, 7, 4242, 1_000_000 })
        {
            var first = a.Sample(16, step);
            Assert.Equal(first, a.Sample(16, step));
            Assert.Equal(first, b.Sample(16, step));
        }
    }

    [Fact]
    public void Sampler_varies_with_data_step()
    {
        var s = new DepthSampler();
        var draws = Enumerable.Range(1, 50).Select(step => s.Sample(16, step)).ToList();
        Assert.True(draws.Select(d => d.Total).Distinct().Count() > 5, "50 consecutive data steps should not give the same few depths");
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    public void Sampler_mean_total_depth_is_mean_recurrence_plus_one(int mean)
    {
        // E[λ] = t + s = μ_rec, so E[Poisson(λ) + 1] = μ_rec + 1 (METHOD §3.1). Var[p] = μ + μ²(e^{σ²} − 1);
        // the tolerance is five standard errors of the sample mean.
        const int n = 3000;
        var s = new DepthSampler();
        double avg = Enumerable.Range(1, n).Average(step => (double)s.Sample(mean, step).Total);
        double se = Math.Sqrt((mean + mean * mean * (Math.Exp(0.25) - 1)) / n);
        Assert.True(Math.Abs(avg - (mean + 1)) < 5 * se, $"mean n+k = {avg}, expected {mean + 1} ± {5 * se:0.###}");
    }

    [Theory]
    [InlineData(1, 8)]
    [InlineData(3, 8)]
    [InlineData(8, 8)]
    [InlineData(32, 8)]
    [InlineData(32, 4)]
    public void Sampler_grad_iterations_never_exceed_backprop_depth_or_mean(int mean, int depth)
    {
        var s = new DepthSampler();
        for (int step = 1; step <= 300; step++)
        {
            var d = s.Sample(mean, step, depth);
            Assert.InRange(d.K, 1, Math.Min(depth, mean));
            Assert.True(d.N >= 0);
            // n > 0 only once the grad part is full.
            if (d.N > 0) Assert.Equal(Math.Min(depth, mean), d.K);
        }
    }

    [Fact]
    public void Sampler_treats_non_positive_mean_as_one()
    {
        var s = new DepthSampler();
        Assert.Equal(s.Sample(1, 17), s.Sample(0, 17));
        Assert.Equal(s.Sample(1, 17), s.Sample(-3, 17));
    }

    [Fact]
    public void Fixed_depth_ignores_mean_and_step()
    {
        var s = DepthSampler.FixedDepth(24, 8);
        Assert.True(s.IsFixed);
        var d = s.Sample(1, 99);
        Assert.Equal((24, 8), (d.N, d.K));
        Assert.Equal(d with { Lambda = 0 }, s.Sample(32, 1) with { Lambda = 0 });
        Assert.True(double.IsNaN(d.Lambda));
    }

    [Theory]
    [InlineData(-1, 8)]
    [InlineData(4, 0)]
    public void Fixed_depth_rejects_bad_values(int n, int k)
    {
        Assert.Throws<RecurUserException>(() => DepthSampler.FixedDepth(n, k));
    }
}
