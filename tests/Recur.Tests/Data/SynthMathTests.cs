using System.CommandLine;
using System.Text.RegularExpressions;
using Recur.Cli;
using Recur.Data;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Data;

public class SynthMathTests
{
    static readonly Regex Equation = new(@"(\d+) ([-+*/]) (\d+) = \$?(\d+)");

    static byte[] Bytes(IEnumerable<SynthMathProblem> problems)
    {
        using var ms = new MemoryStream();
        SynthMath.WriteJsonl(ms, problems);
        return ms.ToArray();
    }

    static IEnumerable<SynthMathProblem> All(SynthMathSplits s) => s.Train.Concat(s.Validation).Concat(s.Test);

    static long Apply(string op, long a, long b) => op switch
    {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => b != 0 && a % b == 0 ? a / b : throw new Xunit.Sdk.XunitException($"{a} / {b} is not exact"),
        _ => throw new Xunit.Sdk.XunitException($"unknown operator {op}"),
    };

    /// <summary>
    /// Re-derives a problem from its text alone: one equation per reasoning line, each correct, each
    /// starting from the previous result (the first from the number in the opening sentence), each
    /// operand stated in the matching question sentence, all values in [1, max], ending "#### final".
    /// </summary>
    static void AssertValidChain(SynthMathProblem p, int max)
    {
        string where = $"\n{p.Question}\n{p.Answer}";
        var sentences = Regex.Split(p.Question, @"(?<=[.?]) ");
        Assert.True(sentences.Length == p.Steps + 2, $"expected {p.Steps + 2} sentences{where}");
        Assert.EndsWith("?", sentences[^1]);
        var lines = p.Answer.Split('\n');
        Assert.True(lines.Length == p.Steps + 1, $"expected {p.Steps} reasoning lines and '####'{where}");
        Assert.Equal($"#### {p.Final}", lines[^1]);

        long? previous = null;
        for (int i = 0; i < p.Steps; i++)
        {
            var matches = Equation.Matches(lines[i]);
            Assert.True(matches.Count == 1, $"line {i} must hold exactly one equation{where}");
            var m = matches[0];
            long a = long.Parse(m.Groups[1].Value), b = long.Parse(m.Groups[3].Value), c = long.Parse(m.Groups[4].Value);
            Assert.True(Apply(m.Groups[2].Value, a, b) == c, $"line {i}: {m.Value} is wrong{where}");
            if (previous is null)
                Assert.Matches($@"(^|[^\d]){a}([^\d]|$)", sentences[0]);
            else
                Assert.True(a == previous, $"line {i} starts from {a}, not the previous result {previous}{where}");
            string words = m.Groups[2].Value switch
            {
                "*" when b == 2 => "|twice",
                "/" when b == 2 => "|half",
                "/" when b == 3 => "|a third",
                "/" when b == 4 => "|a quarter",
                _ => "",
            };
            Assert.True(Regex.IsMatch(sentences[i + 1], $@"(^|[^\d]){b}([^\d]|$){words}"), $"operand {b} is not stated in sentence {i + 1}{where}");
            foreach (long v in new[] { a, b, c }) Assert.True(v >= 1 && v <= max, $"value {v} outside [1, {max}]{where}");
            previous = c;
        }
        Assert.True(previous == p.Final, $"final {p.Final} is not the last result {previous}{where}");
    }

    [Fact]
    public void SplitMix64_matches_reference_outputs()
    {
        // Vigna's splitmix64.c, recomputed with an independent Python implementation of the same recurrence.
        var r = new SynthRng(0);
        Assert.Equal(0xE220A8397B1DCDAFUL, r.Next());
        Assert.Equal(0x6E789E6AA1B965F4UL, r.Next());
        Assert.Equal(0x06C45D188009454FUL, r.Next());
        var s = new SynthRng(1234567);
        Assert.Equal(6457827717110365317UL, s.Next());
        Assert.Equal(3203168211198807973UL, s.Next());
        Assert.Equal(9817491932198370423UL, s.Next());
    }

    [Fact]
    public void Bounded_draws_cover_the_range_evenly()
    {
        var r = new SynthRng(3);
        var counts = new int[7];
        for (int i = 0; i < 7000; i++) counts[r.Next(5, 11) - 5]++;
        Assert.All(counts, c => Assert.InRange(c, 850, 1150));
        Assert.Equal(-4, new SynthRng(1).Next(-4, -4));
    }

    [Fact]
    public void Same_seed_gives_byte_identical_splits()
    {
        var o = new SynthMathOptions(Count: 600, Seed: 42);
        var a = SynthMath.Generate(o);
        var b = SynthMath.Generate(o);
        Assert.Equal(Bytes(a.Train), Bytes(b.Train));
        Assert.Equal(Bytes(a.Validation), Bytes(b.Validation));
        Assert.Equal(Bytes(a.Test), Bytes(b.Test));
    }

    [Fact]
    public void Different_seed_gives_different_problems()
    {
        var a = SynthMath.Generate(new SynthMathOptions(Count: 300, Seed: 1));
        var b = SynthMath.Generate(new SynthMathOptions(Count: 300, Seed: 2));
        var qa = All(a).Select(p => p.Question).ToHashSet();
        int shared = All(b).Count(p => qa.Contains(p.Question));
        Assert.True(shared < 10, $"{shared} of 300 questions are shared between seeds 1 and 2");
    }

    [Fact]
    public void Test_split_does_not_depend_on_the_other_split_sizes()
    {
        // Counts chosen so both runs round to the same 25 test problems.
        var small = SynthMath.Generate(new SynthMathOptions(Count: 500, Seed: 9, TestFraction: 0.05));
        var large = SynthMath.Generate(new SynthMathOptions(Count: 500, Seed: 9, TestFraction: 0.05, ValidationFraction: 0.2));
        Assert.Equal(25, small.Test.Count);
        Assert.Equal(Bytes(small.Test), Bytes(large.Test));
    }

    [Fact]
    public void Splits_share_no_normalised_question()
    {
        var s = SynthMath.Generate(new SynthMathOptions(Count: 2000, MinSteps: 1, MaxSteps: 2, MaxValue: 10, Seed: 5, ValidationFraction: 0.2, TestFraction: 0.2));
        var keys = All(s).Select(p => SynthMath.Normalize(p.Question)).ToList();
        Assert.Equal(keys.Count, keys.Distinct().Count());
        Assert.Equal("tom has 3 apples. how many?", SynthMath.Normalize("  Tom has 3\tapples.\n How  many? "));
    }

    [Fact]
    public void Split_sizes_follow_the_fractions_and_steps_are_balanced()
    {
        var o = new SynthMathOptions(Count: 1000, MinSteps: 2, MaxSteps: 6, Seed: 11, ValidationFraction: 0.1, TestFraction: 0.15);
        var s = SynthMath.Generate(o);
        Assert.Equal((750, 100, 150), (s.Train.Count, s.Validation.Count, s.Test.Count));
        foreach (var split in new[] { s.Train, s.Validation, s.Test })
        {
            var perStep = Enumerable.Range(2, 5).Select(k => split.Count(p => p.Steps == k)).ToArray();
            Assert.Equal(split.Count, perStep.Sum());
            Assert.True(perStep.Max() - perStep.Min() <= 1, $"unbalanced: {string.Join(",", perStep)}");
        }
    }

    [Fact]
    public void Every_step_count_from_1_to_8_is_present()
    {
        var s = SynthMath.Generate(new SynthMathOptions(Count: 400, Seed: 3));
        foreach (var split in new[] { s.Train, s.Validation, s.Test })
            Assert.Equal(Enumerable.Range(1, 8), split.Select(p => p.Steps).Distinct().Order());
    }

    [Theory]
    [InlineData(999, 1, 8)]
    [InlineData(10, 1, 8)]
    [InlineData(50, 12, 16)]
    public void Every_reasoning_line_is_correct_and_chains_to_the_final_answer(int max, int lo, int hi)
    {
        var s = SynthMath.Generate(new SynthMathOptions(Count: 800, MinSteps: lo, MaxSteps: hi, MaxValue: max, Seed: (ulong)max));
        foreach (var p in All(s)) AssertValidChain(p, max);
    }

    [Fact]
    public void Chains_longer_than_the_name_list_still_work()
    {
        for (ulong seed = 0; seed < 8; seed++)
            AssertValidChain(SynthMath.Sample(seed, SynthMathOptions.StepsLimit, maxValue: 20), 20);
    }

    [Fact]
    public void Direct_variant_has_the_same_problems_without_reasoning_lines()
    {
        var cot = SynthMath.Generate(new SynthMathOptions(Count: 300, Seed: 8));
        var direct = SynthMath.Generate(new SynthMathOptions(Count: 300, Seed: 8, Direct: true));
        var pairs = All(cot).Zip(All(direct)).ToList();
        Assert.Equal(300, pairs.Count);
        foreach (var (c, d) in pairs)
        {
            Assert.Equal(c.Question, d.Question);
            Assert.Equal(c.Steps, d.Steps);
            Assert.Equal($"#### {c.Final}", d.Answer);
            Assert.EndsWith(d.Answer, c.Answer);
        }
    }

    [Theory]
    [InlineData(0, 1, 8, 999, 0.05, 0.05, "Count must be ≥ 1", "--count must be ≥ 1")]
    [InlineData(10, 3, 1, 999, 0.05, 0.05, "MinSteps-MaxSteps must be a range", "--steps must be a range")]
    [InlineData(10, 0, 2, 999, 0.05, 0.05, "MinSteps-MaxSteps must be a range", "--steps must be a range")]
    [InlineData(10, 1, 65, 999, 0.05, 0.05, "MinSteps-MaxSteps must be a range", "--steps must be a range")]
    [InlineData(10, 1, 8, 9, 0.05, 0.05, "MaxValue must be in", "--max-value must be in")]
    [InlineData(10, 1, 8, 999, -0.1, 0.05, "ValidationFraction must be in", "--val-fraction must be in")]
    [InlineData(10, 1, 8, 999, 0.05, 1.0, "TestFraction must be in", "--test-fraction must be in")]
    [InlineData(10, 1, 8, 999, 0.5, 0.5, "raise Count or lower ValidationFraction and TestFraction", "raise --count or lower --val-fraction and --test-fraction")]
    public void Bad_options_name_the_property_and_the_cli_its_flag(int count, int lo, int hi, int max, double val, double test, string expected, string cli)
    {
        var o = new SynthMathOptions(Count: count, MinSteps: lo, MaxSteps: hi, MaxValue: max, ValidationFraction: val, TestFraction: test);
        var e = Assert.Throws<RecurUserException>(() => SynthMath.Generate(o));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("--", e.Message);
        Assert.Contains(cli, Recur.Cli.Common.Describe(e));
    }

    [Fact]
    public void Jsonl_round_trips()
    {
        var s = SynthMath.Generate(new SynthMathOptions(Count: 100, Seed: 4));
        var path = Path.Combine(TestModels.TempDir(), "x.jsonl");
        File.WriteAllBytes(path, Bytes(s.Train));
        Assert.Equal(s.Train, SynthMath.ReadJsonl(path));
        var text = File.ReadAllText(path);
        Assert.DoesNotContain("\r", text);
        Assert.DoesNotContain("\\u", text);   // '+', '$', '<' stay readable
    }

    [Fact]
    public void Generator_emits_only_its_declared_characters()
    {
        var s = SynthMath.Generate(new SynthMathOptions(Count: 1000, Seed: 6));
        var allowed = SynthMath.Characters.ToHashSet();
        foreach (var p in All(s))
            Assert.All(p.Question + p.Answer, ch => Assert.Contains(ch, allowed));
    }

    // ---- CharTokenizer ----------------------------------------------------------------------

    [Fact]
    public void Char_tokenizer_round_trips_every_generated_text()
    {
        var tok = new CharTokenizer();
        var texts = All(SynthMath.Generate(new SynthMathOptions(Count: 500, Seed: 12))).SelectMany(p => new[] { p.Question, p.Answer, $"Q: {p.Question}\nA: {p.Answer}" });
        foreach (var text in texts)
        {
            var ids = tok.Encode(text, addBos: true);
            Assert.Equal(tok.BosId, ids[0]);
            Assert.Equal(text.Length + 1, ids.Length);
            Assert.DoesNotContain(tok.UnkId, ids);
            Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
            Assert.Equal(text, tok.Decode(ids));
        }
    }

    [Fact]
    public void Char_tokenizer_has_distinct_specials_and_one_id_per_character()
    {
        var tok = new CharTokenizer();
        Assert.Equal(4 + 2 + 95, tok.VocabSize);   // specials, tab and newline, printable ASCII
        Assert.Equal(4, new[] { tok.PadId, tok.BosId, tok.EosId, tok.UnkId }.Distinct().Count());
        var ids = tok.Encode(CharTokenizer.DefaultCharacters, addBos: false);
        Assert.Equal(Enumerable.Range(4, tok.VocabSize - 4), ids);
        Assert.Equal("<eos>", tok.Token(tok.EosId));
    }

    [Fact]
    public void Unknown_characters_become_one_unk_each()
    {
        var tok = new CharTokenizer();
        var ids = tok.Encode("a\u00e9b\U0001F600c", addBos: false);   // é (BMP) and an emoji (surrogate pair)
        Assert.Equal(new[] { tok.Encode("a", false)[0], tok.UnkId, tok.Encode("b", false)[0], tok.UnkId, tok.Encode("c", false)[0] }, ids);
        Assert.Equal("a\uFFFDb\uFFFDc", tok.Decode(ids));
        Assert.Equal("ab", tok.Decode([tok.BosId, .. tok.Encode("a", false), tok.PadId, .. tok.Encode("b", false), tok.EosId]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([tok.VocabSize]));
    }

    [Fact]
    public void Char_tokenizer_save_load_round_trips()
    {
        var tok = new CharTokenizer("xyz\n");
        var path = Path.Combine(TestModels.TempDir(), "tokenizer.json");
        tok.Save(path);
        var back = CharTokenizer.Load(path);
        var json = File.ReadAllText(path);
        Assert.Contains("\"format\": \"recur-char-tokenizer\"", json);
        Assert.Contains("\"<pad>\": 0", json);
        Assert.Contains("\"\\n\": 7", json);
        Assert.Equal(8, back.VocabSize);
        Assert.Equal((tok.PadId, tok.BosId, tok.EosId, tok.UnkId), (back.PadId, back.BosId, back.EosId, back.UnkId));
        Assert.Equal(tok.Encode("zyx\nq", true), back.Encode("zyx\nq", true));
        Assert.Equal(new CharTokenizer().Encode("Tom has $5.", true), LoadDefaultCopy().Encode("Tom has $5.", true));
    }

    static CharTokenizer LoadDefaultCopy()
    {
        var path = Path.Combine(TestModels.TempDir(), "tokenizer.json");
        new CharTokenizer().Save(path);
        return CharTokenizer.Load(path);
    }

    [Theory]
    [InlineData("""{"format":"other","version":1}""", "format")]
    [InlineData("""{"format":"recur-char-tokenizer","version":2}""", "version")]
    [InlineData("""{"format":"recur-char-tokenizer","version":1,"special_tokens":{"pad":"<pad>","bos":"<bos>","eos":"<eos>","unk":"<unk>"},"vocab":{"<pad>":0,"<bos>":1,"<eos>":2,"<unk>":4}}""", "id 3 is missing")]
    [InlineData("""{"format":"recur-char-tokenizer","version":1,"special_tokens":{"pad":"<pad>","bos":"<bos>","eos":"<eos>","unk":"<unk>"},"vocab":{"<pad>":0,"<bos>":1,"<eos>":2,"<unk>":3,"ab":4}}""", "single character")]
    [InlineData("""{"format":"recur-char-tokenizer","version":1,"special_tokens":{"pad":"<pad>","bos":"<bos>","eos":"<eos>","unk":"<unk>"},"vocab":{"<pad>":0,"<bos>":1,"<eos>":2,"x":3}}""", "special_tokens.unk")]
    [InlineData("not json", "not valid JSON")]
    public void Bad_tokenizer_files_are_named(string json, string expected)
    {
        var path = Path.Combine(TestModels.TempDir(), "tokenizer.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<RecurUserException>(() => CharTokenizer.Load(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
    }

    // ---- CLI --------------------------------------------------------------------------------

    static int Cli(params string[] args)
    {
        var root = new RootCommand { Options = { Recur.Cli.Common.Verbose } };
        root.Subcommands.Add(DataCommand.Create());
        return root.Parse(["data", "synth-math", .. args]).Invoke();
    }

    [Fact]
    public void Cli_writes_three_splits_matching_the_library()
    {
        var dir = Path.Combine(TestModels.TempDir(), "synth");
        Assert.Equal(0, Cli("--out", dir, "--count", "200", "--steps", "2-4", "--seed", "77", "--max-value", "100", "--val-fraction", "0.1", "--test-fraction", "0.1"));
        var expected = SynthMath.Generate(new SynthMathOptions(Count: 200, MinSteps: 2, MaxSteps: 4, Seed: 77, MaxValue: 100, ValidationFraction: 0.1, TestFraction: 0.1));
        Assert.Equal(Bytes(expected.Train), File.ReadAllBytes(Path.Combine(dir, "train.jsonl")));
        Assert.Equal(Bytes(expected.Validation), File.ReadAllBytes(Path.Combine(dir, "validation.jsonl")));
        Assert.Equal(Bytes(expected.Test), File.ReadAllBytes(Path.Combine(dir, "test.jsonl")));
        Assert.Equal(160, SynthMath.ReadJsonl(Path.Combine(dir, "train.jsonl")).Count);
        Assert.True(File.Exists(Path.Combine(dir, DataCommand.InfoFile)));
        Assert.Empty(Directory.GetFiles(dir, ".*tmp*"));
    }

    [Fact]
    public void Cli_refuses_a_non_empty_folder_without_force()
    {
        var dir = Path.Combine(TestModels.TempDir(), "synth");
        Assert.Equal(0, Cli("--out", dir, "--count", "50", "--seed", "1"));
        var before = File.ReadAllBytes(Path.Combine(dir, "train.jsonl"));
        Assert.Equal(1, Cli("--out", dir, "--count", "50", "--seed", "2"));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir, "train.jsonl")));
        Assert.Equal(0, Cli("--out", dir, "--count", "50", "--seed", "2", "--force"));
        Assert.NotEqual(before, File.ReadAllBytes(Path.Combine(dir, "train.jsonl")));
    }

    [Theory]
    [InlineData("--steps", "3-1")]
    [InlineData("--steps", "x")]
    [InlineData("--count", "0")]
    [InlineData("--max-value", "3")]
    public void Cli_rejects_bad_ranges_and_writes_nothing(string flag, string value)
    {
        var dir = Path.Combine(TestModels.TempDir(), "synth");
        string[] args = flag == "--count" ? ["--out", dir, flag, value] : ["--out", dir, "--count", "20", flag, value];
        Assert.Equal(1, Cli(args));
        Assert.False(Directory.Exists(dir));
    }

    [Theory]
    [InlineData("1-8", 1, 8)]
    [InlineData("4", 4, 4)]
    [InlineData(" 2-3 ", 2, 3)]
    public void Steps_flag_parses_ranges(string text, int lo, int hi) =>
        Assert.Equal((lo, hi), DataCommand.ParseSteps(text));
}
