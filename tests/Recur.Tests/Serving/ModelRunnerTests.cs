using Recur.Checkpoints;
using Recur.Engine;
using Recur.Serving;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Serving;

/// <summary>Per-row limits and stops inside one batch, and stop strings, on a tiny random model.</summary>
public sealed class ModelRunnerTests
{
    [Fact]
    public void Rows_of_a_batch_keep_their_own_length_limit_and_stop_strings()
    {
        string dir = ChatModels.Plain(seed: 11);
        using var tok = TokenizerLoader.Load(dir);
        using var model = ModelLoader.Load(dir, ScalarType.Float32, CPU);
        var runner = new ModelRunner(model, tok);
        var ids = tok.Encode("the big cat sat on the mat");
        var greedy = new SamplingOptions();

        // The same prompt twice in one batch: identical rows, so the shorter one must be a prefix of the longer.
        var both = runner.Run([new TextRequest(ids, 2, greedy), new TextRequest(ids, 6, greedy)]);
        var alone = runner.Run([new TextRequest(ids, 6, greedy)])[0];
        Assert.Equal(alone, both[1]);
        Assert.True(alone.CompletionTokens >= 3, $"the test needs a reply of a few tokens; got '{alone.Text}'");
        Assert.Equal(2, both[0].CompletionTokens);
        Assert.Equal("length", both[0].FinishReason);
        Assert.StartsWith(both[0].Text, alone.Text);

        // Stop at the third word of the free reply: the text ends before it and the reason is "stop".
        var words = alone.Text.Split(' ');
        string stop = " " + words[2];
        var cut = runner.Run([new TextRequest(ids, 6, greedy, StopStrings: [stop])])[0];
        Assert.Equal(alone.Text[..alone.Text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.Equal("stop", cut.FinishReason);
        Assert.True(cut.CompletionTokens < alone.CompletionTokens || alone.FinishReason == "stop");

        // A stop id ends the row without its text: stop on the first word that was not written before.
        int k = Enumerable.Range(1, words.Length - 1).First(i => !words[..i].Contains(words[i]));
        int stopId = tok.Encode(words[k], addSpecialTokens: false).Single();
        var byId = runner.Run([new TextRequest(ids, 6, greedy, StopIds: [stopId])])[0];
        Assert.Equal(string.Join(' ', words[..k]), byId.Text);
        Assert.Equal(k, byId.CompletionTokens);
        Assert.Equal("stop", byId.FinishReason);

        Assert.Throws<RecurUserException>(() => runner.Run([new TextRequest(ids, 2, greedy, Recurrences: 3)]));
    }
}
