using Recur.Evaluation;
using Recur.Model;
using Recur.Tasks;
using Recur.Tests.Support;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Evaluation;

/// <summary>The model adapters behind the eval verb, on a tiny random model and a byte-level tokenizer built by the test.</summary>
public class AdapterTests
{
    // Lengths deliberately rising, so that the longest-first batching reorders them.
    static readonly string[] Prompts = ["Hi", "Q: one two\nA:", "a b c", "Q: what is two plus three?\nA: Let's think.", "x", "the cat sat on the mat and"];

    [Fact]
    public void Tokenizer_fixture_merges_a_space_with_the_next_letter()
    {
        using var tok = EvalFixtures.Tokenizer();
        Assert.Equal(EvalFixtures.TokenizerVocab, tok.VocabSize);
        Assert.Equal((EvalFixtures.Bos, EvalFixtures.Eos), (tok.BosId!.Value, tok.EosId!.Value));
        var xb = tok.Encode("x b", addSpecialTokens: false);
        Assert.Equal(2, xb.Length); // "x", "Ġb"
        Assert.Equal(2, tok.Encode("x ", addSpecialTokens: false).Length); // "x", "Ġ"
        Assert.Equal("Q: a b\nA: 12", tok.Decode(tok.Encode("Q: a b\nA: 12", addSpecialTokens: false)));
    }

    [Fact]
    public void Encode_pair_moves_trailing_spaces_of_the_context_to_the_continuation()
    {
        using var tok = EvalFixtures.Tokenizer();
        var (ctx, cont) = PromptEncoding.EncodePair(tok, "Answer: ", "yes");
        Assert.Equal([EvalFixtures.Bos, .. tok.Encode("Answer:", false)], ctx);
        Assert.Equal(tok.Encode(" yes", false), cont);
        Assert.Equal(tok.Encode("Answer: yes", false), ctx.Skip(1).Concat(cont).ToArray());
        // Without the move, the context would end in a lone "Ġ" and the continuation would start with a bare "y".
        Assert.NotEqual(tok.Encode("yes", false), cont);
        Assert.Equal(tok.TokenToId("Ġy"), cont[0]);

        // Several trailing white-space characters all move.
        var (ctx2, cont2) = PromptEncoding.EncodePair(tok, "A:\n ", "b");
        Assert.Equal([EvalFixtures.Bos, .. tok.Encode("A:", false)], ctx2);
        Assert.Equal(tok.Encode("\n b", false), cont2);
    }

    [Fact]
    public void Encode_pair_takes_the_continuation_as_the_tail_of_the_joint_encoding()
    {
        using var tok = EvalFixtures.Tokenizer();
        // "Q:" + " the" with the space already on the continuation: the tail of encode("Q: the").
        var (ctx, cont) = PromptEncoding.EncodePair(tok, "Q:", " the");
        var whole = tok.Encode("Q: the", false);
        Assert.Equal(whole[(ctx.Length - 1)..], cont);
        // An empty context is BOS alone.
        var (c0, k0) = PromptEncoding.EncodePair(tok, "", " hello");
        Assert.Equal([EvalFixtures.Bos], c0);
        Assert.Equal(tok.Encode(" hello", false), k0);
    }

    [Fact]
    public void Prompts_get_exactly_one_bos()
    {
        using var tok = EvalFixtures.Tokenizer();
        Assert.Equal([EvalFixtures.Bos, .. tok.Encode("Q: hi", false)], PromptEncoding.EncodePrompt(tok, "Q: hi"));
        Assert.Equal([EvalFixtures.Bos, .. tok.Encode(" hi", false)], PromptEncoding.EncodePrompt(tok, "<s> hi"));
    }

    static void AssertBatchedEqualsOneAtATime(ICausalLM m)
    {
        using var tok = EvalFixtures.Tokenizer();
        var batched = new ModelGenerator(m, tok, batchSize: 4).GenerateDetailed(Prompts, [], 6);
        var single = new ModelGenerator(m, tok, batchSize: 1);
        for (int i = 0; i < Prompts.Length; i++)
        {
            var one = single.GenerateDetailed([Prompts[i]], [], 6)[0];
            Assert.Equal(one.Ids, batched[i].Ids);
            Assert.Equal(one.Text, batched[i].Text);
            Assert.Equal(PromptEncoding.EncodePrompt(tok, Prompts[i]).Length, batched[i].PromptTokens);
        }
        // The outputs are not all alike, so a mix-up of rows would show.
        Assert.True(batched.Select(g => string.Join(',', g.Ids)).Distinct().Count() > 1);
    }

    [Fact]
    public void Batched_generation_equals_one_at_a_time_in_input_order_for_a_decoder()
    {
        using var m = EvalFixtures.Decoder();
        AssertBatchedEqualsOneAtATime(m);
    }

    [Fact]
    public void Batched_generation_equals_one_at_a_time_for_a_recurrent_model_with_zero_initial_state()
    {
        // With random s_0 a batch draws different noise than single rows do; zero s_0 isolates the batching.
        using var m = EvalFixtures.Recurrent(stateStd: 0);
        AssertBatchedEqualsOneAtATime(m.At(Recurrence.Fixed(3)));
    }

    [Fact]
    public void Stop_strings_cut_the_text_and_end_the_row()
    {
        using var m = EvalFixtures.Decoder();
        using var tok = EvalFixtures.Tokenizer();
        var gen = new ModelGenerator(m, tok, batchSize: 2);
        const int budget = 16;
        var free = gen.GenerateDetailed(Prompts, [], budget);
        Assert.All(free, g => Assert.Equal(FinishReason.Length, g.Finish));
        int tested = 0;
        for (int i = 0; i < Prompts.Length; i++)
        {
            // A stop string taken from what the model writes anyway: two characters from the middle.
            var text = free[i].Text;
            int at = text.Length / 2;
            if (text.Length < 4 || text.Substring(at, 2).Contains('\uFFFD')) continue;
            var stop = text.Substring(at, 2);
            var cut = gen.GenerateDetailed([Prompts[i]], ["never-appears", stop], budget)[0];
            Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
            Assert.Equal(FinishReason.StopSequence, cut.Finish);
            Assert.True(cut.Ids.Count < budget, $"row {i} kept generating after '{stop}'");
            // It stopped at the token that completed the stop string: the same ids as the free run, up to there.
            Assert.Equal(free[i].Ids.Take(cut.Ids.Count), cut.Ids);
            Assert.Contains(stop, tok.Decode(cut.Ids));
            Assert.DoesNotContain(stop, tok.Decode(cut.Ids.Take(cut.Ids.Count - 1).ToList()));
            tested++;
        }
        Assert.True(tested >= 3, $"only {tested} rows had a usable stop string");
        // The interface's plain strings are the same texts.
        Assert.Equal(free.Select(g => g.Text), gen.Generate(Prompts, [], budget));
    }

    /// <summary>The same model, claiming other end-of-sequence ids.</summary>
    sealed class WithEos(ICausalLM inner, int[] eos) : DelegatingModel(inner, ownsInner: false)
    {
        public override IReadOnlyList<int> EosTokenIds => eos;
    }

    [Fact]
    public void The_models_eos_ends_a_row_and_is_not_returned()
    {
        using var m = EvalFixtures.Decoder();
        using var tok = EvalFixtures.Tokenizer();
        var free = new ModelGenerator(m, tok).GenerateDetailed(["Hi"], [], 8)[0];
        // Declare as EOS the first token of the free run that did not occur before it: the row must end just there.
        int k = Enumerable.Range(1, free.Ids.Count - 1).FirstOrDefault(i => !free.Ids.Take(i).Contains(free.Ids[i]));
        var stopped = new ModelGenerator(new WithEos(m, [free.Ids[k]]), tok).GenerateDetailed(["Hi"], [], 8)[0];
        Assert.Equal(free.Ids.Take(k), stopped.Ids);
        Assert.Equal(FinishReason.Eos, stopped.Finish);
    }

    [Fact]
    public void Loglikelihood_equals_the_sum_from_a_manual_forward_in_input_order()
    {
        using var m = EvalFixtures.Decoder();
        using var tok = EvalFixtures.Tokenizer();
        (string, string)[] requests =
        [
            ("Question: is the sky blue?\nAnswer:", " yes"),
            ("the cat sat on the", " mat"),
            ("", " hello there"),
            ("Q: a ", "b c"),
            ("x", " y z w v"),
        ];
        var got = new ModelLogLikelihood(m, tok, batchSize: 2).Score(requests);
        using var _ = no_grad();
        for (int i = 0; i < requests.Length; i++)
        {
            var (ctx, cont) = PromptEncoding.EncodePair(tok, requests[i].Item1, requests[i].Item2);
            var ids = ctx.Concat(cont).Select(x => (long)x).ToArray();
            using var logp = m.Forward(tensor(ids).unsqueeze(0))[0].log_softmax(-1);
            double sum = 0;
            bool greedy = true;
            for (int j = 0; j < cont.Length; j++)
            {
                int pos = ctx.Length - 1 + j; // logits at pos predict token pos + 1
                sum += logp[pos, cont[j]].item<float>();
                greedy &= logp[pos].argmax().item<long>() == cont[j];
            }
            Assert.Equal(sum, got[i].LogProb, 4);
            Assert.Equal(greedy, got[i].IsGreedy);
        }
    }

    [Fact]
    public void Progress_counts_up_to_the_total()
    {
        using var m = EvalFixtures.Decoder();
        using var tok = EvalFixtures.Tokenizer();
        var seen = new List<(int, int)>();
        new ModelGenerator(m, tok, batchSize: 4) { Progress = (d, t) => seen.Add((d, t)) }.Generate(Prompts, [], 2);
        Assert.Equal([(4, 6), (6, 6)], seen);
    }

    [Fact]
    public void Long_prompts_are_cut_from_the_left_to_fit_the_context()
    {
        using var m = EvalFixtures.Decoder(); // 512 positions
        using var tok = EvalFixtures.Tokenizer();
        var gen = new ModelGenerator(m, tok);
        var longPrompt = string.Concat(Enumerable.Repeat("ab ", 300)); // ~600 tokens
        var g = gen.GenerateDetailed([longPrompt, "Hi"], [], 12);
        Assert.True(g[0].Truncated);
        Assert.Equal(512 - 12, g[0].PromptTokens);
        Assert.False(g[1].Truncated);
        Assert.Equal(1, gen.TruncatedPrompts);
        var e = Assert.Throws<RecurUserException>(() => gen.Generate(["Hi"], [], 512));
        Assert.Contains("no room for a prompt", e.Message);
    }

    [Fact]
    public void Val_loss_packs_bos_text_eos_into_rows_and_matches_the_mean_cross_entropy()
    {
        using var m = EvalFixtures.Decoder();
        using var tok = EvalFixtures.Tokenizer();
        var path = Path.Combine(Support.TestModels.TempDir("recur-val"), "val.jsonl");
        File.WriteAllLines(path, ["{\"text\": \"  the cat sat  \"}", "{\"text\": \"on the mat\"}"]);
        var stream = new List<int> { EvalFixtures.Bos };
        stream.AddRange(tok.Encode("the cat sat", false));
        stream.Add(EvalFixtures.Eos);
        stream.Add(EvalFixtures.Bos);
        stream.AddRange(tok.Encode("on the mat", false));
        stream.Add(EvalFixtures.Eos);
        var rows = ValLossTask.Load(path, tok, seqLen: 7);
        Assert.Equal(stream.Chunk(8).Where(c => c.Length >= 2).Select(c => c.ToArray()), rows.Rows);

        var run = ValLossTask.Evaluate(m, rows);
        using var _ = no_grad();
        var expected = new List<double>();
        foreach (var row in rows.Rows)
        {
            using var logits = m.Forward(tensor(row[..^1].Select(x => (long)x).ToArray()).unsqueeze(0))[0];
            using var ce = nn.functional.cross_entropy(logits, tensor(row[1..].Select(x => (long)x).ToArray()));
            expected.Add(ce.item<float>());
        }
        Assert.Equal(expected.Count, run.Samples.Count);
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], run.Samples[i].Loss, 4);
        Assert.Equal(expected.Average(), run.Result.Metrics["loss,none"], 4);
        Assert.Equal(Math.Exp(expected.Average()), run.Result.Metrics["perplexity,none"], 3);

        var limited = ValLossTask.Load(path, tok, seqLen: 7, new TaskLoadOptions(Limit: 1));
        Assert.Single(limited.Rows);
        var more = ValLossTask.Load(path, tok, seqLen: 7, new TaskLoadOptions(Limit: 50));
        Assert.Contains(more.Warnings, w => w.Contains("limit 50 is larger"));
    }
}
