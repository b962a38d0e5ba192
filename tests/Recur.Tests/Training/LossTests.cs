using Recur.Model;
using Recur.Tests.Evaluation;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Training;

/// <summary>The one loss (Model/Loss.cs) that training, validation and scoring share.</summary>
public class LossTests
{
    [Fact]
    public void Ignored_targets_are_not_scored_and_the_mean_is_the_sum_over_the_scored()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 41);
        var x = tensor(new long[] { 1, 5, 7, 9, 2, 4 }, [2, 3]);
        var y = tensor(new long[] { 5, 7, Loss.IgnoreIndex, 2, 4, 6 }, [2, 3]);
        var (sum, n) = Loss.Sum(m, x, y);
        Assert.Equal(5, n);
        using (no_grad()) Assert.Equal(sum / n, Loss.Of(m, x, y).item<float>(), 4);
        // The sum is −log p of the five scored targets; the ignored position adds nothing.
        using var _ = no_grad();
        var logp = m.Forward(x).log_softmax(-1);
        double expected = 0;
        long[] targets = [5, 7, -1, 2, 4, 6];
        for (int i = 0; i < 6; i++) if (targets[i] >= 0) expected -= logp[i / 3, i % 3, targets[i]].item<float>();
        Assert.Equal(expected, sum, 3);
    }

    [Fact]
    public void A_recurrence_given_to_the_loss_overrides_the_view_it_is_given()
    {
        using var m = EvalFixtures.Recurrent(seed: 5, stateStd: 0);
        var x = tensor(new long[] { 1, 5, 7, 9 }, [1, 4]);
        var y = tensor(new long[] { 5, 7, 9, 3 }, [1, 4]);
        var atTwo = Loss.Sum(m.At(Recurrence.Fixed(2)), x, y).Sum;
        Assert.Equal(atTwo, Loss.Sum(m.At(Recurrence.Fixed(6)), x, y, Recurrence.Fixed(2)).Sum);
        Assert.NotEqual(atTwo, Loss.Sum(m.At(Recurrence.Fixed(6)), x, y).Sum);
    }
}
