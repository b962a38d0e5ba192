using Recur.Engine;
using Recur.Model;
using Recur.Tasks;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>The one generation stepper (Engine/Generation.cs) and the one stop-string matcher (Engine/StopStrings.cs).</summary>
public class GenerationStepperTests
{
    [Fact]
    public void Finishing_a_row_ends_only_that_row_and_keeps_its_token()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 21);
        int[][] prompts = [[1, 2, 3], [4, 5]];
        var options = new GenerationOptions(MaxNewTokens: 8);
        var free = Generation.Generate(m, prompts, options);

        var outputs = new[] { new List<int>(), new List<int>() };
        int columns = 0;
        foreach (var col in Generation.Stream(m, prompts, options))
        {
            columns++;
            for (int r = 0; r < col.Batch; r++)
                if (col.Emitted(r)) outputs[r].Add(col.Token(r));
            if (col.Step == 2) col.Finish(0);
        }
        Assert.Equal(free[0].Take(3), outputs[0]);  // row 0 keeps the token it was finished on, nothing after
        Assert.Equal(free[1], outputs[1]);          // row 1 is unaffected by row 0 ending
        Assert.Equal(8, columns);
    }

    [Fact]
    public void Generation_ends_when_every_row_is_finished()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 22);
        int columns = 0;
        foreach (var col in Generation.Stream(m, [[1, 2], [3]], new GenerationOptions(MaxNewTokens: 10)))
        {
            columns++;
            if (col.Step == 1) { col.Finish(0); col.Finish(1); }
        }
        Assert.Equal(2, columns);
    }

    [Fact]
    public void Leaving_the_stream_early_is_allowed_and_the_model_generates_again()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 23);
        var first = Generation.Stream(m, [[1, 2, 3]], new GenerationOptions(MaxNewTokens: 6)).Take(2).Select(c => c.Token(0)).ToList();
        var full = Generation.Generate(m, [[1, 2, 3]], new GenerationOptions(MaxNewTokens: 6))[0];
        Assert.Equal(full.Take(2), first);
    }

    [Fact]
    public void Bad_prompts_throw_at_the_call_not_at_the_first_step()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 24);
        Assert.Throws<RecurUserException>(() => Generation.Stream(m, [[]], new GenerationOptions(4)));
        Assert.Throws<RecurUserException>(() => Generation.Stream(m, [[1]], new GenerationOptions(int.MaxValue)));
    }

    // lm-eval cuts stop by stop in the order given (s.split(term)[0] for each term): with "b" first, "xab" keeps "xa",
    // although "ab" starts earlier. Before there was one matcher, streaming cut this to "x" and the tasks to "xa".
    [Theory]
    [InlineData("xab", new[] { "b", "ab" }, "xa")]
    [InlineData("xab", new[] { "ab", "b" }, "x")]
    [InlineData("a\nbEND!", new[] { "END", "ND!" }, "a\nb")]
    [InlineData("Answer: 4\n\nQ: next", new[] { "Q:", "\n\n" }, "Answer: 4")]
    [InlineData("no stop here", new[] { "zz", "" }, "no stop here")]
    public void Streamed_pieces_are_cut_exactly_as_lm_eval_cuts_the_whole_text(string text, string[] stops, string expected)
    {
        Assert.Equal(expected, LmEval.CutAtStopSequences(text, stops));
        Assert.Equal(expected, StopStringMatcher.Cut(text, stops));
        // Every way of splitting the text into two or three streamed pieces gives the same text.
        for (int i = 0; i <= text.Length; i++)
            for (int j = i; j <= text.Length; j++)
            {
                var m = new StopStringMatcher(stops);
                string got = m.Push(text[..i]) + m.Push(text[i..j]) + m.Push(text[j..]) + m.Flush();
                Assert.Equal(expected, got);
                Assert.Equal(expected.Length < text.Length, m.Stopped);
            }
    }
}
