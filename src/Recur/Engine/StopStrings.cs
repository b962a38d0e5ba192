namespace Recur.Engine;

/// <summary>
/// The one stop-string matcher: generation (OpenAI's <c>stop</c>, chat templates' turn ends, lm-eval's <c>until</c>) and
/// the tasks' final cut (<see cref="Cut"/>) all use it. Streamed text is cut where lm-eval would cut the whole text:
/// before the first occurrence of each stop in turn, which is the earliest stop unless stops overlap. Text that could
/// still turn into a stop string is held back until the next piece decides it, so nothing after a stop is ever
/// emitted, and the pieces returned concatenate to <see cref="Cut"/> of the whole text.
/// </summary>
public sealed class StopStringMatcher
{
    readonly string[] _stops;
    string _held = "";

    public StopStringMatcher(IEnumerable<string>? stops)
    {
        _stops = (stops ?? []).Where(s => s.Length > 0).Distinct(StringComparer.Ordinal).ToArray();
    }

    /// <summary>Whole text cut before the first occurrence of any stop string (lm-eval's <c>until</c> rule).</summary>
    public static string Cut(string text, IEnumerable<string>? stops)
    {
        var m = new StopStringMatcher(stops);
        return m.Push(text) + m.Flush();
    }

    /// <summary>True once a stop string has been seen; later pushes return nothing.</summary>
    public bool Stopped { get; private set; }

    /// <summary>The stop string that ended the text, if any.</summary>
    public string? Matched { get; private set; }

    /// <summary>Adds a piece of text and returns the part that can be emitted now.</summary>
    public string Push(string text)
    {
        if (Stopped) return "";
        if (_stops.Length == 0) return text;
        string buffer = _held + text;
        // lm-eval's rule, stop by stop in the given order: keep the text before the stop's first occurrence in what is
        // left (EleutherAI/lm-evaluation-harness:lm_eval/models/utils.py, postprocess_generated_text). Only the buffer
        // needs the search: the emitted text holds no stop, and no stop straddles the boundary (the held suffix is the
        // longest one that could start a stop).
        int cut = buffer.Length;
        foreach (var s in _stops)
        {
            int i = buffer.IndexOf(s, 0, cut, StringComparison.Ordinal);
            if (i >= 0) { cut = i; Matched = s; }
        }
        if (cut < buffer.Length)
        {
            Stopped = true;
            _held = "";
            return buffer[..cut];
        }
        int keep = LongestSuffixThatStartsAStop(buffer);
        _held = buffer[^keep..];
        return buffer[..^keep];
    }

    /// <summary>Returns the held-back text when generation ended without a stop string.</summary>
    public string Flush()
    {
        if (Stopped) return "";
        string rest = _held;
        _held = "";
        return rest;
    }

    int LongestSuffixThatStartsAStop(string buffer)
    {
        int best = 0;
        foreach (var s in _stops)
            for (int n = Math.Min(s.Length - 1, buffer.Length); n > best; n--)
                if (string.CompareOrdinal(buffer, buffer.Length - n, s, 0, n) == 0) { best = n; break; }
        return best;
    }
}
