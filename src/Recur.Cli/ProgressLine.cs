using System.Diagnostics;
using System.Globalization;

namespace Recur.Cli;

/// <summary>
/// One live progress line at the bottom of a terminal, with permanent lines (logs, results) printed above it.
/// Every frame is fitted to the terminal's current width minus one column, so it never wraps (a wrapped live
/// line is what scrolls fragments into the log above): narrow terminals lose the bar first, then the elapsed
/// time, then the time left, and the description is cut with "…". A frame is redrawn in place with a carriage
/// return and erase-to-end-of-line, which every terminal honours. With stdout redirected (<c>live: false</c>)
/// nothing is redrawn: <see cref="Log"/> prints plain lines and updates print nothing.
/// </summary>
sealed class ProgressLine
{
    readonly TextWriter _out;
    readonly Func<int> _width;
    readonly Func<TimeSpan> _clock;
    readonly object _gate = new();
    string _description = "";
    long _done, _total;
    TimeSpan _started;
    bool _shown;
    TimeSpan _lastDraw = TimeSpan.MinValue;

    /// <param name="live">Redraw a live line (a terminal); false prints plain lines only.</param>
    /// <param name="width">The terminal's width in columns, read at every frame (it can change).</param>
    /// <param name="clock">Elapsed time source (tests pass a fake one).</param>
    public ProgressLine(TextWriter output, bool live, Func<int> width, Func<TimeSpan>? clock = null)
    {
        _out = output;
        Live = live;
        _width = width;
        var sw = Stopwatch.StartNew();
        _clock = clock ?? (() => sw.Elapsed);
    }

    /// <summary>A line for the process's stdout: live when it is a terminal.</summary>
    public static ProgressLine ForConsole() => new(Console.Out, !Console.IsOutputRedirected, TerminalWidth);

    public bool Live { get; }

    /// <summary>A line on stderr, broken between words (<see cref="Wrap"/>) when stderr is a terminal.</summary>
    public static void WriteError(string line)
    {
        foreach (var row in Console.IsErrorRedirected ? [line] : Wrap(line, TerminalWidth() - 1)) Console.Error.WriteLine(row);
    }

    static int TerminalWidth()
    {
        try { return Console.WindowWidth > 0 ? Console.WindowWidth : 80; }
        catch (IOException) { return 80; }
    }

    /// <summary>Starts a new task on the live line (its elapsed time counts from now).</summary>
    public void Start(string description, long total)
    {
        lock (_gate)
        {
            _description = description;
            _done = 0;
            _total = total;
            _started = _clock();
            Draw(force: true);
        }
    }

    /// <summary>New progress; redrawn at most ten times a second.</summary>
    public void Update(long done, long total, string? description = null)
    {
        lock (_gate)
        {
            _done = done;
            _total = total;
            if (description is not null) _description = description;
            Draw(force: false);
        }
    }

    /// <summary>Redraws the current frame (the elapsed time moves on between updates).</summary>
    public void Refresh()
    {
        lock (_gate) if (_shown) Draw(force: false);
    }

    /// <summary>A permanent line above the live one (on a terminal the live line is redrawn below it).</summary>
    public void Log(string line)
    {
        lock (_gate)
        {
            if (!Live) { _out.WriteLine(line); _out.Flush(); return; }
            foreach (var row in Wrap(line, _width() - 1)) _out.Write("\r\u001b[K" + row + "\n");
            if (_shown) Draw(force: true);
            else _out.Flush();
        }
    }

    /// <summary>
    /// Ends the live line: a last frame (at 100 % when <paramref name="completed"/>) that stays on the screen, then a
    /// new line. Nothing happens when no task is shown or the output is not live.
    /// </summary>
    public void Finish(bool completed = true)
    {
        lock (_gate)
        {
            if (!Live || !_shown) return;
            if (completed && _total > 0) _done = _total;
            Draw(force: true);
            _out.Write("\n");
            _out.Flush();
            _shown = false;
        }
    }

    void Draw(bool force)
    {
        if (!Live) return;
        var now = _clock();
        if (!force && _shown && now - _lastDraw < TimeSpan.FromMilliseconds(100)) return;
        _lastDraw = now;
        var elapsed = now - _started;
        TimeSpan? left = _total > 0 && _done > 0 && _done < _total ? elapsed * ((double)(_total - _done) / _done) : null;
        _out.Write("\r" + Frame(_width(), _description, _done, _total, elapsed, left) + "\u001b[K");
        _out.Flush();
        _shown = true;
    }

    /// <summary>
    /// One frame for a terminal <paramref name="width"/> columns wide, at most width − 1 characters (writing the
    /// last column makes some terminals wrap): "description  [=====>    ]  42%  1:05  ETA 1:30", the description
    /// given up to half the width before the bar, and columns dropped in the order bar, elapsed, time left when they
    /// do not fit beside 20 characters of description.
    /// </summary>
    internal static string Frame(int width, string description, long done, long total, TimeSpan elapsed, TimeSpan? left)
    {
        int avail = Math.Max(1, width - 1);
        description = description.Replace('\n', ' ').Replace('\r', ' ');
        double fraction = total > 0 ? Math.Clamp((double)done / total, 0, 1) : 0;
        string pct = total > 0 ? $"{(int)Math.Floor(fraction * 100),3}%" : "";
        string el = Clock(elapsed);
        string eta = left is { } l ? "ETA " + Clock(l) : total > 0 && done >= total ? "" : "ETA -:--";
        const int minDescription = 20, minBar = 10, maxBar = 40;
        // Candidate layouts, richest first: (bar?, right-hand columns).
        var layouts = new (bool Bar, string[] Right)[]
        {
            (true, [pct, el, eta]), (false, [pct, el, eta]), (false, [pct, eta]), (false, [pct]), (false, []),
        };
        foreach (var (bar, right) in layouts)
        {
            var cols = right.Where(c => c.Length > 0).ToArray();
            int fixedWidth = cols.Sum(c => c.Length + 2);
            int descWidth = Math.Min(description.Length, minDescription);
            if (!bar)
            {
                if (fixedWidth + descWidth > avail && cols.Length > 0) continue;
                int dw = avail - fixedWidth;
                return Fit(description, dw, pad: cols.Length > 0) + string.Concat(cols.Select(c => "  " + c));
            }
            // The description gets up to half the line before the bar takes any: at 80 columns a training status keeps
            // its step and loss ("phase 1 step 14/30 loss 3.1234 μ=4 …") rather than a longer bar.
            int barWidth = Math.Min(maxBar, avail - fixedWidth - 2 - Math.Max(descWidth, Math.Min(description.Length, avail / 2)));
            if (barWidth < minBar || total <= 0) continue;
            int descSpace = avail - fixedWidth - 2 - barWidth;
            return Fit(description, descSpace, pad: true) + "  " + Bar(fraction, barWidth) + string.Concat(cols.Select(c => "  " + c));
        }
        return Fit(description, avail, pad: false);
    }

    /// <summary>
    /// A permanent line broken at spaces into rows of at most <paramref name="width"/> characters, continuation rows
    /// indented by two spaces, so the terminal never breaks a number or a word ("MFU 1.3" / "%"); a word longer than
    /// a row is split. Piped output is never wrapped.
    /// </summary>
    internal static IEnumerable<string> Wrap(string text, int width)
    {
        const string indent = "  ";
        foreach (var para in text.Replace("\r", "").Split('\n'))
        {
            if (width < 20 || para.Length <= width) { yield return para; continue; }
            var row = new System.Text.StringBuilder();
            int start = 0; // the row's prefix: none on the first row, the indent after
            foreach (var w in para.Split(' '))
            {
                var word = w;
                do
                {
                    int sep = row.Length > start ? 1 : 0;
                    if (row.Length + sep + word.Length <= width)
                    {
                        if (sep == 1) row.Append(' ');
                        row.Append(word);
                        word = "";
                        continue;
                    }
                    if (sep == 0 || word.Length > width - indent.Length)
                    {
                        // Longer than a whole row: fill this row with its start.
                        if (sep == 1) row.Append(' ');
                        int take = width - row.Length;
                        if (take > 0) { row.Append(word[..take]); word = word[take..]; }
                    }
                    yield return row.ToString();
                    row.Clear().Append(indent);
                    start = indent.Length;
                }
                while (word.Length > 0);
            }
            if (row.Length > start) yield return row.ToString();
        }
    }

    /// <summary>The text cut to <paramref name="width"/> characters (ending in "…" when cut), padded when asked.</summary>
    internal static string Fit(string text, int width, bool pad)
    {
        if (width <= 0) return "";
        if (text.Length > width) return width == 1 ? "…" : text[..(width - 1)] + "…";
        return pad ? text.PadRight(width) : text;
    }

    static string Bar(double fraction, int width)
    {
        int inner = width - 2;
        int filled = (int)Math.Floor(fraction * inner);
        string body = filled >= inner ? new string('=', inner) : new string('=', filled) + ">" + new string(' ', inner - filled - 1);
        return "[" + body + "]";
    }

    /// <summary>m:ss, or h:mm:ss from an hour.</summary>
    internal static string Clock(TimeSpan t)
    {
        if (t < TimeSpan.Zero) t = TimeSpan.Zero;
        return t.TotalHours >= 1
            ? string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}")
            : string.Create(CultureInfo.InvariantCulture, $"{(int)t.TotalMinutes}:{t.Seconds:00}");
    }
}
