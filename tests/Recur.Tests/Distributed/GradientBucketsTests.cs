using Recur.Distributed;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Distributed;

public class GradientBucketsTests
{
    static List<GradientBucket> Plan(long cap, params (long, ScalarType)[] t) => GradientBuckets.Plan(t, cap);

    [Fact]
    public void Consecutive_tensors_share_a_bucket_until_the_cap()
    {
        // fp32 sizes 40, 40, 40, 400, 20 bytes with a 100-byte cap: 40+40 fits, a third 40 would not; 40 alone;
        // 400 exceeds the cap so it is alone; the last one closes the plan.
        const ScalarType f = ScalarType.Float32;
        var b = Plan(100, (10, f), (10, f), (10, f), (100, f), (5, f));
        Assert.Equal([(0, 2), (2, 1), (3, 1), (4, 1)], b.Select(x => (x.Start, x.Count)));
        Assert.Equal([20L, 10, 100, 5], b.Select(x => x.Elements));
        Assert.Equal([0L, 10], b[0].Offsets);
    }

    [Fact]
    public void A_bucket_that_reaches_the_cap_exactly_is_closed()
    {
        const ScalarType f = ScalarType.Float32;
        var b = Plan(80, (10, f), (10, f), (1, f));
        Assert.Equal([(0, 2), (2, 1)], b.Select(x => (x.Start, x.Count)));
    }

    [Fact]
    public void A_dtype_change_starts_a_new_bucket()
    {
        var b = Plan(1 << 20, (4, ScalarType.Float32), (4, ScalarType.Float64), (4, ScalarType.Float64));
        Assert.Equal([(0, 1, ScalarType.Float32), (1, 2, ScalarType.Float64)], b.Select(x => (x.Start, x.Count, x.DType)));
        Assert.Throws<NotSupportedException>(() => Plan(100, (4, ScalarType.BFloat16)));
    }

    [Fact]
    public void Every_gradient_is_reduced_once_and_copied_back_in_place()
    {
        // A fake all-reduce that adds 1 to every element stands for "the other rank's gradient is 1 everywhere":
        // after averaging over two ranks each element must be (g + 1) / 2, whatever bucket it travelled in.
        var grads = new List<Tensor>
        {
            randn(3, 4), randn(7), randn(5, 6).t(), // non-contiguous: staged even when alone
            randn(64), randn(2), randn(40), randn(9),
        };
        var expected = grads.Select(g => (g + 1) / 2).ToList();
        var calls = new List<long>();
        using var buckets = new GradientBuckets(capBytes: 100);
        buckets.Average(grads, 2, t => { Assert.True(t.is_contiguous()); Assert.Equal(1, t.dim()); calls.Add(t.numel()); t.add_(1); });
        for (int i = 0; i < grads.Count; i++) Assert.True(grads[i].allclose(expected[i]), $"gradient {i}");
        Assert.Equal(buckets.Buckets.Select(b => b.Elements), calls);
        Assert.True(calls.Count < grads.Count, "small gradients share buckets");
        Assert.Contains(buckets.Buckets, b => b.Count == 1 && b.Elements == 64); // larger than the cap: alone

        // The plan and its buffers are reused by the next step.
        var first = buckets.Buckets;
        var again = grads.Select(g => (g + 1) / 2).ToList();
        buckets.Average(grads, 2, t => t.add_(1));
        Assert.Same(first, buckets.Buckets);
        for (int i = 0; i < grads.Count; i++) Assert.True(grads[i].allclose(again[i]));
    }
}
