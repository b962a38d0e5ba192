using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// Self-speculative decoding (Engine/Speculative.cs): greedy ids, caches and token columns identical to plain decoding
/// on tiny random (2, 2, 2) recurrent models with a random s_0 (σ > 0) drawn from a seeded generator.
/// </summary>
public class SpeculativeTests
{
    static readonly int[] Prompt = [1, 7, 3, 9, 4];

    static RecurrentModel Model(long seed = 31, bool olmo2 = false)
    {
        using var b = TestModels.Random((olmo2 ? Presets.TinyOlmo2Test : Presets.TinyTest) with { NumHiddenLayers = 6 }, seed);
        return Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 2, 2, 2), Seed = seed });
    }

    static ICausalLM At(RecurrentModel m, int t, Generator gen) => m.At(Recurrence.Fixed(t, gen));

    static List<int> Plain(RecurrentModel m, int t, GenerationOptions o, int[]? prompt = null)
    {
        using var gen = new Generator(5);
        return Generation.Generate(At(m, t, gen), [prompt ?? Prompt], o)[0];
    }

    static List<int> Speculated(RecurrentModel m, int t, GenerationOptions o, SpeculativeOptions s, SpeculativeStats? stats = null, int[]? prompt = null)
    {
        using var gen = new Generator(5);
        return Speculative.Generate(At(m, t, gen), [prompt ?? Prompt], o, s, stats)[0];
    }

    public static TheoryData<int, int, int> Settings()
    {
        var data = new TheoryData<int, int, int>();
        foreach (var (td, t) in new[] { (1, 3), (2, 4), (3, 8) })
            for (int k = 1; k <= 5; k++) data.Add(td, t, k);
        return data;
    }

    [Theory, MemberData(nameof(Settings))]
    public void Greedy_ids_are_identical_to_plain_decoding(int draft, int t, int k)
    {
        using var m = Model();
        var o = new GenerationOptions(MaxNewTokens: 40);
        var plain = Plain(m, t, o);
        var stats = new SpeculativeStats();
        // Through the stepper's front door: GenerationOptions.Speculate.
        using var gen = new Generator(5);
        var spec = Generation.Generate(At(m, t, gen), [Prompt], o with { Speculate = new SpeculativeOptions(draft, k) })[0];
        Assert.Equal(plain, spec);
        Assert.Equal(plain, Speculated(m, t, o, new SpeculativeOptions(draft, k), stats));
        Assert.Equal(40, stats.Produced + 1); // the prefill's token, then the cycles'
        Assert.True(stats.Drafted >= stats.Accepted);
        Assert.Equal(stats.Drafted + stats.Cycles, stats.VerifiedRows); // K + 1 rows per cycle
        Assert.True(stats.DraftSeconds > 0 && stats.VerifySeconds > 0);
    }

    [Fact]
    public void Drafts_are_both_accepted_and_rejected_on_these_models_so_rollback_is_exercised()
    {
        long accepted = 0, rejected = 0;
        using var m = Model();
        foreach (var (td, t) in new[] { (1, 3), (2, 4), (3, 8) })
        {
            var stats = new SpeculativeStats();
            Speculated(m, t, new GenerationOptions(MaxNewTokens: 40), new SpeculativeOptions(td, 4), stats);
            accepted += stats.Accepted;
            rejected += stats.Drafted - stats.Accepted;
        }
        Assert.True(accepted > 0 && rejected > 0, $"accepted {accepted}, rejected {rejected}");
    }

    /// <summary>Plain decoding with its cache kept: the stepper with the fixed-depth forward's exact calls.</summary>
    sealed class KeptCache(ICausalLM model, int capacity) : IStepForward
    {
        public KvCache Cache { get; } = new(model.CacheSlots, capacity) { MatVec = true };
        public Tensor Forward(Tensor input, Tensor? keyPadding, int step, IReadOnlyList<bool> finished) =>
            (FastDecoder.TryForward(model, input, keyPadding, Cache) ?? model.Forward(input, keyPadding, Cache, lastOnly: true)).squeeze(1);
        public void Dispose() { }
    }

    [Theory]
    [InlineData(1, 4, "bf16")]
    [InlineData(1, 4, "fp32")]
    [InlineData(2, 5, "fp32")]
    [InlineData(2, 5, "olmo2")]
    public void After_every_cycle_the_cache_equals_the_one_plain_decoding_builds(int draft, int t, string dtype)
    {
        using var m = Model(33, olmo2: dtype == "olmo2");
        if (dtype == "bf16") { m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16; }
        const int steps = 40;
        KeptCache? plainForward = null;
        List<int> plain;
        using (var gen = new Generator(9))
        {
            var view = At(m, t, gen);
            plain = Generation.Collect(1, Generation.Steps(view, [Prompt], new GenerationOptions(steps), (_, cap) => plainForward = new KeptCache(view, cap)))[0];
        }
        using var plainCache = plainForward!.Cache;
        using var g2 = new Generator(9);
        using var spec = new SpeculativeDecoder(At(m, t, g2), draft, 8);
        var tokens = new List<int> { spec.Prefill([.. Prompt.Select(x => (long)x)]) };
        int cycle = 0;
        long rejected = 0;
        while (tokens.Count < steps - 6)
        {
            int k = cycle++ % 5 + 1; // every K from 1 to 5, in turn
            var (next, accepted) = spec.Cycle(tokens[^1], k);
            rejected += k - accepted;
            tokens.AddRange(next);
            int length = Prompt.Length + tokens.Count - 1;
            Assert.Equal(plain.Take(tokens.Count), tokens);
            for (int s = 0; s < spec.Cache.Slots; s++)
            {
                Assert.Equal(length, spec.Cache.Filled(s));
                var (k1, v1) = spec.Cache.Entries(s)!.Value;
                var (k2, v2) = plainCache.Entries(s)!.Value;
                Assert.True(TensorAssert.Same(k1, k2.narrow(2, 0, length)) && TensorAssert.Same(v1, v2.narrow(2, 0, length)),
                    $"cycle {cycle} (K = {k}): slot {s} differs from plain decoding's");
            }
        }
        Assert.True(rejected > 0, "no draft was rejected: the rollback was not exercised");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void A_stop_id_inside_a_block_ends_generation_where_plain_decoding_ends(int k)
    {
        using var m = Model();
        var free = Plain(m, 4, new GenerationOptions(MaxNewTokens: 30));
        // Stop at the first occurrence of tokens seen at several depths of the output.
        foreach (int at in new[] { 2, 5, 9, 14 })
        {
            var o = new GenerationOptions(MaxNewTokens: 30, StopIds: [free[at]]);
            var plain = Plain(m, 4, o);
            Assert.True(plain.Count < 30);
            Assert.Equal(plain, Speculated(m, 4, o, new SpeculativeOptions(3, k)));
        }
    }

    [Fact]
    public void Max_new_tokens_landing_mid_block_gives_plain_decodings_columns()
    {
        using var m = Model();
        for (int max = 1; max <= 9; max++)
        {
            var o = new GenerationOptions(MaxNewTokens: max);
            using var g1 = new Generator(5);
            var plain = Generation.Stream(At(m, 4, g1), [Prompt], o).Select(c => (c.Step, c.Token(0), c.Emitted(0))).ToList();
            using var g2 = new Generator(5);
            var spec = Speculative.Stream(At(m, 4, g2), [Prompt], o, new SpeculativeOptions(3, 5)).Select(c => (c.Step, c.Token(0), c.Emitted(0))).ToList();
            Assert.Equal(plain, spec);
            Assert.Equal(max, spec.Count);
        }
    }

    [Fact]
    public void Finishing_the_row_inside_an_accepted_block_stops_the_stream_there()
    {
        using var m = Model();
        using var gen = new Generator(5);
        var tokens = new List<int>();
        foreach (var col in Speculative.Stream(At(m, 4, gen), [Prompt], new GenerationOptions(20), new SpeculativeOptions(3, 5)))
        {
            tokens.Add(col.Token(0));
            if (col.Step == 3) col.Finish(0); // a stop string appeared
        }
        Assert.Equal(Plain(m, 4, new GenerationOptions(20)).Take(4), tokens);
    }

    [Fact]
    public void A_one_token_prompt_starts_on_the_fast_path_and_still_matches()
    {
        using var m = Model();
        var o = new GenerationOptions(MaxNewTokens: 16);
        Assert.Equal(Plain(m, 4, o, [1]), Speculated(m, 4, o, new SpeculativeOptions(1, 3), prompt: [1]));
    }

    [Fact]
    public void The_library_option_gives_the_same_tokens()
    {
        using var model = RecurModel.FromModel(Model());
        var o = new GenerateOptions { MaxNewTokens = 24, Seed = 3, Recurrences = 5 };
        var plain = model.GenerateTokens(Prompt, o);
        Assert.Equal(plain, model.GenerateTokens(Prompt, o with { Speculate = new SpeculativeOptions(2, 4) }));
        Assert.Equal(24, plain.Length);
    }

    [Fact]
    public void What_speculation_cannot_do_is_refused_with_a_clear_error()
    {
        using var m = Model();
        using var gen = new Generator(5);
        var view = At(m, 4, gen);
        var s = new SpeculativeOptions(2, 4);
        var greedy = new GenerationOptions(8);
        Assert.Contains("one prompt at a time", Assert.Throws<RecurUserException>(() => Speculative.Stream(view, [Prompt, Prompt], greedy, s)).Message);
        Assert.Contains("greedy only", Assert.Throws<RecurUserException>(() => Speculative.Stream(view, [Prompt], greedy with { Sampling = new SamplingOptions(0.8) }, s)).Message);
        Assert.Contains("below the target T", Assert.Throws<RecurUserException>(() => Speculative.Stream(view, [Prompt], greedy, new SpeculativeOptions(4, 2))).Message);
        using var plain = TestModels.Random(Presets.TinyTest, 3);
        Assert.Contains("recurrent model", Assert.Throws<RecurUserException>(() => Speculative.Stream(plain, [Prompt], greedy, s)).Message);
        using var noisy = new RecurrentModel(m.Config with { TestTimeNoise = 0.5 });
        Assert.Contains("test_time_noise", Assert.Throws<RecurUserException>(() => Speculative.Stream(noisy.At(Recurrence.Fixed(4)), [Prompt], greedy, s)).Message);
        Assert.Contains("custom per-step forward", Assert.Throws<RecurUserException>(() =>
            Generation.Steps(view, [Prompt], greedy with { Speculate = s }, (_, c) => new KeptCache(view, c))).Message);
        // Every message names the setting, which the CLI shows as --speculate.
        var e = Assert.Throws<RecurUserException>(() => Speculative.Stream(view, [Prompt, Prompt], greedy, s));
        Assert.StartsWith("--speculate: ", e.MessageWith(new Dictionary<string, string> { ["Speculate"] = "--speculate" }));
    }

    [Theory]
    [InlineData("draft=2,k=4", 2, 4)]
    [InlineData("k=8, draft=1", 1, 8)]
    public void Settings_parse_from_draft_and_k(string text, int draft, int k) =>
        Assert.Equal(new SpeculativeOptions(draft, k), SpeculativeOptions.Parse(text));

    [Theory]
    [InlineData("k=4")]
    [InlineData("draft=2")]
    [InlineData("draft=two,k=4")]
    [InlineData("draft=2,k=0")]
    [InlineData("draft=0,k=2")]
    [InlineData("draft=2,k=4,t=8")]
    [InlineData("2,4")]
    public void Bad_settings_are_refused(string text) =>
        Assert.Throws<RecurUserException>(() => SpeculativeOptions.Parse(text, "--speculate"));

    [Fact]
    public void Truncating_the_cache_forgets_later_positions_and_the_next_append_overwrites_them()
    {
        using var cache = new KvCache(3, 4);
        for (int s = 0; s < 3; s++) cache.Append(s, full(new long[] { 1, 1, 5, 2 }, (float)s), full(new long[] { 1, 1, 5, 2 }, (float)-s));
        cache.Truncate(4, firstSlot: 2, count: 1);
        Assert.Equal([5, 5, 4], Enumerable.Range(0, 3).Select(cache.Filled));
        cache.Truncate(2);
        Assert.Equal([2, 2, 2], Enumerable.Range(0, 3).Select(cache.Filled));
        Assert.Equal(2, cache.Length);
        var (k, _) = cache.Append(1, full(new long[] { 1, 1, 1, 2 }, 9f), full(new long[] { 1, 1, 1, 2 }, 9f));
        Assert.Equal(3, k.shape[2]);
        Assert.Equal(9f, k[0, 0, 2, 0].item<float>());
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Truncate(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Truncate(1, firstSlot: 2, count: 2));
    }
}

/// <summary><c>--speculate</c> on <c>recur generate</c> and <c>recur chat</c>: same output as without it, clear errors.</summary>
public class SpeculativeCliTests
{
    static void OneLine(CliProcess.Result r, string expected) => Cli.CliErrorTests.OneLine(r, expected);

    [Fact]
    public void Generate_prints_the_same_ids_with_and_without_speculation()
    {
        string model = ChatModels.Recurrent();
        string[] args = ["generate", "--model", model, "--prompt-ids", "1 5 9 13", "--max-new-tokens", "20", "--seed", "3", "--output-ids", "--recurrences", "6"];
        var plain = CliProcess.Run(args);
        var spec = CliProcess.Run([.. args, "--speculate", "draft=2,k=3"]);
        Assert.True(plain.Code == 0, plain.Stderr);
        Assert.True(spec.Code == 0, spec.Stderr);
        Assert.Equal(plain.Lines[^1], spec.Lines[^1]);
        // Without --output-ids the summary line reports the acceptance.
        var told = CliProcess.Run(["generate", "--model", model, "--prompt", "the cat", "--max-new-tokens", "6", "--speculate", "draft=1,k=2"]);
        Assert.True(told.Code == 0, told.Stderr);
        Assert.Contains("speculative draft=1,k=2:", told.Stderr);
    }

    [Fact]
    public void Generate_refuses_what_speculation_cannot_do_in_one_line()
    {
        string model = ChatModels.Recurrent();
        OneLine(CliProcess.Run("generate", "--model", model, "--prompt-ids", "1 5", "--speculate", "draft=1,k=2", "--temperature", "0.7"),
            "--speculate: speculative decoding is greedy only: set --temperature to 0");
        OneLine(CliProcess.Run("generate", "--model", model, "--prompt-ids", "1 5", "--speculate", "draft=4,k=2"), "must be below the target T (4)");
        OneLine(CliProcess.Run("generate", "--model", model, "--prompt-ids", "1 5", "--prompt-ids", "1 6", "--speculate", "draft=1,k=2"), "one prompt at a time");
        OneLine(CliProcess.Run("generate", "--model", model, "--prompt-ids", "1 5", "--speculate", "draft=1"), "--speculate: give both draft=T_d and k=K");
        OneLine(CliProcess.Run("generate", "--model", ChatModels.Plain(), "--prompt-ids", "1 5", "--speculate", "draft=1,k=2"), "needs a recurrent model");
    }

    static (int Code, string Out, string Err) Chat(string input, params string[] args)
    {
        var outw = new StringWriter();
        var errw = new StringWriter();
        var root = new System.CommandLine.RootCommand();
        root.Subcommands.Add(Recur.Cli.ChatCommand.Create(new StringReader(input), outw, errw));
        int code = root.Parse(["chat", .. args]).Invoke();
        return (code, outw.ToString(), errw.ToString());
    }

    [Fact]
    public void Chat_replies_are_the_same_with_speculation_and_sampling_is_refused_at_start()
    {
        string model = ChatModels.Recurrent(ChatModels.ChatMLTemplate);
        string[] args = ["--model", model, "--max-new-tokens", "6", "--seed", "10", "--recurrences", "5"];
        var plain = Chat("the cat sat\nhello world\n", args);
        var spec = Chat("the cat sat\nhello world\n", [.. args, "--speculate", "draft=2,k=3"]);
        Assert.True(plain.Code == 0, plain.Err);
        Assert.True(spec.Code == 0, spec.Err);
        Assert.Equal(plain.Out, spec.Out);
        var sampled = Chat("hi\n", [.. args, "--speculate", "draft=2,k=3", "--temperature", "0.5"]);
        Assert.Equal(1, sampled.Code); // the error line goes to the process's stderr (Common.Run)
        Assert.Equal("", sampled.Out);
    }
}
