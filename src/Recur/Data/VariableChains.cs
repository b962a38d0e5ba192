using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Recur.Data;

/// <summary>Which depth-bound task <see cref="VariableChains"/> writes.</summary>
public enum DepthTaskKind
{
    /// <summary>Interleaved chains of assignments mod 10 (<c>7&gt;a;a+3&gt;q;…</c>, query <c>?q=</c>); one lookup per hop.</summary>
    Chains,
    /// <summary>An ordered running sum mod 10 (<c>7+3+5=</c>); each step adds the next term to the previous value.</summary>
    Sum,
}

/// <summary>How much of a problem's intermediate values a row writes out.</summary>
public enum DepthRowForm
{
    /// <summary>Every intermediate value is written (and is a training target): the row teaches the single step.</summary>
    Worked,
    /// <summary>Values are written up to the last k hops before the queried one, which the model has to do internally.</summary>
    Partial,
    /// <summary>No intermediate value is written: the queried value needs all k hops inside the network.</summary>
    Direct,
    /// <summary>Sums only: each intermediate value is written with probability <see cref="VariableChainsOptions.WriteProbability"/>,
    /// so one row holds several gaps of 1, 2, 3, … hidden additions (each written value is a target one gap past the previous one).</summary>
    Gapped,
}

/// <summary>
/// One row of a depth-bound task. <see cref="Text"/> is the whole row; <see cref="Targets"/> marks, per character, the
/// ones a model can predict from what precedes them (written intermediate values and the answers), which are the only
/// training targets. <see cref="Prompt"/> + <see cref="Answer"/> is the row's last query, used for evaluation.
/// </summary>
/// <param name="K">Difficulty of the last query: hops from the nearest written value to the queried one
/// (0 = the value is written and only has to be looked up; a worked sum's answer is one addition past the last written value, k = 1).</param>
/// <param name="Key">The problem itself (values that only restate it removed), used to keep splits disjoint.</param>
/// <param name="PrefixKey">Sums: the key of the direct problem that the row's text up to its first written value is
/// (that value is its answer), or null when no value is written before the answer.</param>
public sealed record DepthProblem(string Text, bool[] Targets, string Prompt, char Answer, int K, string Key, DepthRowForm Form, string? PrefixKey = null);

/// <summary>Options for <see cref="VariableChains"/>.</summary>
/// <param name="Chains">Chains interleaved in one chains problem (the queried one and distractors).</param>
/// <param name="DistractorMaxHops">Longest distractor chain, in hops.</param>
/// <param name="Tail">Up to this many extra hops after the queried node in its chain, so the query is not always a chain's end.</param>
/// <param name="Names">Variable names (single characters); a problem uses distinct ones.</param>
/// <param name="WriteProbability">Gapped sum rows: the probability that each intermediate value is written.</param>
/// <param name="MaxOffset">Offsets (chains) and added terms (sums) are uniform in 0..MaxOffset. Below 9 the previous
/// value alone already predicts the next one partly, which gives the lookup a gradient before the addition is learned
/// (with uniform 0..9 offsets a value is independent of either operand alone); roots and first terms stay uniform, so
/// answers are uniform over the ten digits either way.</param>
public sealed record VariableChainsOptions(
    DepthTaskKind Kind = DepthTaskKind.Chains, int Chains = 3, int DistractorMaxHops = 4, int Tail = 2,
    string Names = VariableChains.DefaultNames, int MaxOffset = 9, double WriteProbability = 0.5)
{
    public VariableChainsOptions Validate()
    {
        if (Chains < 1 || Chains > 8) throw new RecurUserException($"chains must be 1–8 (got {Chains})");
        if (MaxOffset is < 1 or > 9) throw new RecurUserException($"max offset must be 1–9 (got {MaxOffset})");
        if (DistractorMaxHops < 0 || Tail < 0) throw new RecurUserException("distractor hops and tail must be ≥ 0");
        if (WriteProbability is < 0 or > 1 || double.IsNaN(WriteProbability)) throw new RecurUserException($"write probability must be in [0, 1] (got {WriteProbability})");
        if (Names.Length < 2 || Names.Distinct().Count() != Names.Length || Names.Any(c => VariableChains.Syntax.Contains(c) || char.IsDigit(c) || char.IsWhiteSpace(c)))
            throw new RecurUserException($"names must be ≥ 2 distinct characters that are not digits, spaces or any of '{VariableChains.Syntax}'");
        return this;
    }
}

/// <summary>
/// Seeded generator of depth-bound problems for <c>recur demo</c> and <c>recur data variable-chains</c>; see
/// docs/variable-chains.md. All values are mod 10, so every answer is one digit (one character token) and chance is 10 %.
/// <para><b>Chains</b>: a root <c>7&gt;a;</c> gives a its value, a step <c>a+3&gt;q;</c> makes q = a + 3, a worked step
/// <c>a+3=0&gt;q;</c> also writes the value. A value always sits two characters before its name, so one hop is one
/// lookup at a fixed offset from the matching name. Several chains are interleaved in a random order that respects each
/// chain's order; after a newline, queries <c>?q=0;</c>. Difficulty k = hops of the queried chain whose values are not written.</para>
/// <para><b>Sum</b>: <c>7+3+5+1=6</c>; worked <c>7+3=0+5=5+1=6</c>; k = additions whose result is not written.</para>
/// </summary>
public static class VariableChains
{
    public const string DefaultNames = "abcdefghijklmnopqrstuvwxyz";
    /// <summary>Characters with a meaning in the syntax.</summary>
    public const string Syntax = "+=>;?\n";
    public const int FormatVersion = 1;

    /// <summary>Every character a row can contain with these names (for a narrow character vocabulary).</summary>
    public static string Alphabet(string names) => "0123456789" + Syntax + names;

    /// <summary>
    /// One problem whose last query has difficulty <paramref name="k"/> (≥ 1 for partial and direct rows; worked rows
    /// have k = 0; a gapped sum has k additions in all, its answer's difficulty is the gap after the last written value).
    /// Training rows (<paramref name="queries"/> &gt; 1) ask extra queries of random nodes before the last one.
    /// </summary>
    public static DepthProblem Make(VariableChainsOptions o, ref SplitMix64 rng, DepthRowForm form, int k, int queries = 1) =>
        o.Kind == DepthTaskKind.Sum ? MakeSum(o, ref rng, form, k)
        : form == DepthRowForm.Gapped ? throw new RecurUserException("gapped rows exist for running sums only")
        : MakeChains(o, ref rng, form, k, queries);

    static int Below(ref SplitMix64 rng, int n) => (int)rng.NextBelow((ulong)n);

    static DepthProblem MakeSum(VariableChainsOptions o, ref SplitMix64 rng, DepthRowForm form, int k)
    {
        // k additions are not written; a partial row writes 1–3 additions before them. A worked row writes every
        // value before the answer, which is then one addition away (k = 1).
        if (form == DepthRowForm.Worked) k = 1;
        else if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "partial, direct and gapped rows need k ≥ 1");
        int written = form switch { DepthRowForm.Worked => Below(ref rng, 8), DepthRowForm.Partial => 1 + Below(ref rng, 3), _ => 0 };
        int terms = 1 + written + k;
        // Gapped: k additions, each intermediate value written with probability WriteProbability.
        var write = new bool[terms];
        for (int i = 1; i < terms; i++)
            write[i] = form == DepthRowForm.Gapped ? i < terms - 1 && rng.Next() / (double)ulong.MaxValue < o.WriteProbability : i <= written;
        var sb = new StringBuilder();
        var targets = new List<bool>();
        var key = new StringBuilder();
        void Add(char c, bool target) { sb.Append(c); targets.Add(target); }
        int value = Below(ref rng, 10);
        Add((char)('0' + value), false);
        key.Append(value);
        for (int i = 1; i < terms; i++)
        {
            int d = Below(ref rng, o.MaxOffset + 1);
            value = (value + d) % 10;
            Add('+', false); Add((char)('0' + d), false);
            key.Append(d);
            if (write[i]) { Add('=', false); Add((char)('0' + value), true); }
        }
        Add('=', false);
        string prompt = sb.ToString();
        char answer = (char)('0' + value);
        Add(answer, true);
        int last = Array.LastIndexOf(write, true);
        if (form == DepthRowForm.Gapped) k = terms - 1 - Math.Max(last, 0);
        // The text up to the first written value is a direct problem with its answer; keep it out of the test set too.
        int first = Array.IndexOf(write, true);
        string? prefix = first > 0 ? key.ToString(0, first + 1) : null;
        return new DepthProblem(sb.ToString(), [.. targets], prompt, answer, k, key.ToString(), form, prefix);
    }

    sealed record Node(char Name, int Value, int Offset, bool Written);

    static DepthProblem MakeChains(VariableChainsOptions o, ref SplitMix64 rng, DepthRowForm form, int k, int queries)
    {
        if (form == DepthRowForm.Worked) k = 0;
        else if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "partial and direct rows need k ≥ 1");
        // Chain 0 is queried at node q; the nodes before q - k are written (partial), all (worked) or none (direct).
        int prefix = form == DepthRowForm.Partial ? 1 + Below(ref rng, 3) : form == DepthRowForm.Worked ? Below(ref rng, 5) : 0;
        int q = prefix + k;
        var hops = new int[o.Chains];
        hops[0] = q + Below(ref rng, o.Tail + 1);
        for (int c = 1; c < o.Chains; c++) hops[c] = Below(ref rng, o.DistractorMaxHops + 1);
        int total = hops.Sum() + o.Chains;
        if (total > o.Names.Length) throw new RecurUserException($"a problem with {total} variables needs more than the {o.Names.Length} names available");
        // Distinct names: a partial Fisher–Yates shuffle of the pool.
        var pool = o.Names.ToCharArray();
        for (int i = 0; i < total; i++) { int j = i + Below(ref rng, pool.Length - i); (pool[i], pool[j]) = (pool[j], pool[i]); }
        int next = 0;
        var chains = new List<Node>[o.Chains];
        for (int c = 0; c < o.Chains; c++)
        {
            chains[c] = [];
            int value = Below(ref rng, 10);
            chains[c].Add(new Node(pool[next++], value, -1, true));
            for (int h = 1; h <= hops[c]; h++)
            {
                int d = Below(ref rng, o.MaxOffset + 1);
                value = (value + d) % 10;
                // Distractors are written like the queried chain's prefix: fully in worked rows, not at all in direct ones.
                bool written = c == 0 ? h <= q - k || (form == DepthRowForm.Worked) : form == DepthRowForm.Worked || (form == DepthRowForm.Partial && h <= prefix);
                chains[c].Add(new Node(pool[next++], value, d, written));
            }
        }
        // A uniformly random interleaving that keeps each chain in order.
        var order = new List<(int Chain, int Index)>();
        var pos = new int[o.Chains];
        for (int left = total; left > 0; left--)
        {
            int pick = Below(ref rng, left);
            int c = 0;
            while (pick >= chains[c].Count - pos[c]) { pick -= chains[c].Count - pos[c]; c++; }
            order.Add((c, pos[c]++));
        }
        var sb = new StringBuilder();
        var key = new StringBuilder();
        var targets = new List<bool>();
        void Add(string s, bool target) { foreach (char ch in s) { sb.Append(ch); targets.Add(target); } }
        foreach (var (c, i) in order)
        {
            var n = chains[c][i];
            if (i == 0) { Add($"{n.Value}>{n.Name};", false); key.Append($"{n.Value}>{n.Name};"); continue; }
            var prev = chains[c][i - 1];
            Add($"{prev.Name}+{n.Offset}", false);
            if (n.Written) { Add("=", false); Add($"{n.Value}", true); }
            Add($">{n.Name};", false);
            key.Append($"{prev.Name}+{n.Offset}>{n.Name};");
        }
        Add("\n", false);
        // Extra queries of random nodes (any chain), then the graded one.
        int Difficulty(int c, int i) { int d = 0; while (!chains[c][i - d].Written) d++; return d; }
        // Extra queries (training rows only) come before the graded one.
        for (int e = 0; e < queries - 1; e++)
        {
            int c = Below(ref rng, o.Chains);
            int i = Below(ref rng, chains[c].Count);
            var n = chains[c][i];
            Add($"?{n.Name}=", false); Add($"{n.Value}", true); Add(";", false);
        }
        var target = chains[0][q];
        Add($"?{target.Name}=", false);
        string prompt = sb.ToString();
        char answer = (char)('0' + target.Value);
        Add($"{answer}", true);
        return new DepthProblem(sb.ToString(), [.. targets], prompt, answer, Difficulty(0, q), key.ToString(), form);
    }

    /// <summary>
    /// Held-out direct problems: <paramref name="perK"/> for each k in [<paramref name="minK"/>, <paramref name="maxK"/>],
    /// distinct by <see cref="DepthProblem.Key"/>. A sum with k additions has only 10·(MaxOffset + 1)^k distinct
    /// problems, so at most a quarter of them is held out (25 at k = 1 with terms 0–9), leaving the rest for training.
    /// </summary>
    public static List<DepthProblem> TestSet(VariableChainsOptions o, ulong seed, int minK, int maxK, int perK)
    {
        var rng = new SplitMix64(SplitMix64.Mix(seed ^ 0x7E57));
        var seen = new HashSet<string>();
        var list = new List<DepthProblem>();
        for (int k = minK; k <= maxK; k++)
            for (int n = 0, tries = 0, want = PerKCap(o, k, perK); n < want; tries++)
            {
                if (tries > want * 100) throw new RecurUserException($"could not draw {want} distinct problems at k = {k}");
                var p = Make(o, ref rng, DepthRowForm.Direct, k);
                if (seen.Add(p.Key)) { list.Add(p); n++; }
            }
        return list;
    }

    /// <summary>How many test problems <see cref="TestSet"/> draws at difficulty k.</summary>
    public static int PerKCap(VariableChainsOptions o, int k, int perK) =>
        o.Kind == DepthTaskKind.Sum ? (int)Math.Min(perK, Math.Floor(DistinctSums(o, k) / 4)) : perK;

    /// <summary>Distinct sums with k additions: 10 first terms times (MaxOffset + 1)^k added terms.</summary>
    static double DistinctSums(VariableChainsOptions o, int k) => 10 * Math.Pow(o.MaxOffset + 1, k);

    /// <summary>
    /// <paramref name="count"/> training rows from the stream <paramref name="stream"/>, none of which is a problem in
    /// <paramref name="heldOut"/> (keys; nor does a row contain one before its first written value). Each row is worked
    /// with probability <paramref name="workedFraction"/>, gapped (sums; k = its additions) with probability
    /// <paramref name="gappedFraction"/>, else partial or direct (<paramref name="directFraction"/> of the rest), with k
    /// uniform in [minK, maxK].
    /// </summary>
    public static List<DepthProblem> TrainRows(VariableChainsOptions o, ulong seed, ulong stream, int count, double workedFraction, double directFraction,
        int minK, int maxK, int queries, IReadOnlySet<string> heldOut, double gappedFraction = 0)
    {
        var rng = new SplitMix64(SplitMix64.Mix(seed ^ SplitMix64.Mix(stream)));
        var list = new List<DepthProblem>(count);
        while (list.Count < count)
        {
            double u = rng.Next() / (double)ulong.MaxValue;
            var form = u < workedFraction ? DepthRowForm.Worked : u < workedFraction + gappedFraction ? DepthRowForm.Gapped
                : (rng.Next() / (double)ulong.MaxValue) < directFraction ? DepthRowForm.Direct : DepthRowForm.Partial;
            int k = minK + Below(ref rng, maxK - minK + 1);
            var p = Make(o, ref rng, form, k, queries);
            if (!heldOut.Contains(p.Key) && (p.PrefixKey is null || !heldOut.Contains(p.PrefixKey))) list.Add(p);
        }
        return list;
    }

    /// <summary>
    /// JSONL, one problem per line: <c>text</c> (the whole row), <c>prompt</c> and <c>answer</c> (its graded query),
    /// <c>k</c>, and <c>targets</c> (the character offsets a model is trained on). Byte-identical for the same rows.
    /// </summary>
    public static void WriteJsonl(Stream stream, IEnumerable<DepthProblem> problems) => JsonLines.Write(stream, problems, (w, p) =>
    {
        w.WriteString("text", p.Text);
        w.WriteString("prompt", p.Prompt);
        w.WriteString("answer", p.Answer.ToString());
        w.WriteNumber("k", p.K);
        w.WriteStartArray("targets");
        for (int i = 0; i < p.Targets.Length; i++) if (p.Targets[i]) w.WriteNumberValue(i);
        w.WriteEndArray();
    });
}
