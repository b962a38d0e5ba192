using System.Diagnostics;

namespace Recur.Diagnostics;

/// <summary>
/// Where the time and memory before the first token go: with <c>RECUR_TRACE_STARTUP=1</c> each <see cref="Mark"/>
/// prints one stderr line with milliseconds since the process started, the resident set (VmRSS) and its peak
/// (VmHWM) so far, the resident set split into anonymous memory and mapped files, and the GC heap (bytes in use,
/// collections so far and their pause time). With <c>RECUR_TRACE_SMAPS=DIR</c> as well, each mark also copies /proc/self/smaps to
/// DIR/NN-phase.smaps, which attributes the resident memory to each mapping (a library, the weights, the GC heap).
/// Off by default; costs one environment lookup per mark.
/// </summary>
public static class StartupTrace
{
    public static readonly bool Enabled = Environment.GetEnvironmentVariable("RECUR_TRACE_STARTUP") == "1";
    static readonly DateTime Start = Enabled ? Process.GetCurrentProcess().StartTime.ToUniversalTime() : default;
    static readonly string? SmapsDir = Enabled ? Environment.GetEnvironmentVariable("RECUR_TRACE_SMAPS") is { Length: > 0 } d ? d : null : null;
    static int _marks;

    public static void Mark(string phase)
    {
        if (!Enabled) return;
        double ms = (DateTime.UtcNow - Start).TotalMilliseconds;
        Console.Error.WriteLine($"[startup] {ms,8:0} ms  rss {Kb("VmRSS:") / 1024,5} MB (anon {Kb("RssAnon:") / 1024,5}, file {Kb("RssFile:") / 1024,5})  peak {Kb("VmHWM:") / 1024,5} MB"
            + $"  gc heap {GC.GetTotalMemory(false) >> 20,3} MB, {GC.CollectionCount(0)} collections ({GC.GetTotalPauseDuration().TotalMilliseconds:0} ms)  {phase}");
        if (SmapsDir is not null)
        {
            string name = new([.. phase.TakeWhile(c => c != ';').Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-')]);
            try { File.WriteAllText(Path.Combine(SmapsDir, $"{++_marks:00}-{name}.smaps"), File.ReadAllText("/proc/self/smaps")); }
            catch (IOException e) { Console.Error.WriteLine($"[startup] RECUR_TRACE_SMAPS: {e.Message}"); }
        }
    }

    static long Kb(string key)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(key.Length).Trim().ToString().Split(' ')[0]);
        }
        catch (IOException) { }
        return 0;
    }
}
