using System.Diagnostics;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// The repository's <c>./recur</c> launcher, run by bash in a scratch copy of the repository layout with a stand-in
/// <c>dotnet</c> first on the PATH that logs its arguments and writes a fake CLI where the real build would: what the
/// launcher builds (a ReadyToRun publish by default, a plain build with RECUR_READY_TO_RUN=0), when it rebuilds, and
/// which binary it runs.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class LauncherTests : IDisposable
{
    readonly string _root = Directory.CreateTempSubdirectory("recur-launcher-").FullName;
    readonly string _log;
    readonly string _tools;

    public LauncherTests()
    {
        string repo = SharedAssets.RepoRoot ?? throw new InvalidOperationException("repository root not found");
        File.Copy(Path.Combine(repo, "recur"), Path.Combine(_root, "recur"));
        Directory.CreateDirectory(Path.Combine(_root, "src", "Recur.Cli"));
        File.WriteAllText(Path.Combine(_root, "src", "Recur.Cli", "Recur.Cli.csproj"), "<Project />");
        File.WriteAllText(Path.Combine(_root, "src", "Recur.Cli", "Program.cs"), "// source");
        File.WriteAllText(Path.Combine(_root, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(_root, "Directory.Build.targets"), "<Project />");
        _tools = Directory.CreateDirectory(Path.Combine(_root, "tools")).FullName;
        _log = Path.Combine(_root, "dotnet.log");
        // The stand-in: `dotnet build|publish <csproj> …` logs the call and writes a CLI that prints which output it is and its arguments.
        File.WriteAllText(Path.Combine(_tools, "dotnet"), """
            #!/usr/bin/env bash
            echo "$*" >> "$FAKE_DOTNET_LOG"
            [ -n "${FAKE_DOTNET_FAIL:-}" ] && { echo "error CS0001: broken"; exit 1; }
            out="$(dirname "$2")/bin/Release/net10.0/linux-x64"
            [ "$1" = publish ] && out="$out/publish"
            mkdir -p "$out"
            printf '#!/usr/bin/env bash\necho "%s $*"\n' "$1" > "$out/Recur.Cli"
            chmod +x "$out/Recur.Cli"
            """.Replace("\r", ""));
        Chmod(Path.Combine(_tools, "dotnet"));
        Chmod(Path.Combine(_root, "recur"));
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    static void Chmod(string path) =>
        File.SetUnixFileMode(path, File.GetUnixFileMode(path) | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);

    (int Code, string Stdout, string Stderr) Launch(Dictionary<string, string>? env = null, params string[] args)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(_root, "recur"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = $"{_tools}:{Environment.GetEnvironmentVariable("PATH")}";
        psi.Environment["FAKE_DOTNET_LOG"] = _log;
        foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Trim(), stderr.Result);
    }

    string[] Calls() => File.Exists(_log) ? File.ReadAllLines(_log) : [];

    [LinuxFact]
    public void First_run_publishes_the_ReadyToRun_CLI_and_runs_the_published_binary_with_the_arguments()
    {
        var r = Launch(null, "generate", "--prompt", "two words");
        Assert.Equal(0, r.Code);
        Assert.Equal($"publish {Path.Combine(_root, "src", "Recur.Cli", "Recur.Cli.csproj")} -c Release --nologo -v q", Assert.Single(Calls()));
        Assert.Equal("publish generate --prompt two words", r.Stdout);
    }

    [LinuxFact]
    public void A_second_run_does_not_rebuild_and_a_newer_source_does()
    {
        Assert.Equal(0, Launch(null, "info").Code);
        Assert.Equal(0, Launch(null, "info").Code);
        Assert.Single(Calls());
        var source = Path.Combine(_root, "src", "Recur.Cli", "Program.cs");
        File.SetLastWriteTimeUtc(source, DateTime.UtcNow.AddMinutes(1));
        Assert.Equal(0, Launch(null, "info").Code);
        Assert.Equal(2, Calls().Length);
    }

    [LinuxFact]
    public void A_newer_native_kernel_source_also_rebuilds()
    {
        Assert.Equal(0, Launch(null, "info").Code);
        var kernel = Path.Combine(_root, "src", "kernels.c");
        File.WriteAllText(kernel, "/* kernel */");
        File.SetLastWriteTimeUtc(kernel, DateTime.UtcNow.AddMinutes(1));
        Assert.Equal(0, Launch(null, "info").Code);
        Assert.Equal(2, Calls().Length);
    }

    [LinuxFact]
    public void Ready_to_run_off_builds_and_runs_the_plain_build_output()
    {
        var r = Launch(new() { ["RECUR_READY_TO_RUN"] = "0" }, "info");
        Assert.Equal(0, r.Code);
        Assert.StartsWith("build ", Assert.Single(Calls()));
        Assert.Equal("build info", r.Stdout);
    }

    [LinuxFact]
    public void A_failed_build_shows_the_build_log_and_exits_non_zero()
    {
        var r = Launch(new() { ["FAKE_DOTNET_FAIL"] = "1" }, "info");
        Assert.Equal(1, r.Code);
        Assert.Contains("error CS0001: broken", r.Stderr);
        Assert.Equal("", r.Stdout);
    }
}

/// <summary>A fact that skips, saying why, where the bash launcher does not run.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "./recur is a bash launcher for Linux";
    }
}
