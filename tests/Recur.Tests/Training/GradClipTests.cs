using Recur.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Parameter = TorchSharp.Modules.Parameter;

namespace Recur.Tests.Training;

/// <summary>Global-norm gradient clipping (METHOD §4.6).</summary>
public class GradClipTests
{
    [Fact]
    public void Clip_scales_by_max_over_norm_when_norm_is_large()
    {
        // ‖(3, 4, 12)‖ = 13 across the two tensors.
        var a = tensor(new float[] { 3, 4 });
        var b = tensor(new float[] { 12 });
        var r = GradClip.ClipGlobalNorm([a, b], 1.0);
        Assert.Equal(13.0, r.Norm, 5);
        Assert.Equal(1.0 / (13.0 + 1e-6), r.Coefficient, 12);
        Assert.True(r.IsFinite);
        Assert.Equal(3f / 13f, a[0].item<float>(), 5);
        Assert.Equal(12f / 13f, b[0].item<float>(), 5);
        Assert.Equal(1.0, Math.Sqrt(a.square().sum().item<float>() + b.square().sum().item<float>()), 5);
    }

    [Fact]
    public void Clip_leaves_small_gradients_untouched()
    {
        var a = tensor(new float[] { 0.3f, 0.4f });
        var r = GradClip.ClipGlobalNorm([a], 1.0);
        Assert.Equal(0.5, r.Norm, 6);
        Assert.Equal(1.0, r.Coefficient);
        Assert.Equal(new[] { 0.3f, 0.4f }, a.data<float>().ToArray());
    }

    [Fact]
    public void Clip_matches_torchsharp_clip_grad_norm()
    {
        var gen = new Generator(5);
        var ps = new[] { new Parameter(zeros(7, 5)), new Parameter(zeros(11)), new Parameter(zeros(3, 2, 4)) };
        var gs = ps.Select(p => randn(p.shape, generator: gen) * 3).ToArray();
        var ours = gs.Select(g => g.clone()).ToArray();
        for (int i = 0; i < ps.Length; i++) (ps[i] * gs[i]).sum().backward();
        double theirs = nn.utils.clip_grad_norm_(ps, 2.0);
        var r = GradClip.ClipGlobalNorm(ours, 2.0);
        Assert.Equal(theirs, r.Norm, 4);
        for (int i = 0; i < ps.Length; i++)
            Assert.True((ps[i].grad! - ours[i]).abs().max().item<float>() <= 1e-6);
    }

    [Fact]
    public void Clip_reports_non_finite_norm_and_does_not_touch_gradients()
    {
        var a = tensor(new float[] { 1, float.NaN });
        var b = tensor(new float[] { 5 });
        var r = GradClip.ClipGlobalNorm([a, b], 1.0);
        Assert.False(r.IsFinite);
        Assert.True(double.IsNaN(r.Coefficient));
        Assert.Equal(5f, b[0].item<float>());
    }

    [Fact]
    public void Clip_of_no_gradients_is_zero_norm()
    {
        Assert.Equal(new ClipResult(0, 1), GradClip.ClipGlobalNorm([], 1.0));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    [InlineData(double.NaN)]
    public void Clip_rejects_non_positive_max_norm(double maxNorm)
    {
        Assert.Throws<RecurUserException>(() => GradClip.ClipGlobalNorm([ones(2)], maxNorm));
    }
}
