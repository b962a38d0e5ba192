using Recur.Checkpoints;
using Recur.Demo;
using Recur.Model;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Demo;

/// <summary>
/// The demo scores a recurrent model at every T in one pass per batch (issue 13's time budget); that must give
/// exactly the numbers of one scoring pass per T, each with a fresh s₀ generator of the same seed.
/// </summary>
public sealed class DepthDemoScoringTests
{
    static RecurrentModel Model(int vocab, double testTimeNoise = 0)
    {
        var baseCfg = Presets.TinyTest with { VocabSize = vocab, MaxPositionEmbeddings = 256 };
        var rc = Retrofit.ConfigFor(baseCfg, new RetrofitOptions { Layers = new LayerMap([], [], []) }) with
        {
            NLayers = 3, NLayersInPrelude = 1, NLayersInRecurrentBlock = 1, NLayersInCoda = 1, TestTimeNoise = testTimeNoise,
        };
        return TrainRun.RandomRecurrent(rc, 3);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)] // test-time noise: scored T by T
    public void Scores_across_T_equal_one_pass_per_T_bit_for_bit(double noise)
    {
        var o = DepthDemoOptions.QuickRun;
        var tok = DepthDemo.Tokenizer(o);
        using var model = Model(tok.VocabSize, noise);
        Assert.True(model.Config.InitValues.Std > 0, "s₀ must be random for the generator order to matter");
        var test = Recur.Data.VariableChains.TestSet(o.TaskOptions, 1, 1, 6, 4);
        int[] ts = [4, 1, 2, 8]; // unsorted on purpose
        const ulong seed = 11;
        // A batch of 5 gives several batches of different widths, each drawing its own s₀ from the generator.
        var all = DepthDemo.ScoreAcrossT(model, ts, seed, tok, test, 5);
        Assert.Equal([1, 2, 4, 8], all.Keys);
        foreach (int t in ts)
        {
            using var gen = new TorchSharp.torch.Generator(seed);
            var one = DepthDemo.Score(model.At(Recurrence.Fixed(t, gen)), tok, test, 5);
            Assert.Equal(one.Correct, all[t].Correct);
            Assert.Equal(one.Loss, all[t].Loss); // exact: the same operations on the same values
        }
        // T matters here, so the equality above compares different numbers per T.
        Assert.NotEqual(all[1].Loss, all[8].Loss);
    }
}
