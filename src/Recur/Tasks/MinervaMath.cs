using System.Numerics;
using System.Text;
using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>
/// Answer extraction and normalisation for Minerva-style MATH, following
/// EleutherAI/lm-evaluation-harness:lm_eval/tasks/minerva_math/utils.py, whose normaliser is Minerva's
/// (Lewkowycz et al. 2022, appendix D). Only the final equivalence check differs: the harness compares with
/// sympy (<c>is_equiv</c>); here two answers are equal when their normalised strings are equal or both are
/// plain numbers or integer fractions of the same value (see <see cref="IsEquivalent"/>).
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
    /// Whether two normalised answers agree: the same string, or the same value when both are a plain decimal
    /// number or an integer fraction (<c>\frac{a}{b}</c>, also <c>\dfrac</c>/<c>\tfrac</c>), compared exactly.
    /// This is the part of the harness's sympy check that needs no algebra (0.50 = 0.5 = \frac{1}{2});
    /// symbolic equivalences (e.g. <c>\sqrt{8}</c> vs <c>2\sqrt{2}</c>) are not detected. Empty strings and
    /// <see cref="InvalidAnswer"/> never match.
    /// </summary>
    public static bool IsEquivalent(string a, string b)
    {
        if (a.Length == 0 || b.Length == 0 || a == InvalidAnswer || b == InvalidAnswer) return false;
        if (a == b) return true;
        return TryValue(a, out var p1, out var q1) && TryValue(b, out var p2, out var q2) && p1 * q2 == p2 * q1;
    }

    static readonly Regex Decimal = new(@"^(-?)([0-9]*)(?:\.([0-9]*))?\z", RegexOptions.CultureInvariant);
    static readonly Regex Fraction = new(@"^(-?)\\[dt]?frac\{(-?[0-9]+)\}\{(-?[0-9]+)\}\z", RegexOptions.CultureInvariant);

    /// <summary>Parses a plain number or integer fraction as p/q with q &gt; 0.</summary>
    internal static bool TryValue(string s, out BigInteger p, out BigInteger q)
    {
        p = 0; q = 1;
        var m = Decimal.Match(s);
        if (m.Success)
        {
            string whole = m.Groups[2].Value, frac = m.Groups[3].Value;
            if (whole.Length + frac.Length == 0) return false;
            p = BigInteger.Parse(whole + frac, System.Globalization.CultureInfo.InvariantCulture);
            q = BigInteger.Pow(10, frac.Length);
            if (m.Groups[1].Value == "-") p = -p;
            return true;
        }
        m = Fraction.Match(s);
        if (!m.Success) return false;
        p = BigInteger.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
        q = BigInteger.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture);
        if (q.IsZero) return false;
        if (m.Groups[1].Value == "-") p = -p;
        if (q.Sign < 0) { p = -p; q = -q; }
        return true;
    }
}
