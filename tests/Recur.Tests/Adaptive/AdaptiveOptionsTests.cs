using Recur.Engine;
using Xunit;

namespace Recur.Tests.Adaptive;

public class AdaptiveOptionsTests
{
    [Fact]
    public void Specs_parse_with_defaults_and_round_trip()
    {
        var kl = AdaptiveOptions.Parse("adaptive:kl=5e-4,max=32");
        Assert.Equal((ExitCriterion.Kl, 5e-4, 32, false), (kl.Criterion, kl.EffectiveThreshold, kl.MaxIterations, kl.Warm));
        Assert.Equal(kl, AdaptiveOptions.Parse(kl.ToString()));
        var latent = AdaptiveOptions.Parse("adaptive:latent,max=16,warm=1,cache=latest");
        Assert.Equal((ExitCriterion.Latent, 0.03, 16, true, AdaptiveCacheMode.Latest),
            (latent.Criterion, latent.EffectiveThreshold, latent.MaxIterations, latent.Warm, latent.Cache));
        Assert.Equal("adaptive:latent=0.03,max=16,warm=1,cache=latest", latent.ToString());
        Assert.Equal(5, AdaptiveOptions.Parse("adaptive:argmax,max=32").EffectiveThreshold);
        Assert.Equal(1e-3, AdaptiveOptions.Parse("adaptive:entropy,max=4").EffectiveThreshold);
        Assert.Equal(ExitCriterion.None, AdaptiveOptions.Parse("adaptive:max=8").Criterion);
    }

    [Theory]
    [InlineData("adaptive:kl=5e-4", "needs max=T")]
    [InlineData("adaptive:kl=5e-4,latent=0.1,max=8", "two exit criteria")]
    [InlineData("adaptive:kl=abc,max=8", "not a number")]
    [InlineData("adaptive:kl=-1,max=8", "must be ≥ 0")]
    [InlineData("adaptive:argmax=2.5,max=8", "whole number")]
    [InlineData("adaptive:kl,max=0", "max must be ≥ 1")]
    [InlineData("adaptive:foo=1,max=8", "unknown key 'foo'")]
    [InlineData("adaptive:kl,max=8,warm=yes", "warm must be 1 or 0")]
    public void Bad_specs_fail_with_a_one_line_message(string spec, string fragment)
    {
        var e = Assert.Throws<RecurUserException>(() => AdaptiveOptions.Parse(spec));
        Assert.Contains(fragment, e.Message);
        Assert.DoesNotContain("--", e.Message); // the library's own name; the CLI passes its flag
        Assert.Contains("--recurrences", Assert.Throws<RecurUserException>(() => AdaptiveOptions.Parse(spec, "--recurrences")).Message);
    }

    [Fact]
    public void Recurrence_lists_mix_integers_and_adaptive_specs()
    {
        var list = RecurrenceSetting.ParseList("1,2,adaptive:kl=5e-4,max=32,4,adaptive:latent=0.03,max=16,2");
        Assert.Equal(["1", "2", "adaptive:kl=0.0005,max=32", "4", "adaptive:latent=0.03,max=16"], list.Select(x => x.Key));
        Assert.Equal(32, list[2].Adaptive!.MaxIterations);
        Assert.Equal(4, list[3].Fixed);
        Assert.Throws<RecurUserException>(() => RecurrenceSetting.ParseList("1,x"));
        Assert.Throws<RecurUserException>(() => RecurrenceSetting.ParseList("0"));
        Assert.Throws<RecurUserException>(() => RecurrenceSetting.ParseList("adaptive"));
    }
}
