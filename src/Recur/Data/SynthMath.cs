// Synthetic grade-school arithmetic word problems in GSM8K's format, for the `recur demo` run that
// pretrains a tiny LM, retrofits recurrence and asks whether test-time depth helps (METHOD §8: the
// GSM8K answer is the text after "####"). docs/synth-math.md shows real output for each difficulty.
//
// - Difficulty is the number of reasoning steps. Each step is one operation (+, -, *, exact /) whose
//   left operand is the previous result; the question has one sentence per step, between an opening
//   sentence that states the starting value and a closing "How many/much ...?" sentence.
// - The answer has one GSM8K-style line per step ("Tom buys 4 more apples, so Tom has 3 + 4 = 7
//   apples.") and ends "#### N". Arithmetic is written inline with ASCII operators and no GSM8K
//   calculator annotations (<<3+4=7>>): a model without a calculator gains nothing from them and
//   they would double the length of every line. The direct variant's answer is only "#### N".
// - Every starting value, operand and intermediate result is an integer in [1, MaxValue].
// - Output depends only on the options: the PRNG is SplitMix64 (Data/SplitMix64.cs), never
//   System.Random; sets are used for membership only, never iterated.
// - Splits are generated test first, then validation, then train, each from its own stream derived
//   from the seed, and every problem's normalised question is unique across all three splits.
//   So the test split depends only on the seed, step range, variant, MaxValue and the test count.
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Recur.Data;

/// <summary>What <see cref="SynthMath.Generate"/> builds. <paramref name="Count"/> is the total over all three splits.</summary>
public sealed record SynthMathOptions(
    int Count = 10_000,
    int MinSteps = 1,
    int MaxSteps = 8,
    bool Direct = false,
    ulong Seed = 1,
    int MaxValue = 999,
    double ValidationFraction = 0.05,
    double TestFraction = 0.05)
{
    public const int StepsLimit = 64;
    public const int SmallestMaxValue = 10, LargestMaxValue = 1_000_000;

    /// <summary>Problems per split: validation and test are rounded fractions of <see cref="Count"/>, train gets the rest.</summary>
    public (int Train, int Validation, int Test) SplitCounts()
    {
        int val = (int)Math.Round(Count * ValidationFraction, MidpointRounding.AwayFromZero);
        int test = (int)Math.Round(Count * TestFraction, MidpointRounding.AwayFromZero);
        return (Count - val - test, val, test);
    }

    /// <summary>
    /// Throws a one-line <see cref="RecurUserException"/> naming the property that is out of range (as
    /// <see cref="RecurUserException.Parameters"/>; <c>recur data synth-math</c> shows its flags). The steps range is
    /// named <c>MinSteps-MaxSteps</c>, one setting on the command line.
    /// </summary>
    public SynthMathOptions Validate()
    {
        if (Count < 1) throw RecurUserException.About($"Count must be ≥ 1 (got {Count})", "Count");
        if (MinSteps < 1 || MaxSteps < MinSteps || MaxSteps > StepsLimit)
            throw RecurUserException.About($"MinSteps-MaxSteps must be a range A-B with 1 ≤ A ≤ B ≤ {StepsLimit} (got {MinSteps}-{MaxSteps})", "MinSteps-MaxSteps");
        if (MaxValue < SmallestMaxValue || MaxValue > LargestMaxValue)
            throw RecurUserException.About($"MaxValue must be in {SmallestMaxValue}..{LargestMaxValue} (got {MaxValue})", "MaxValue");
        if (!(ValidationFraction >= 0 && ValidationFraction < 1))
            throw RecurUserException.About($"ValidationFraction must be in [0, 1) (got {ValidationFraction})", "ValidationFraction");
        if (!(TestFraction >= 0 && TestFraction < 1))
            throw RecurUserException.About($"TestFraction must be in [0, 1) (got {TestFraction})", "TestFraction");
        var (train, val, test) = SplitCounts();
        if (train < 1)
            throw RecurUserException.About($"Count {Count} leaves no training problems after {val} validation and {test} test problems; raise Count or lower ValidationFraction and TestFraction",
                "Count", "ValidationFraction", "TestFraction");
        return this;
    }
}

/// <summary>One problem. <see cref="Answer"/> ends with <c>#### {Final}</c>; <see cref="Steps"/> is the number of operations.</summary>
public sealed record SynthMathProblem(string Question, string Answer, int Steps, int Final);

public sealed record SynthMathSplits(IReadOnlyList<SynthMathProblem> Train, IReadOnlyList<SynthMathProblem> Validation, IReadOnlyList<SynthMathProblem> Test);

public static class SynthMath
{
    /// <summary>Bumped whenever a change to the templates or the PRNG use changes the output for a given seed.</summary>
    public const int FormatVersion = 1;

    /// <summary>Every character the generator can emit: newline plus printable ASCII.</summary>
    public static readonly string Characters = "\n" + new string(Enumerable.Range(0x20, 0x7F - 0x20).Select(c => (char)c).ToArray());

    public static SynthMathSplits Generate(SynthMathOptions o)
    {
        o.Validate();
        var (nTrain, nVal, nTest) = o.SplitCounts();
        var master = new SynthRng(o.Seed);
        ulong testSeed = master.Next(), valSeed = master.Next(), trainSeed = master.Next();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var test = GenerateSplit(o, nTest, testSeed, seen, "test");
        var val = GenerateSplit(o, nVal, valSeed, seen, "validation");
        var train = GenerateSplit(o, nTrain, trainSeed, seen, "train");
        return new SynthMathSplits(train, val, test);
    }

    /// <summary>One problem with <paramref name="steps"/> operations, drawn from <paramref name="seed"/> alone.</summary>
    public static SynthMathProblem Sample(ulong seed, int steps, int maxValue = 999, bool direct = false)
    {
        new SynthMathOptions(MinSteps: steps, MaxSteps: steps, MaxValue: maxValue).Validate();
        return Story.Write(new SynthRng(seed), steps, maxValue, direct);
    }

    /// <summary>The key used to keep splits disjoint: lower case, whitespace runs collapsed to one space.</summary>
    public static string Normalize(string question) =>
        Regex.Replace(question.Trim().ToLowerInvariant(), @"\s+", " ");

    static List<SynthMathProblem> GenerateSplit(SynthMathOptions o, int n, ulong seed, HashSet<string> seen, string name)
    {
        var rng = new SynthRng(seed);
        int kinds = o.MaxSteps - o.MinSteps + 1;
        // Round-robin over step counts gives each count ⌊n/K⌋ or ⌈n/K⌉ problems; the random start
        // keeps small splits from always missing the longest chains.
        int start = rng.Next(0, kinds - 1);
        var list = new List<SynthMathProblem>(n);
        for (int i = 0; i < n; i++)
        {
            int steps = o.MinSteps + (start + i) % kinds;
            for (int attempt = 0; ; attempt++)
            {
                if (attempt == 10_000)
                    throw RecurUserException.About($"synth-math {name} split: could not find a new distinct {steps}-step problem after {attempt} tries ({seen.Count} made so far); lower Count or raise MaxValue", "Count", "MaxValue");
                var p = Story.Write(rng, steps, o.MaxValue, o.Direct);
                if (seen.Add(Normalize(p.Question))) { list.Add(p); break; }
            }
        }
        for (int i = n - 1; i > 0; i--)
        {
            int j = rng.Next(0, i);
            (list[i], list[j]) = (list[j], list[i]);
        }
        return list;
    }

    /// <summary>Writes one JSON object per line, <c>{"question", "answer", "steps"}</c>, with "\n" line ends on every OS.</summary>
    public static void WriteJsonl(Stream stream, IEnumerable<SynthMathProblem> problems) => JsonLines.Write(stream, problems, (w, p) =>
    {
        w.WriteString("question", p.Question);
        w.WriteString("answer", p.Answer);
        w.WriteNumber("steps", p.Steps);
    });

    /// <summary>Reads a file written by <see cref="WriteJsonl"/> (or any GSM8K-style JSONL with question/answer/steps).</summary>
    public static List<SynthMathProblem> ReadJsonl(string path)
    {
        var list = new List<SynthMathProblem>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (line.Length == 0) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                string question = root.GetProperty("question").GetString() ?? throw new FormatException("question is null");
                string answer = root.GetProperty("answer").GetString() ?? throw new FormatException("answer is null");
                int steps = root.GetProperty("steps").GetInt32();
                var m = Regex.Match(answer, @"#### (\d+)$");
                if (!m.Success) throw new FormatException("answer does not end with '#### N'");
                list.Add(new SynthMathProblem(question, answer, steps, int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or OverflowException)
            {
                throw new RecurUserException($"{path}:{lineNo}: expected {{\"question\": string, \"answer\": string ending '#### N', \"steps\": int}} ({e.Message})", e);
            }
        }
        return list;
    }

    // ---------------------------------------------------------------------------------------------
    // The story: a holder (a name, or "each friend" after sharing) owns a quantity of one kind.

    sealed record Noun(string One, string Many)
    {
        public string Of(long n) => n == 1 ? One : Many;
    }

    enum Kind { Items, Containers, Money }

    enum Op { Add, Sub, Mul, Div }

    static Noun N(string one, string many) => new(one, many);

    static readonly string[] Names =
    [
        "Tom", "Sara", "Liam", "Emma", "Noah", "Olivia", "Mia", "Lucas", "Ava", "Ethan", "Zoe", "Leo",
        "Chloe", "Ben", "Lily", "Omar", "Nina", "Jack", "Grace", "Ravi", "Maya", "Sam", "Ella", "Max",
        "Hana", "Diego", "Ruby", "Finn", "Aisha", "Owen", "Ivy", "Kai", "Lena", "Marco", "Priya", "Theo",
        "Amara", "Felix", "Julia", "Yuki", "Carlos", "Nora", "Hugo", "Alice", "Jonah", "Elena", "Tariq", "Mei",
    ];

    static readonly Noun[] Items =
    [
        N("apple", "apples"), N("orange", "oranges"), N("marble", "marbles"), N("sticker", "stickers"),
        N("pencil", "pencils"), N("cookie", "cookies"), N("book", "books"), N("stamp", "stamps"),
        N("shell", "shells"), N("card", "cards"), N("egg", "eggs"), N("candy", "candies"),
        N("cupcake", "cupcakes"), N("crayon", "crayons"), N("balloon", "balloons"), N("bead", "beads"),
        N("eraser", "erasers"), N("muffin", "muffins"), N("button", "buttons"), N("toy car", "toy cars"),
        N("flower", "flowers"), N("strawberry", "strawberries"), N("ribbon", "ribbons"), N("comic", "comics"),
    ];

    static readonly Noun[] Containers = [N("bag", "bags"), N("box", "boxes"), N("jar", "jars"), N("pack", "packs"), N("basket", "baskets"), N("crate", "crates")];

    static readonly Noun[] Groups =
    [
        N("friend", "friends"), N("child", "children"), N("classmate", "classmates"), N("cousin", "cousins"),
        N("neighbor", "neighbors"), N("teammate", "teammates"), N("student", "students"), N("sister", "sisters"),
    ];

    static readonly string[] Chores = ["mowing lawns", "walking dogs", "washing cars", "babysitting", "selling lemonade", "helping at the bakery"];
    static readonly string[] Purchases = ["a book", "lunch", "a toy", "snacks", "a movie ticket", "a new hat", "art supplies", "a gift"];

    sealed class Story
    {
        readonly SynthRng _rng;
        readonly int _max;
        readonly List<string> _freeNames = [.. Names];
        readonly List<Noun> _freeGroups = [.. Groups];
        string _holder = "";
        Kind _kind;
        Noun _unit = Items[0];        // items, or the container noun for Containers
        Noun? _contents;              // what a container holds
        bool _sizeKnown;              // containers made by packing already have a stated size
        long _value;

        Story(SynthRng rng, int max) { _rng = rng; _max = max; }

        public static SynthMathProblem Write(SynthRng rng, int steps, int max, bool direct) => new Story(rng, max).Build(steps, direct);

        SynthMathProblem Build(int steps, bool direct)
        {
            var question = new StringBuilder(Open());
            var lines = new List<string>(steps);
            for (int i = 0; i < steps; i++)
            {
                var (sentence, line) = Step();
                question.Append(' ').Append(sentence);
                lines.Add(line);
            }
            question.Append(' ').Append(Close());
            string final = _value.ToString(System.Globalization.CultureInfo.InvariantCulture);
            string answer = direct ? $"#### {final}" : string.Join("\n", lines) + $"\n#### {final}";
            return new SynthMathProblem(question.ToString(), answer, steps, (int)_value);
        }

        int Next(int lo, int hi) => _rng.Next(lo, hi);
        T Pick<T>(IReadOnlyList<T> xs) => xs[_rng.Next(0, xs.Count - 1)];

        string TakeName()
        {
            int i = Next(0, _freeNames.Count - 1);
            var name = _freeNames[i];
            _freeNames.RemoveAt(i);
            return name;
        }

        Noun TakeGroup()
        {
            int i = Next(0, _freeGroups.Count - 1);
            var g = _freeGroups[i];
            _freeGroups.RemoveAt(i);
            return g;
        }

        static string Cap(string s) => char.ToUpperInvariant(s[0]) + s[1..];

        /// <summary>"5 apples", "1 apple", "3 bags" or "$5".</summary>
        string Amount(long n) => _kind == Kind.Money ? $"${n}" : $"{n} {_unit.Of(n)}";

        /// <summary>The noun phrase a question sentence uses for the current quantity: "apples", "bags of apples".</summary>
        string Things(long n) => _kind == Kind.Containers ? $"{_unit.Of(n)} of {_contents!.Many}" : _unit.Of(n);

        string Open()
        {
            _holder = TakeName();
            // Small starting values leave room for multiplications later in the chain.
            _value = Next(2, Math.Clamp(_max / 4, 10, 100));
            long a = _value;
            int kind = Next(0, 9);
            if (kind < 6)
            {
                _kind = Kind.Items;
                _unit = Pick(Items);
                return Next(0, 2) switch
                {
                    0 => $"{_holder} has {a} {_unit.Of(a)}.",
                    1 => $"{_holder} starts with {a} {_unit.Of(a)}.",
                    _ => $"{_holder} collects {a} {_unit.Of(a)}.",
                };
            }
            if (kind < 8)
            {
                _kind = Kind.Containers;
                _unit = Pick(Containers);
                _contents = Pick(Items);
                return $"{_holder} has {a} {Things(a)}.";
            }
            _kind = Kind.Money;
            return Next(0, 2) switch
            {
                0 => $"{_holder} has ${a}.",
                1 => $"{_holder} has ${a} in a piggy bank.",
                _ => $"{_holder} has saved ${a}.",
            };
        }

        string Close() => _kind switch
        {
            Kind.Money => $"How much money does {_holder} have{(Next(0, 1) == 0 ? "" : " now")}?",
            Kind.Containers => $"How many {_unit.Many} of {_contents!.Many} does {_holder} have?",
            _ => $"How many {_unit.Many} does {_holder} have{(Next(0, 1) == 0 ? "" : " now")}?",
        };

        (string Sentence, string Line) Step()
        {
            Op[] ops = [Op.Add, Op.Sub, Op.Mul, Op.Div];
            for (int i = ops.Length - 1; i > 0; i--)
            {
                int j = Next(0, i);
                (ops[i], ops[j]) = (ops[j], ops[i]);
            }
            // Try the operations in random order; Add (value < max) or Sub (value ≥ 2) always has
            // a template that needs no fresh name, so some operation always succeeds.
            foreach (var op in ops)
            {
                long b;
                switch (op)
                {
                    case Op.Add:
                        if (_value >= _max) continue;
                        b = Next(1, (int)Math.Min(_max - _value, Math.Max(10, _max / 5)));
                        break;
                    case Op.Sub:
                        if (_value < 2) continue;
                        b = Next(1, (int)_value - 1);
                        break;
                    case Op.Mul:
                        if (_value * 2 > _max) continue;
                        b = Next(2, (int)Math.Min(10, _max / _value));
                        break;
                    default:
                        var divisors = Enumerable.Range(2, 11).Where(d => d <= _value && _value % d == 0).ToList();
                        if (divisors.Count == 0) continue;
                        b = Pick(divisors);
                        break;
                }
                var templates = Templates(op, b);
                if (templates.Count == 0) continue;
                long a = _value;
                long c = op switch { Op.Add => a + b, Op.Sub => a - b, Op.Mul => a * b, _ => a / b };
                var result = Pick(templates)(a, b, c);
                _value = c;
                return result;
            }
            throw new InvalidOperationException($"no feasible step from value {_value} (max {_max})");
        }

        delegate (string Sentence, string Line) Template(long a, long b, long c);

        /// <summary>The templates usable for this operation, operand and state. Each mutates holder/kind only when applied.</summary>
        List<Template> Templates(Op op, long b)
        {
            var t = new List<Template>();
            bool money = _kind == Kind.Money, items = _kind == Kind.Items;
            bool name = _freeNames.Count > 0, group = _freeGroups.Count > 0;
            string H() => _holder;
            switch (op)
            {
                case Op.Add:
                    if (money)
                    {
                        t.Add((a, b, c) => ($"{Cap(H())} earns ${b} {Pick(Chores)}.", $"{Cap(H())} earns ${b} more, so {H()} has {a} + {b} = ${c}."));
                        if (name) t.Add((a, b, c) => { var q = TakeName(); return ($"{q} gives {H()} ${b}.", $"{q} gives {H()} ${b}, so {H()} has {a} + {b} = ${c}."); });
                        if (name) t.Add((a, b, c) => { var p = H(); _holder = TakeName(); return ($"{_holder} has ${b} more than {p}.", $"{_holder} has ${b} more than {p}, so {_holder} has {a} + {b} = ${c}."); });
                    }
                    else
                    {
                        t.Add((a, b, c) => ($"{Cap(H())} buys {b} more {Things(b)}.", $"{Cap(H())} buys {b} more {_unit.Of(b)}, so {H()} has {a} + {b} = {Amount(c)}."));
                        t.Add((a, b, c) => ($"{Cap(H())} finds {b} more {Things(b)}.", $"{Cap(H())} finds {b} more {_unit.Of(b)}, so {H()} has {a} + {b} = {Amount(c)}."));
                        if (name) t.Add((a, b, c) => { var q = TakeName(); return ($"{q} gives {H()} {b} more {Things(b)}.", $"{q} gives {H()} {b} more {_unit.Of(b)}, so {H()} has {a} + {b} = {Amount(c)}."); });
                        if (name) t.Add((a, b, c) => { var p = H(); _holder = TakeName(); return ($"{_holder} has {b} more {Things(2)} than {p}.", $"{_holder} has {b} more {_unit.Many} than {p}, so {_holder} has {a} + {b} = {Amount(c)}."); });
                    }
                    break;
                case Op.Sub:
                    if (money)
                    {
                        t.Add((a, b, c) => ($"{Cap(H())} spends ${b} on {Pick(Purchases)}.", $"{Cap(H())} spends ${b}, so {H()} has {a} - {b} = ${c} left."));
                        if (name) t.Add((a, b, c) => { var q = TakeName(); return ($"{Cap(H())} gives ${b} to {q}.", $"{Cap(H())} gives ${b} to {q}, so {H()} has {a} - {b} = ${c} left."); });
                        if (name) t.Add((a, b, c) => { var p = H(); _holder = TakeName(); return ($"{_holder} has ${b} less than {p}.", $"{_holder} has ${b} less than {p}, so {_holder} has {a} - {b} = ${c}."); });
                    }
                    else
                    {
                        t.Add((a, b, c) => ($"{Cap(H())} loses {b} of the {_unit.Many}.", $"{Cap(H())} loses {b} {_unit.Of(b)}, so {H()} has {a} - {b} = {Amount(c)} left."));
                        t.Add((a, b, c) => ($"{Cap(H())} uses {b} of the {_unit.Many}.", $"{Cap(H())} uses {b} {_unit.Of(b)}, so {H()} has {a} - {b} = {Amount(c)} left."));
                        if (name) t.Add((a, b, c) => { var q = TakeName(); return ($"{Cap(H())} gives {b} {_unit.Of(b)} to {q}.", $"{Cap(H())} gives {b} {_unit.Of(b)} to {q}, so {H()} has {a} - {b} = {Amount(c)} left."); });
                        if (name) t.Add((a, b, c) => { var p = H(); _holder = TakeName(); return ($"{_holder} has {b} fewer {Things(2)} than {p}.", $"{_holder} has {b} fewer {_unit.Many} than {p}, so {_holder} has {a} - {b} = {Amount(c)}."); });
                    }
                    break;
                case Op.Mul:
                    string times = b == 2 ? "twice" : $"{b} times";
                    if (name) t.Add((a, b, c) =>
                    {
                        var p = H();
                        _holder = TakeName();
                        string what = money ? "much money" : $"many {Things(2)}";
                        return ($"{_holder} has {times} as {what} as {p}.", $"{_holder} has {b} times as {(money ? "much money" : $"many {_unit.Many}")} as {p}, so {_holder} has {a} * {b} = {Amount(c)}.");
                    });
                    if (_kind == Kind.Containers && !_sizeKnown) t.Add((a, b, c) =>
                    {
                        var box = _unit;
                        _kind = Kind.Items;
                        _unit = _contents!;
                        _contents = null;
                        return ($"Each {box.One} holds {b} {_unit.Many}.", $"Each {box.One} holds {b} {_unit.Many}, so {H()} has {a} * {b} = {Amount(c)}.");
                    });
                    if (items) t.Add((a, b, c) =>
                    {
                        var sold = _unit;
                        _kind = Kind.Money;
                        return ($"{Cap(H())} sells all the {sold.Many} for ${b} each.", $"{Cap(H())} sells {a} {sold.Of(a)} for ${b} each, so {H()} has {a} * {b} = ${c}.");
                    });
                    break;
                case Op.Div:
                    if (group) t.Add((a, b, c) =>
                    {
                        var p = H();
                        var g = TakeGroup();
                        _holder = $"each {g.One}";
                        return money
                            ? ($"{Cap(p)} splits the money equally among {b} {g.Many}.", $"{Cap(p)} splits ${a} equally among {b} {g.Many}, so each {g.One} gets {a} / {b} = ${c}.")
                            : ($"{Cap(p)} shares the {_unit.Many} equally among {b} {g.Many}.", $"{Cap(p)} shares {a} {_unit.Of(a)} equally among {b} {g.Many}, so each {g.One} gets {a} / {b} = {Amount(c)}.");
                    });
                    if (name && b <= 4) t.Add((a, b, c) =>
                    {
                        var p = H();
                        _holder = TakeName();
                        string part = b switch { 2 => "half", 3 => "a third", _ => "a quarter" };
                        string what = money ? "much money" : $"many {Things(2)}";
                        return ($"{_holder} has {part} as {what} as {p}.", $"{_holder} has {part} as {(money ? "much money" : $"many {_unit.Many}")} as {p}, so {_holder} has {a} / {b} = {Amount(c)}.");
                    });
                    if (items) t.Add((a, b, c) =>
                    {
                        var contents = _unit;
                        var box = Pick(Containers);
                        _kind = Kind.Containers;
                        _unit = box;
                        _contents = contents;
                        _sizeKnown = true;
                        return ($"{Cap(H())} packs the {contents.Many} into {box.Many} of {b}.", $"{Cap(H())} packs {a} {contents.Of(a)} into {box.Many} of {b}, so {H()} has {a} / {b} = {Amount(c)}.");
                    });
                    if (money) t.Add((a, b, c) =>
                    {
                        var bought = Pick(Items);
                        _kind = Kind.Items;
                        _unit = bought;
                        return ($"{Cap(H())} spends all of the money on {bought.Many} that cost ${b} each.", $"{Cap(H())} spends ${a} on {bought.Many} at ${b} each, so {H()} buys {a} / {b} = {Amount(c)}.");
                    });
                    break;
            }
            return t;
        }
    }
}

/// <summary>
/// The generator's random source: <see cref="SplitMix64"/> (shared with the data pipeline) behind a reference
/// type, so the story builder and its caller advance one stream, plus an unbiased integer range.
/// </summary>
internal sealed class SynthRng(ulong seed)
{
    SplitMix64 _state = new(seed);

    public ulong Next() => _state.Next();

    /// <summary>Uniform integer in [lo, hi], unbiased by rejection of the top partial block.</summary>
    public int Next(int lo, int hi)
    {
        if (hi < lo) throw new ArgumentOutOfRangeException(nameof(hi), $"empty range [{lo}, {hi}]");
        ulong range = (ulong)((long)hi - lo) + 1;
        ulong limit = ulong.MaxValue - ulong.MaxValue % range;
        ulong x;
        do x = Next(); while (x >= limit);
        return (int)(lo + (long)(x % range));
    }
}
