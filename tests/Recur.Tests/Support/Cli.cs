using System.Diagnostics;

namespace Recur.Tests.Support;

/// <summary>Runs the built `recur` CLI (Recur.Cli.dll beside the tests) as a separate process, as a user would.</summary>
static class CliProcess
{
    public sealed record Result(int Code, string Stdout, string Stderr)
    {
        public string[] Lines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    static readonly TimeSpan Timeout = TimeSpan.FromMinutes(10);

    public static Result Run(params string[] args) => RunIn(null, args);

    public static Result RunIn(string? workingDirectory, params string[] args) => RunWith(workingDirectory, null, args);

    /// <summary>Runs with extra environment variables (e.g. runtime switches that only take effect at start-up).</summary>
    public static Result RunWith(string? workingDirectory, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        if (workingDirectory is not null) psi.WorkingDirectory = workingDirectory;
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Recur.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        // A hung command fails its test instead of stalling the whole run.
        if (!p.WaitForExit(Timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"recur {string.Join(' ', args)} did not finish within {Timeout.TotalMinutes} minutes");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
