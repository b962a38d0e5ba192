using System.Diagnostics;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// The published native generate front (src/Recur.Generate, compiled by NativeAOT when `./recur generate` runs where
/// clang is installed) against the CLI, in child processes: what it runs itself prints what the CLI prints, and what
/// it hands to the CLI (execv) comes out as the CLI's own. Skips, saying why, where no up-to-date front was published.
/// </summary>
public class NativeFrontTests
{
    static (int Code, string Stdout, string Stderr) Run(string exe, IReadOnlyDictionary<string, string> env, string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (k, v) in env) psi.Environment[k] = v;
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, stderr.Result);
    }

    // The closing line's timing differs from run to run.
    static string Untimed(string stderr) => System.Text.RegularExpressions.Regex.Replace(stderr, @"[0-9.]+ s, [0-9.]+ tok/s", "");

    [NativeFrontFact]
    public void The_front_prints_what_the_cli_prints_and_hands_it_what_it_cannot_run()
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "Recur.Cli");
        string plain = ChatModels.Plain();
        string[][] cases =
        [
            ["generate", "--model", plain, "--prompt", "the cat sat", "--max-new-tokens", "8"],
            ["generate", "--model", plain, "--prompt-ids", "1 5 9", "--max-new-tokens", "6", "--output-ids", "--threads", "1"],
            ["generate", "--model", plain, "--prompt", "the cat", "--temperature", "0.8", "--seed", "3", "--max-new-tokens", "4"],
            ["generate", "--model", plain, "--prompt", "the cat", "--dtype", "bf16", "--max-new-tokens", "3"],
            ["generate", "--model", plain, "--bogus", "1"],
            ["generate", "--model", Path.Combine(plain, "missing"), "--prompt", "a"],
            ["generate", "--help"],
        ];
        var env = new Dictionary<string, string> { ["RECUR_CLI"] = cli };
        foreach (var args in cases)
        {
            var front = Run(NativeFrontFactAttribute.Front, env, args);
            var reference = Run(cli, env, args);
            string line = string.Join(' ', args.Skip(3));
            Assert.True(reference.Code == front.Code, $"{line}: exit {front.Code}, the CLI's {reference.Code}: {front.Stderr}");
            Assert.True(reference.Stdout == front.Stdout, $"{line}: stdout differs:\n{front.Stdout}\n---\n{reference.Stdout}");
            Assert.True(Untimed(reference.Stderr) == Untimed(front.Stderr), $"{line}: stderr differs:\n{front.Stderr}\n---\n{reference.Stderr}");
        }
        var traced = new Dictionary<string, string>(env) { ["RECUR_TRACE_STARTUP"] = "1" };
        var own = Run(NativeFrontFactAttribute.Front, traced, cases[0]);
        Assert.Contains("main (native front)", own.Stderr);
        Assert.Contains("libtorch-free path", own.Stderr);
        Assert.Contains("libtorch_cpu.so not mapped", own.Stderr);
        var handed = Run(NativeFrontFactAttribute.Front, traced, cases[2]);
        Assert.Contains("main (native front)", handed.Stderr);
        Assert.Contains("libtorch path: sampling", handed.Stderr); // the CLI's trace, after the hand-off
    }
}

/// <summary>A fact that skips unless the native generate front is published and newer than every source (as ./recur judges it).</summary>
public sealed class NativeFrontFactAttribute : FactAttribute
{
    public static string Front => Path.Combine(SharedAssets.RepoRoot ?? "", "src", "Recur.Generate", "bin", "Release", "net10.0", "linux-x64", "publish", "recur-generate");

    public NativeFrontFactAttribute()
    {
        if (SharedAssets.RepoRoot is not { } root) { Skip = "repository root not found"; return; }
        if (!File.Exists(Front)) { Skip = $"no native generate front at {Front}: `./recur generate …` publishes it where clang is installed"; return; }
        var built = File.GetLastWriteTimeUtc(Front);
        var newer = Directory.EnumerateFiles(Path.Combine(root, "src"), "*", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .FirstOrDefault(f => f.EndsWith(".cs", StringComparison.Ordinal) || f.EndsWith(".csproj", StringComparison.Ordinal) ? File.GetLastWriteTimeUtc(f) > built : false);
        if (newer is not null) Skip = $"the native generate front is older than {newer}: run `./recur generate …` to publish it again";
    }
}
