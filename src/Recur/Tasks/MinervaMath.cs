using System.Numerics;
using System.Text;
using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>
/// Answer extraction and normalisation for Minerva-style MATH, following
/// EleutherAI/lm-evaluation-harness:lm_eval/tasks/minerva_math/utils.py, whose normaliser is Minerva's
/// (Lewkowycz et al. 2022, appendix D). The final equivalence check is the harness's sympy test, reproduced in
/// <see cref="MathEquivalence"/>.
/// </summary>
public static class MinervaMath
{
    /// <summary>What <see cref="GetUnnormalizedAnswer"/> returns when the output has no final-answer sentence.</summary>
    public const string InvalidAnswer = "[invalidanswer]";

    const string BoxedSpace = "\\boxed ";

    /// <summary>
    /// The last <c>\boxed{…}</c> (or <c>\fbox{…}</c>) with balanced braces, or <c>\boxed x</c> up to the next
    /// <c>$</c>; null when there is none or its braces never close (utils.py <c>last_boxed_only_string</c>).
    /// </summary>
    public static string? LastBoxedOnlyString(string s)
    {
        int sp = s.LastIndexOf(BoxedSpace, StringComparison.Ordinal);
        if (sp >= 0)
        {
            var tail = s[(sp + BoxedSpace.Length)..];
            int dollar = tail.IndexOf('$');
            return BoxedSpace + (dollar < 0 ? tail : tail[..dollar]);
        }
        int idx = s.LastIndexOf("\\boxed", StringComparison.Ordinal);
        if (idx < 0) idx = s.LastIndexOf("\\fbox", StringComparison.Ordinal);
        if (idx < 0) return null;
        int open = 0;
        for (int i = idx; i < s.Length; i++)
        {
            if (s[i] == '{') open++;
            if (s[i] == '}')
            {
                open--;
                if (open == 0) return s[idx..(i + 1)];
            }
        }
        return null;
    }

    /// <summary>
    /// The content of <c>\boxed{…}</c> or <c>\boxed x</c> (utils.py <c>remove_boxed</c>); null where the
    /// harness's assertions would fail (e.g. <c>\fbox{…}</c>).
    /// </summary>
    public static string? RemoveBoxed(string? s)
    {
        if (s is null) return null;
        if (s.Contains(BoxedSpace, StringComparison.Ordinal))
            return s.StartsWith(BoxedSpace, StringComparison.Ordinal) ? s[BoxedSpace.Length..] : null;
        const string left = "\\boxed{";
        if (!s.StartsWith(left, StringComparison.Ordinal) || s.Length < left.Length + 1 || s[^1] != '}') return null;
        return s[left.Length..^1];
    }

    static readonly Regex FinalAnswer = new(@"Final Answer: The final answer is(.*?). I hope it is correct.", RegexOptions.CultureInvariant);

    /// <summary>
    /// X from "Final Answer: The final answer is X. I hope it is correct." (first occurrence; the sentence end
    /// is appended first so an output cut right after X still matches), else <see cref="InvalidAnswer"/>
    /// (utils.py <c>get_unnormalized_answer</c>).
    /// </summary>
    public static string GetUnnormalizedAnswer(string text)
    {
        var m = FinalAnswer.Match(text + "I hope it is correct.");
        return m.Success ? LmEval.PyStrip(m.Groups[1].Value) : InvalidAnswer;
    }

    // Minerva appendix D, in the harness's order (utils.py SUBSTITUTIONS, REMOVED_EXPRESSIONS).
    static readonly (string Before, string After)[] Substitutions =
    [
        ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
        ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
    ];

    static readonly string[] RemovedExpressions =
    [
        "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
        "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
        "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3",
        "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", "\"", "\\dots",
    ];

    static readonly Regex MathDollars = new(@"(.*?)(\$)(.*?)(\$)(.*)", RegexOptions.CultureInvariant);
    static readonly Regex Text = new(@"(\\text\{)(.*?)(\})", RegexOptions.CultureInvariant);
    static readonly Regex Textbf = new(@"(\\textbf\{)(.*?)(\})", RegexOptions.CultureInvariant);
    static readonly Regex Overline = new(@"(\\overline\{)(.*?)(\})", RegexOptions.CultureInvariant);
    static readonly Regex Boxed = new(@"(\\boxed\{)(.*)(\})", RegexOptions.CultureInvariant);
    static readonly Regex FracShorthand = new(@"(frac)([^{])(.)", RegexOptions.CultureInvariant);
    static readonly Regex SqrtShorthand = new(@"(sqrt)([^{])", RegexOptions.CultureInvariant);

    /// <summary>Minerva's <c>normalize_final_answer</c>, step for step (utils.py).</summary>
    public static string NormalizeFinalAnswer(string answer)
    {
        var s = answer.Split('=')[^1];
        foreach (var (before, after) in Substitutions) s = s.Replace(before, after, StringComparison.Ordinal);
        foreach (var expr in RemovedExpressions) s = s.Replace(expr, "", StringComparison.Ordinal);

        // Keep what is inside $…$, \text{}, \textbf{}, \overline{}, \boxed{}.
        s = MathDollars.Replace(s, "$$${3}$$");
        s = Text.Replace(s, "${2}");
        s = Textbf.Replace(s, "${2}");
        s = Overline.Replace(s, "${2}");
        s = Boxed.Replace(s, "${2}");

        // \fracab -> \frac{a}{b}, \sqrta -> \sqrt{a}.
        s = FracShorthand.Replace(s, "frac{${2}}{${3}}");
        s = SqrtShorthand.Replace(s, "sqrt{${2}}");
        s = s.Replace("$", "", StringComparison.Ordinal);

        // 100,000 -> 100000 when what is left is all digits (Python str.isdigit).
        var noCommas = s.Replace(",", "", StringComparison.Ordinal);
        if (IsPyDigits(noCommas)) s = noCommas;
        return s;
    }

    static bool IsPyDigits(string s)
    {
        if (s.Length == 0) return false;
        foreach (var r in s.EnumerateRunes())
            if (!Rune.IsDigit(r) && !(r.IsBmp && System.Globalization.CharUnicodeInfo.GetDigitValue((char)r.Value) >= 0)) return false;
        return true;
    }

    /// <summary>The normalised gold answer of a MATH solution: its last <c>\boxed{…}</c>; null when it has none.</summary>
    public static string? GoldFromSolution(string solution) =>
        RemoveBoxed(LastBoxedOnlyString(solution)) is string boxed ? NormalizeFinalAnswer(boxed) : null;

    /// <summary>
    /// Whether two normalised answers agree as the harness's <c>is_equiv</c> decides: sympy's LaTeX parser and
    /// <c>simplify(a - b) == 0</c>, reproduced by <see cref="MathEquivalence"/>.
    /// </summary>
    public static bool IsEquivalent(string a, string b) => MathEquivalence.IsEquivalent(a, b);
}
