using System.Diagnostics;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// The repository's <c>./recur</c> launcher, run by bash in a scratch copy of the repository layout with a stand-in
/// <c>dotnet</c> first on the PATH that logs its arguments and writes a fake CLI where the real build would: what the
/// launcher builds (a ReadyToRun publish by default, a plain build with RECUR_READY_TO_RUN=0; for generate, the native
/// front when clang is on the PATH), when it rebuilds, and which binary it runs. The PATH holds only the stand-ins and
/// the few system tools the launcher uses, so whether clang is there is each test's choice.
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
        _system = Directory.CreateDirectory(Path.Combine(_root, "system")).FullName;
        foreach (string tool in new[] { "bash", "dirname", "find", "mkdir", "mktemp", "cat", "rm", "touch", "flock", "chmod" })
            if (Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists) is { } found)
                File.CreateSymbolicLink(Path.Combine(_system, tool), found);
        _log = Path.Combine(_root, "dotnet.log");
        // The stand-in: `dotnet build|publish <csproj> …` logs the call and writes a CLI that prints which output it is
        // and its arguments (for Recur.Generate.csproj, a front that prints its arguments and the CLI it was given).
        File.WriteAllText(Path.Combine(_tools, "dotnet"), """
            #!/usr/bin/env bash
            echo "$*" >> "$FAKE_DOTNET_LOG"
            [ -n "${FAKE_DOTNET_FAIL:-}" ] && { echo "error CS0001: broken"; exit 1; }
            out="$(dirname "$2")/bin/Release/net10.0/linux-x64"
            [ "$1" = publish ] && out="$out/publish"
            mkdir -p "$out"
            case "$2" in
              *Recur.Generate.csproj)
                [ -n "${FAKE_FRONT_FAIL:-}" ] && { echo "error: linker failed"; exit 1; }
                printf '#!/usr/bin/env bash\necho "front $* RECUR_CLI=$RECUR_CLI"\n' > "$out/recur-generate"
                chmod +x "$out/recur-generate" ;;
              *)
                printf '#!/usr/bin/env bash\necho "%s $*"\n' "$1" > "$out/Recur.Cli"
                chmod +x "$out/Recur.Cli" ;;
            esac
            """.Replace("\r", ""));
        Chmod(Path.Combine(_tools, "dotnet"));
        Chmod(Path.Combine(_root, "recur"));
    }

    readonly string _system;

    string Cli => Path.Combine(_root, "src", "Recur.Cli", "bin", "Release", "net10.0", "linux-x64", "publish", "Recur.Cli");

    void AddClang()
    {
        File.WriteAllText(Path.Combine(_tools, "clang"), "#!/usr/bin/env bash\nexit 0\n");
        Chmod(Path.Combine(_tools, "clang"));
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    static void Chmod(string path) =>
        File.SetUnixFileMode(path, File.GetUnixFileMode(path) | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);

    (int Code, string Stdout, string Stderr) Launch(Dictionary<string, string>? env = null, params string[] args)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(_root, "recur"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = $"{_tools}:{_system}";
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
    public void Generate_with_clang_on_the_path_runs_the_native_front_and_names_the_cli_to_it()
    {
        AddClang();
        var r = Launch(null, "generate", "--prompt", "two words");
        Assert.Equal(0, r.Code);
        Assert.Equal(
            [$"publish {Path.Combine(_root, "src", "Recur.Cli", "Recur.Cli.csproj")} -c Release --nologo -v q",
             $"publish {Path.Combine(_root, "src", "Recur.Generate", "Recur.Generate.csproj")} -c Release --nologo -v q"], Calls());
        Assert.Equal($"front generate --prompt two words RECUR_CLI={Cli}", r.Stdout);
        Assert.Equal(0, Launch(null, "generate", "--prompt", "again").Code);
        Assert.Equal(2, Calls().Length); // nothing newer than either binary: no rebuild
    }

    [LinuxFact]
    public void Other_verbs_and_the_opt_out_run_the_cli_and_never_build_the_front()
    {
        AddClang();
        Assert.Equal("publish info", Launch(null, "info").Stdout);
        Assert.Equal("publish generate --prompt x", Launch(new() { ["RECUR_NATIVE_GENERATE"] = "0" }, "generate", "--prompt", "x").Stdout);
        Assert.Equal("build generate --prompt x", Launch(new() { ["RECUR_READY_TO_RUN"] = "0" }, "generate", "--prompt", "x").Stdout);
        Assert.DoesNotContain(Calls(), c => c.Contains("Recur.Generate", StringComparison.Ordinal));
    }

    [LinuxFact]
    public void A_front_that_does_not_build_leaves_generate_on_the_cli_until_a_source_changes()
    {
        AddClang();
        var r = Launch(new() { ["FAKE_FRONT_FAIL"] = "1" }, "generate", "--prompt", "x");
        Assert.Equal(0, r.Code);
        Assert.Equal("publish generate --prompt x", r.Stdout);
        Assert.Contains("error: linker failed", r.Stderr);
        Assert.Contains("did not build; generate runs on the CLI until a source changes", r.Stderr);
        Assert.Equal("publish generate --prompt x", Launch(null, "generate", "--prompt", "x").Stdout);
        Assert.Equal(2, Calls().Length); // not retried
        File.SetLastWriteTimeUtc(Path.Combine(_root, "src", "Recur.Cli", "Program.cs"), DateTime.UtcNow.AddMinutes(1));
        Assert.StartsWith("front generate", Launch(null, "generate", "--prompt", "x").Stdout);
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
