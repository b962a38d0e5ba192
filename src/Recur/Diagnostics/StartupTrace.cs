using System.Diagnostics;

namespace Recur.Diagnostics;

/// <summary>
/// Where the time and memory before the first token go: with <c>RECUR_TRACE_STARTUP=1</c> each <see cref="Mark"/>
/// prints one stderr line with milliseconds since the process started, the resident set (VmRSS) and its peak
/// (VmHWM) so far, the resident set split into anonymous memory and mapped files. Off by default; costs one environment lookup per mark.
/// </summary>
public static class StartupTrace
{
    public static readonly bool Enabled = Environment.GetEnvironmentVariable("RECUR_TRACE_STARTUP") == "1";
    static readonly DateTime Start = Enabled ? Process.GetCurrentProcess().StartTime.ToUniversalTime() : default;

    public static void Mark(string phase)
    {
        if (!Enabled) return;
        double ms = (DateTime.UtcNow - Start).TotalMilliseconds;
        Console.Error.WriteLine($"[startup] {ms,8:0} ms  rss {Kb("VmRSS:") / 1024,5} MB (anon {Kb("RssAnon:") / 1024,5}, file {Kb("RssFile:") / 1024,5})  peak {Kb("VmHWM:") / 1024,5} MB  {phase}");
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
