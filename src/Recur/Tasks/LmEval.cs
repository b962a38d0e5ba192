using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>
/// The small pieces of lm-evaluation-harness that decide scores: stop-sequence cutting, the regex
/// filter, exact_match and the aggregations. Each mirrors the Python semantics named in its comment.
/// </summary>
public static class LmEval
{
    /// <summary>
    /// Cuts <paramref name="text"/> before the first occurrence of each stop sequence in turn, as
    /// EleutherAI/lm-evaluation-harness:lm_eval/models/utils.py <c>postprocess_generated_text</c> does
    /// (<c>s.split(term)[0]</c> for every non-empty term). Idempotent.
    /// </summary>
    public static string CutAtStopSequences(string text, IReadOnlyList<string> stops) => Engine.StopStringMatcher.Cut(text, stops);

    /// <summary>Python's <c>str.strip()</c>: also removes U+001C..U+001F, which .NET does not count as white space.</summary>
    public static string PyStrip(string s)
    {
        int a = 0, b = s.Length;
        while (a < b && IsPySpace(s[a])) a++;
        while (b > a && IsPySpace(s[b - 1])) b--;
        return s[a..b];
    }

    static bool IsPySpace(char c) => char.IsWhiteSpace(c) || (c >= '\x1c' && c <= '\x1f');

    /// <summary>Mean of per-sample scores (lm-eval's <c>mean</c> aggregation).</summary>
    public static double Mean(IReadOnlyList<double> xs) => xs.Count == 0 ? double.NaN : xs.Sum() / xs.Count;

    /// <summary>
    /// Standard error of the mean with the n−1 sample deviation, as lm_eval/api/metrics.py
    /// <c>mean_stderr</c>; NaN below two samples (lm-eval prints N/A).
    /// </summary>
    public static double MeanStderr(IReadOnlyList<double> xs)
    {
        if (xs.Count < 2) return double.NaN;
        double mu = Mean(xs), ss = 0;
        foreach (var x in xs) ss += (x - mu) * (x - mu);
        return Math.Sqrt(ss / (xs.Count - 1)) / Math.Sqrt(xs.Count);
    }

    /// <summary><c>numpy.argmax</c>: the first index of the maximum; a NaN wins at its first position.</summary>
    public static int ArgMax(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) throw new ArgumentException("argmax of an empty list");
        int best = 0;
        for (int i = 0; i < xs.Count; i++)
        {
            if (double.IsNaN(xs[i])) return i;
            if (xs[i] > xs[best]) best = i;
        }
        return best;
    }
}

/// <summary>
/// lm-eval's <c>regex</c> filter (EleutherAI/lm-evaluation-harness:lm_eval/filters/extraction.py,
/// <c>RegexFilter</c>) followed by <c>take_first</c>: <c>re.findall</c>, pick match
/// <see cref="GroupSelect"/> (Python indexing, −1 = last); when the pattern has several groups a match is a
/// tuple and its first non-empty group is used; strip; <see cref="Fallback"/> when nothing matches.
/// </summary>
public sealed class RegexFilter
{
    public RegexFilter(string pattern, int groupSelect = 0, string fallback = "[invalid]")
    {
        Pattern = pattern;
        GroupSelect = groupSelect;
        Fallback = fallback;
        _regex = new Regex(pattern, RegexOptions.CultureInvariant);
    }

    readonly Regex _regex;
    public string Pattern { get; }
    public int GroupSelect { get; }
    public string Fallback { get; }

    public string Apply(string response)
    {
        var matches = _regex.Matches(response);
        if (matches.Count == 0) return Fallback;
        int i = GroupSelect < 0 ? matches.Count + GroupSelect : GroupSelect;
        // Python would raise IndexError here; a score must not crash on a model's output, so fall back.
        if (i < 0 || i >= matches.Count) return Fallback;
        var m = matches[i];
        int groups = m.Groups.Count - 1;
        string picked;
        if (groups == 0) picked = m.Value;
        else if (groups == 1) picked = m.Groups[1].Value;
        else
        {
            // findall returns a tuple of all groups, '' for those that did not take part.
            string? first = null;
            for (int g = 1; g <= groups && first is null; g++)
                if (m.Groups[g].Value.Length > 0) first = m.Groups[g].Value;
            if (first is null) return Fallback;
            picked = first;
        }
        return LmEval.PyStrip(picked);
    }
}

/// <summary>
/// lm-eval's <c>exact_match</c> (EleutherAI/lm-evaluation-harness:lm_eval/api/metrics.py,
/// <c>exact_match_hf_evaluate</c>): delete every match of each ignore-regex in order from both strings,
/// then optionally lower-case and drop ASCII punctuation, then compare.
/// </summary>
public sealed class ExactMatch
{
    public ExactMatch(IReadOnlyList<string>? regexesToIgnore = null, bool ignoreCase = false, bool ignorePunctuation = false)
    {
        RegexesToIgnore = regexesToIgnore ?? [];
        IgnoreCase = ignoreCase;
        IgnorePunctuation = ignorePunctuation;
        _ignore = RegexesToIgnore.Select(r => new Regex(r, RegexOptions.CultureInvariant)).ToArray();
    }

    readonly Regex[] _ignore;
    public IReadOnlyList<string> RegexesToIgnore { get; }
    public bool IgnoreCase { get; }
    public bool IgnorePunctuation { get; }

    // Python's string.punctuation.
    const string Punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    public string Normalize(string s)
    {
        foreach (var r in _ignore) s = r.Replace(s, "");
        if (IgnoreCase) s = s.ToLowerInvariant();
        if (IgnorePunctuation) s = string.Concat(s.Where(c => Punctuation.IndexOf(c) < 0));
        return s;
    }

    public bool Matches(string prediction, string reference) =>
        string.Equals(Normalize(prediction), Normalize(reference), StringComparison.Ordinal);
}
