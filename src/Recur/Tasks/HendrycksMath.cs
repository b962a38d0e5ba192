namespace Recur.Tasks;

/// <summary>One scored <c>hendrycks_math</c> answer: the text between the output's first and last <c>$</c> (or all of it).</summary>
public sealed record HendrycksMathSample(int Index, string Prompt, string Output, string Gold, string Extracted, bool Correct,
    string? Subject = null) : IEvalSample;

/// <summary>
/// lm-eval's <c>hendrycks_math</c> (EleutherAI/lm-evaluation-harness:lm_eval/tasks/hendrycks_math, rules version 1.0):
/// prompt <c>Problem: {problem}\nAnswer:</c>, stop at <c>Problem:</c>; the answer is what lies between the output's
/// first and last <c>$</c> (the whole output when it has fewer than two), the gold the content of the solution's last
/// <c>\boxed{}</c>; equal when Hendrycks' <c>strip_string</c> makes them the same string. Where the harness's
/// <c>strip_string</c> raises (an assertion, or <c>int()</c> of a non-number in <c>fix_a_slash_b</c>), its
/// <c>is_equiv</c> compares the raw strings; <see cref="StripString"/> returns null there.
/// </summary>
public sealed class HendrycksMathTask : GenerationTask<MathDoc, HendrycksMathSample>
{
    public const string GroupName = "hendrycks_math";

    public static IReadOnlyList<(string Name, string Type)> Subtasks { get; } =
        MathTask.Subtasks.Select(s => (s.Name.Replace("minerva_math", GroupName, StringComparison.Ordinal), s.Type)).ToList();

    public HendrycksMathTask(string name = GroupName, GenerationTaskOptions? options = null, IReadOnlyList<Exemplar>? exemplarPool = null, string? fewshotSource = null)
        : base(name, options, exemplarPool, fewshotSource)
    {
        SubjectType = Subtasks.FirstOrDefault(s => s.Name == name).Type;
    }

    /// <summary>Exemplars: the first K training problems with their boxed answer as the target (the yaml's <c>doc_to_target</c>).</summary>
    public static HendrycksMathTask Create(string name, GenerationTaskOptions options, string? fewshotPath)
    {
        if (options.NumFewshot == 0 || fewshotPath is null) return new HendrycksMathTask(name, options, [], fewshotPath);
        var pool = LoadExemplars(fewshotPath, options.NumFewshot + 1, row => new Exemplar(row.String("problem"), Gold(row)));
        return new HendrycksMathTask(name, options, pool, fewshotPath);
    }

    public string? SubjectType { get; }

    public override IReadOnlyList<string> StopSequences => MathTask.Stops;

    protected override string ExemplarHint => "a MATH train.jsonl with problem, solution";

    public override string DocToText(string problem) => "Problem: " + problem + "\nAnswer:";

    public override TaskData<MathDoc> Load(string path, TaskLoadOptions? options = null)
    {
        options ??= TaskLoadOptions.Default;
        var all = Jsonl.Read(path, row => new MathDoc(row.Line, row.String("problem"), Gold(row), row.OptionalString("type") ?? row.OptionalString("subject")),
            SubjectType is null ? options : options with { Limit = null });
        if (SubjectType is null) return all;
        var kept = all.Docs.Where(d => d.Subject == SubjectType).ToList();
        if (kept.Count == 0) throw new RecurUserException($"{path}: no problem of type '{SubjectType}' for {Name} (the rows need a 'type' field)");
        if (options.Limit is int lim && lim < kept.Count) kept = kept.Take(lim).ToList();
        return all with { Docs = kept };
    }

    /// <summary>The gold: the content of the solution's last <c>\boxed{}</c> (not normalised), or <c>answer</c>.</summary>
    public static string Gold(JsonlRow row)
    {
        if (row.Has("solution"))
            return MinervaMath.RemoveBoxed(MinervaMath.LastBoxedOnlyString(row.String("solution"))) ?? throw row.Error("field 'solution' has no \\boxed{...} answer");
        if (row.Has("answer")) return row.StringOrNumber("answer");
        throw row.Error("missing field 'solution' (or 'answer')");
    }

    public override string GoldOf(JsonlRow doc) => Gold(doc);

    protected override string QuestionOf(MathDoc doc) => doc.Problem;

    protected override string GoldOf(MathDoc doc) => doc.Gold;

    protected override HendrycksMathSample ScoreDoc(int index, string prompt, string output, MathDoc doc) =>
        Score(index, prompt, output, doc.Gold) with { Subject = doc.Subject };

    /// <summary>utils.py <c>process_results</c>.</summary>
    public override HendrycksMathSample Score(int index, string prompt, string output, string gold)
    {
        var cut = LmEval.CutAtStopSequences(output, StopSequences);
        var extracted = ExtractAnswer(cut);
        return new HendrycksMathSample(index, prompt, cut, gold, extracted, IsEquivalent(extracted, gold));
    }

    /// <summary>The text between the first and the last <c>$</c>; the whole output when it has fewer than two.</summary>
    public static string ExtractAnswer(string output)
    {
        int first = output.IndexOf('$'), last = output.LastIndexOf('$');
        return first < 0 || first == last ? output : output[(first + 1)..last];
    }

    /// <summary>utils.py <c>is_equiv</c>: stripped strings equal, or the raw strings when stripping fails.</summary>
    public static bool IsEquivalent(string a, string b) =>
        StripString(a) is string x && StripString(b) is string y ? x == y : a == b;

    public override IReadOnlyDictionary<string, bool> Correctness(HendrycksMathSample s) => new Dictionary<string, bool> { ["none"] = s.Correct };

    public override EvalResult Aggregate(IReadOnlyList<HendrycksMathSample> samples, IReadOnlyDictionary<string, string> settings, IReadOnlyList<string> warnings)
    {
        var b = new EvalResult.Builder();
        if (Name == GroupName && samples.Count > 0 && samples.All(s => s.Subject is not null) && samples.Select(s => s.Subject).Distinct().Count() > 1)
            b.PooledMean("exact_match", "none", samples.GroupBy(s => s.Subject).Select(g => g.Select(s => s.Correct ? 1.0 : 0.0).ToList()).ToList());
        else b.Mean("exact_match", "none", samples.Select(s => s.Correct ? 1.0 : 0.0).ToList());
        return new EvalResult(Name, samples.Count, b.Build(), settings, warnings);
    }

    /// <summary>Hendrycks' <c>strip_string</c>, step for step; null where the Python raises.</summary>
    public static string? StripString(string s)
    {
        s = s.Replace("\n", "").Replace("\\!", "").Replace("\\\\", "\\").Replace("tfrac", "frac").Replace("dfrac", "frac")
            .Replace("\\left", "").Replace("\\right", "").Replace("^{\\circ}", "").Replace("^\\circ", "").Replace("\\$", "");
        // remove_right_units: asserts a single "\text{ ".
        if (s.Contains("\\text{ ", StringComparison.Ordinal))
        {
            var parts = s.Split("\\text{ ");
            if (parts.Length != 2) return null;
            s = parts[0];
        }
        s = s.Replace("\\%", "").Replace(" .", " 0.").Replace("{.", "{0.");
        if (s.Length == 0) return s;
        if (s[0] == '.') s = "0" + s;
        var eq = s.Split('=');
        if (eq.Length == 2 && eq[0].Length <= 2) s = eq[1];
        // fix_sqrt: IndexError on "\sqrt" at the end.
        if (s.Contains("\\sqrt", StringComparison.Ordinal))
        {
            var splits = s.Split("\\sqrt");
            var sb = new System.Text.StringBuilder(splits[0]);
            foreach (var part in splits.Skip(1))
            {
                if (part.Length == 0) return null;
                sb.Append(part[0] != '{' ? "\\sqrt{" + part[0] + "}" + part[1..] : "\\sqrt" + part);
            }
            s = sb.ToString();
        }
        s = s.Replace(" ", "");
        if (FixFracs(s) is not string f) return null;
        s = f;
        if (s == "0.5") s = "\\frac{1}{2}";
        return FixASlashB(s);
    }

    /// <summary><c>fix_fracs</c>: \frac12 → \frac{1}{2}; a too-short tail returns the string unchanged; an empty one raises.</summary>
    static string? FixFracs(string s)
    {
        var subs = s.Split("\\frac");
        var sb = new System.Text.StringBuilder(subs[0]);
        foreach (var sub in subs.Skip(1))
        {
            sb.Append("\\frac");
            if (sub.Length == 0) return null;
            if (sub[0] == '{') { sb.Append(sub); continue; }
            if (sub.Length < 2) return s;
            char a = sub[0], b = sub[1];
            sb.Append(b != '{' ? "{" + a + "}{" + b + "}" + sub[2..] : "{" + a + "}" + b + sub[2..]);
        }
        return sb.ToString();
    }

    /// <summary><c>fix_a_slash_b</c>: "3/4" → \frac{3}{4}; <c>int()</c> of a non-number raises (null); a round-trip mismatch keeps the string.</summary>
    static string? FixASlashB(string s)
    {
        var parts = s.Split('/');
        if (parts.Length != 2) return s;
        if (PyInt(parts[0]) is not long a || PyInt(parts[1]) is not long b) return null;
        return s == $"{a}/{b}" ? "\\frac{" + a + "}{" + b + "}" : s;
    }

    /// <summary>Python's <c>int(str)</c> for what these answers hold: optional white space and sign, digits, '_' between digits.</summary>
    static long? PyInt(string t)
    {
        var x = t.Trim();
        if (x.StartsWith('+') || x.StartsWith('-')) x = x[1..];
        if (x.Length == 0 || !char.IsAsciiDigit(x[0]) || !char.IsAsciiDigit(x[^1]) || x.Contains("__", StringComparison.Ordinal)) return null;
        if (x.Any(c => !char.IsAsciiDigit(c) && c != '_')) return null;
        return long.TryParse(t.Trim().Replace("_", ""), System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : null;
    }
}
