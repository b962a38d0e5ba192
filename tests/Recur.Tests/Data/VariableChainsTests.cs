using System.Text.RegularExpressions;
using Recur.Data;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Data;

public class VariableChainsTests
{
    static readonly VariableChainsOptions ChainsOpts = new();
    static readonly VariableChainsOptions SumOpts = new(Kind: DepthTaskKind.Sum);

    /// <summary>
    /// An independent interpreter of a chains row: executes the statements in order (every name must be defined
    /// before use), checks written values, and returns the queried value and the hops back to the nearest written value.
    /// </summary>
    static (int Value, int K) SolveChains(string prompt)
    {
        var lines = prompt.Split('\n');
        var value = new Dictionary<char, int>();
        var hops = new Dictionary<char, int>();
        foreach (var st in lines[0].Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            var root = Regex.Match(st, @"^(\d)>(.)$");
            if (root.Success) { char n = root.Groups[2].Value[0]; Assert.False(value.ContainsKey(n), $"{n} defined twice"); value[n] = root.Groups[1].Value[0] - '0'; hops[n] = 0; continue; }
            var step = Regex.Match(st, @"^(.)\+(\d)(?:=(\d))?>(.)$");
            Assert.True(step.Success, $"bad statement '{st}'");
            char from = step.Groups[1].Value[0], to = step.Groups[4].Value[0];
            Assert.True(value.ContainsKey(from), $"{from} used before its definition");
            Assert.False(value.ContainsKey(to), $"{to} defined twice");
            value[to] = (value[from] + step.Groups[2].Value[0] - '0') % 10;
            if (step.Groups[3].Success) { Assert.Equal(value[to], step.Groups[3].Value[0] - '0'); hops[to] = 0; }
            else hops[to] = hops[from] + 1;
        }
        var queries = lines[1].Split(';', StringSplitOptions.RemoveEmptyEntries);
        foreach (var q in queries[..^1])
        {
            var m = Regex.Match(q, @"^\?(.)=(\d)$");
            Assert.True(m.Success, q);
            Assert.Equal(value[m.Groups[1].Value[0]], m.Groups[2].Value[0] - '0');
        }
        var last = Regex.Match(queries[^1], @"^\?(.)=$");
        Assert.True(last.Success, queries[^1]);
        char name = last.Groups[1].Value[0];
        return (value[name], hops[name]);
    }

    static (int Value, int K) SolveSum(string prompt)
    {
        Assert.EndsWith("=", prompt);
        var parts = prompt[..^1].Split('+');
        int v = parts[0][0] - '0', k = 0;
        foreach (var p in parts.Skip(1))
        {
            v = (v + p[0] - '0') % 10;
            if (p.Length == 3) { Assert.Equal('=', p[1]); Assert.Equal(v, p[2] - '0'); k = 0; }
            else { Assert.Single(p); k++; }
        }
        return (v, k);
    }

    [Theory]
    [InlineData(DepthTaskKind.Chains)]
    [InlineData(DepthTaskKind.Sum)]
    public void Answers_and_difficulty_labels_match_an_independent_interpreter(DepthTaskKind kind)
    {
        var o = kind == DepthTaskKind.Sum ? SumOpts : ChainsOpts;
        var rng = new SplitMix64(11);
        foreach (var form in new[] { DepthRowForm.Worked, DepthRowForm.Partial, DepthRowForm.Direct })
            for (int k = 1; k <= 12; k++)
                for (int i = 0; i < 30; i++)
                {
                    var p = VariableChains.Make(o, ref rng, form, k, queries: 3);
                    var (v, hops) = kind == DepthTaskKind.Sum ? SolveSum(p.Prompt) : SolveChains(p.Prompt);
                    Assert.Equal((char)('0' + v), p.Answer);
                    Assert.Equal(form != DepthRowForm.Worked ? k : kind == DepthTaskKind.Sum ? 1 : 0, p.K);
                    Assert.Equal(form, p.Form);
                    Assert.Equal(p.K, hops);
                    Assert.Equal(p.Prompt + p.Answer, p.Text);
                    Assert.Equal(p.Text.Length, p.Targets.Length);
                }
    }

    [Fact]
    public void Direct_chains_write_no_intermediate_values_and_worked_ones_write_all()
    {
        var rng = new SplitMix64(3);
        var direct = VariableChains.Make(ChainsOpts, ref rng, DepthRowForm.Direct, 5);
        Assert.DoesNotContain('=', direct.Prompt.Split('\n')[0]);
        var worked = VariableChains.Make(ChainsOpts, ref rng, DepthRowForm.Worked, 5);
        Assert.All(worked.Prompt.Split('\n')[0].Split(';', StringSplitOptions.RemoveEmptyEntries), st => Assert.True(st.Contains('=') || Regex.IsMatch(st, @"^\d>.$"), st));
    }

    [Fact]
    public void Targets_are_exactly_the_written_values_and_answers()
    {
        var rng = new SplitMix64(5);
        var p = VariableChains.Make(ChainsOpts, ref rng, DepthRowForm.Worked, 1, queries: 3);
        for (int i = 0; i < p.Text.Length; i++)
            Assert.Equal(i > 0 && char.IsDigit(p.Text[i]) && p.Text[i - 1] == '=', p.Targets[i]);
        var s = VariableChains.Make(SumOpts, ref rng, DepthRowForm.Partial, 3);
        for (int i = 0; i < s.Text.Length; i++)
            Assert.Equal(i > 0 && s.Text[i - 1] == '=', s.Targets[i]);
    }

    [Theory]
    [InlineData(DepthTaskKind.Chains)]
    [InlineData(DepthTaskKind.Sum)]
    public void The_same_seed_gives_the_same_rows_and_another_seed_different_ones(DepthTaskKind kind)
    {
        var o = new VariableChainsOptions(Kind: kind);
        var a = VariableChains.TrainRows(o, 7, 1, 200, 0.5, 0.5, 1, 4, 3, new HashSet<string>());
        var b = VariableChains.TrainRows(o, 7, 1, 200, 0.5, 0.5, 1, 4, 3, new HashSet<string>());
        var c = VariableChains.TrainRows(o, 8, 1, 200, 0.5, 0.5, 1, 4, 3, new HashSet<string>());
        Assert.Equal(a.Select(p => p.Text), b.Select(p => p.Text));
        Assert.NotEqual(a.Select(p => p.Text), c.Select(p => p.Text));
        Assert.Equal(VariableChains.TestSet(o, 7, 1, 6, 20).Select(p => p.Text), VariableChains.TestSet(o, 7, 1, 6, 20).Select(p => p.Text));
    }

    [Theory]
    [InlineData(DepthTaskKind.Chains)]
    [InlineData(DepthTaskKind.Sum)]
    public void Training_rows_never_contain_a_held_out_problem(DepthTaskKind kind)
    {
        var o = new VariableChainsOptions(Kind: kind);
        var test = VariableChains.TestSet(o, 7, 1, 4, 200);
        var held = new HashSet<string>(test.Select(p => p.Key));
        Assert.Equal(test.Count, held.Count); // distinct
        // Direct rows over the same k range: for the sum, k = 1 has only 100 problems, a quarter of which are held out.
        var train = VariableChains.TrainRows(o, 7, 2, 3000, 0.0, 1.0, 1, 4, 1, held);
        Assert.DoesNotContain(train, p => held.Contains(p.Key));
        if (kind == DepthTaskKind.Sum)
        {
            Assert.Equal(25, test.Count(p => p.K == 1));
            Assert.Contains(train, p => p.K == 1);
        }
        else Assert.Equal(200, test.Count(p => p.K == 1));
    }

    [Fact]
    public void Gapped_sums_write_some_values_and_label_the_answer_by_the_gap_after_the_last_written_one()
    {
        var o = SumOpts with { WriteProbability = 0.5 };
        var rng = new SplitMix64(13);
        var gaps = new HashSet<int>();
        for (int i = 0; i < 300; i++)
        {
            int additions = 1 + i % 8;
            var p = VariableChains.Make(o, ref rng, DepthRowForm.Gapped, additions);
            var (v, hops) = SolveSum(p.Prompt);
            Assert.Equal((char)('0' + v), p.Answer);
            Assert.Equal(hops, p.K);
            Assert.Equal(additions, p.Prompt.Count(c => c == '+'));
            Assert.Equal(DepthRowForm.Gapped, p.Form);
            gaps.Add(p.K);
        }
        Assert.Superset(new HashSet<int> { 1, 2, 3, 4 }, gaps);
        // Probability 0 writes nothing (a direct problem); 1 writes every value before the answer (k = 1).
        Assert.Equal(5, VariableChains.Make(SumOpts with { WriteProbability = 0 }, ref rng, DepthRowForm.Gapped, 5).K);
        Assert.Equal(1, VariableChains.Make(SumOpts with { WriteProbability = 1 }, ref rng, DepthRowForm.Gapped, 5).K);
        var chains = new VariableChainsOptions();
        Assert.Contains("running sums", Assert.Throws<RecurUserException>(() => VariableChains.Make(chains, ref rng, DepthRowForm.Gapped, 3)).Message);
    }

    [Fact]
    public void No_training_sum_answers_a_held_out_problem_at_its_first_written_value()
    {
        // "7+3=0+5=…" answers the direct problem "7+3=" on the way: worked, partial and gapped rows whose text up to the
        // first written value is a test problem are skipped like rows that are one.
        var o = SumOpts with { MaxOffset = 4 };
        var test = VariableChains.TestSet(o, 7, 1, 3, 200);
        var held = new HashSet<string>(test.Select(p => p.Key));
        var train = VariableChains.TrainRows(o, 7, 2, 4000, 0.3, 0.2, 1, 4, 1, held, gappedFraction: 0.3);
        Assert.Contains(train, p => p.Form == DepthRowForm.Gapped);
        foreach (var p in train)
        {
            int eq = p.Text.IndexOf('=', StringComparison.Ordinal);
            string direct = new(p.Text[..eq].Where(char.IsDigit).ToArray());
            Assert.DoesNotContain(direct, held);
        }
    }

    [Fact]
    public void Sum_test_sets_hold_out_a_quarter_of_the_distinct_problems_when_terms_are_skewed()
    {
        // Terms 0–2: 10 · 3^k distinct sums with k additions, so 7, 22 and 67 held out at k = 1, 2, 3.
        var o = SumOpts with { MaxOffset = 2 };
        var test = VariableChains.TestSet(o, 3, 1, 4, 100);
        Assert.Equal([7, 22, 67, 100], Enumerable.Range(1, 4).Select(k => test.Count(p => p.K == k)));
        Assert.Equal(test.Count, test.Select(p => p.Key).Distinct().Count());
    }

    [Fact]
    public void Bad_options_are_refused_with_a_clear_message()
    {
        Assert.Contains("names", Assert.Throws<RecurUserException>(() => new VariableChainsOptions(Names: "ab1").Validate()).Message);
        Assert.Contains("names", Assert.Throws<RecurUserException>(() => new VariableChainsOptions(Names: "aa").Validate()).Message);
        var rng = new SplitMix64(1);
        var tooFew = new VariableChainsOptions(Names: "abcdef");
        Assert.Contains("names available", Assert.Throws<RecurUserException>(() => VariableChains.Make(tooFew, ref rng, DepthRowForm.Direct, 8)).Message);
    }

    [Fact]
    public void Data_verb_writes_the_same_bytes_for_the_same_seed_and_refuses_to_overwrite()
    {
        var root = TestModels.TempDir();
        string a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        string[] args = ["data", "variable-chains", "--task", "sum", "--train", "300", "--test-k", "1-6", "--test-per-k", "20", "--seed", "5"];
        var r = CliProcess.Run([.. args, "--out", a]);
        Assert.True(r.Code == 0, r.Stderr);
        Assert.True(CliProcess.Run([.. args, "--out", b]).Code == 0);
        foreach (var f in new[] { "train.jsonl", "test.jsonl", "variable-chains.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(a, f)), File.ReadAllBytes(Path.Combine(b, f)));
        Assert.Equal(300, File.ReadLines(Path.Combine(a, "train.jsonl")).Count());
        Assert.Contains("\"k\":", File.ReadLines(Path.Combine(a, "test.jsonl")).First());
        var again = CliProcess.Run([.. args, "--out", a]);
        Assert.Equal(1, again.Code);
        Assert.Contains("--force", again.Stderr);
        var bad = CliProcess.Run("data", "variable-chains", "--out", Path.Combine(root, "c"), "--task", "mazes");
        Assert.Equal(1, bad.Code);
        Assert.StartsWith("error:", bad.Stderr.Trim());
    }
}
