namespace Recur.Engine;

/// <summary>
/// Cuts streamed text at the first occurrence of any stop string (OpenAI's <c>stop</c>). Text that could
/// still turn into a stop string is held back until the next piece decides it, so nothing after a stop
/// is ever emitted, and the pieces returned concatenate to the text up to (not including) the stop.
/// </summary>
public sealed class StopStringMatcher
{
    readonly string[] _stops;
    string _held = "";

    public StopStringMatcher(IEnumerable<string>? stops)
    {
        _stops = (stops ?? []).Where(s => s.Length > 0).Distinct(StringComparer.Ordinal).ToArray();
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
        int first = -1;
        foreach (var s in _stops)
        {
            int i = buffer.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (first < 0 || i < first)) { first = i; Matched = s; }
        }
        if (first >= 0)
        {
            Stopped = true;
            _held = "";
            return buffer[..first];
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
