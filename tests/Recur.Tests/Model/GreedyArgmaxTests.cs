using Recur.Engine;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>Greedy decoding picks tokens outside libtorch (Sampler.Next); the choice must be libtorch's argmax.</summary>
public class GreedyArgmaxTests
{
    static long[] Libtorch(Tensor logits) => logits.argmax(-1).data<long>().ToArray();

    [Theory]
    [InlineData(3, 32000)]
    [InlineData(2, 7)]
    [InlineData(4, 8)]
    [InlineData(1, 131)]
    public void Next_equals_libtorchs_argmax_on_random_logits(int rows, int vocab)
    {
        using var s = new Sampler(new SamplingOptions());
        var logits = randn(rows, vocab, generator: new Generator(3));
        Assert.Equal(Libtorch(logits), s.Next(logits));
    }

    [Fact]
    public void Ties_go_to_the_first_maximum_and_a_nan_wins()
    {
        using var s = new Sampler(new SamplingOptions());
        float[] tied = [0, 5, 1, 5, 5, 2, 0, 0, 0, 5, 3];        // the max 5 first at 1
        float[] tailMax = [1, 1, 1, 1, 1, 1, 1, 1, 1, 9];        // the max in the tail after the vector part
        float[] nan = [1, 2, 3, 4, 5, 6, 7, 8, 9, float.NaN, 1];  // NaN counts as the maximum
        float[] tailNan = [1, 2, 3, 4, 5, 6, 7, 8, float.NaN];
        float[] ninf = [float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity,
                        float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity];
        foreach (var row in new[] { tied, tailMax, nan, tailNan, ninf })
        {
            var t = tensor(row).reshape(1, row.Length);
            Assert.Equal(Libtorch(t), s.Next(t));
        }
    }

    /// <summary>
    /// Vocabulary-sized logits are scanned in shares by the kernel threads (Greedy.Argmax); the combined answer must be the
    /// one-thread scan's, i.e. libtorch's: ties across the shares' boundary go to the earlier share, a NaN in a later share still wins, and
    /// the first of several NaNs wins.
    /// </summary>
    [Theory]
    [InlineData(32000)]
    [InlineData(Greedy.ParallelFrom + 1)]
    public void Split_scans_give_libtorchs_index(int n)
    {
        var rng = new Random(5);
        int mid = (n + 1) / 2; // the second share starts here with two threads
        var cases = new List<float[]>();
        float[] Random() => [.. Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble())];
        cases.Add(Random());
        var tie = Random(); tie[mid - 3] = 7; tie[mid + 5] = 7; tie[n - 1] = 7; cases.Add(tie);         // first maximum in share 0
        var later = Random(); later[10] = 7; later[mid + 2] = 8; cases.Add(later);                      // larger maximum in share 1
        var nanLate = Random(); nanLate[3] = 9; nanLate[n - 2] = float.NaN; cases.Add(nanLate);         // a NaN only in share 1
        var nans = Random(); nans[mid + 1] = float.NaN; nans[mid - 1] = float.NaN; cases.Add(nans);     // the first NaN is in share 0
        var ninf = Enumerable.Repeat(float.NegativeInfinity, n).ToArray(); cases.Add(ninf);
        using var s = new Sampler(new SamplingOptions());
        foreach (var x in cases)
        {
            var t = tensor(x).reshape(1, n);
            Assert.Equal(Libtorch(t), s.Next(t));
        }
    }

    [Fact]
    public void Sampling_and_other_layouts_still_go_through_libtorch()
    {
        using var greedy = new Sampler(new SamplingOptions());
        var wide = randn(2, 40, generator: new Generator(4));
        Assert.Equal(Libtorch(wide), greedy.Next(wide.t().contiguous().t())); // not contiguous
        Assert.Equal(Libtorch(wide), greedy.Next(wide.to(ScalarType.Float64)));
        using var a = new Sampler(new SamplingOptions(Temperature: 1.0, Seed: 9));
        using var b = new Sampler(new SamplingOptions(Temperature: 1.0, Seed: 9));
        Assert.Equal(b.Sample(wide).data<long>().ToArray(), a.Next(wide));
    }
}
