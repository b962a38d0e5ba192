using System.Diagnostics;
using System.IO.Compression;
using System.Runtime.InteropServices;
using Recur.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Recur.Tests.Library;

/// <summary>
/// The library install of docs/library.md as a new user runs it: pack the Recur package into a local folder,
/// <c>dotnet new console</c> outside the repository (none of its build settings apply), <c>dotnet add package</c>
/// from that folder, nothing else set (no RuntimeIdentifier), then run an app that loads, retrofits and generates.
/// Its text must equal what the same calls give in this process. It takes a few minutes (pack, restore from the
/// local NuGet cache, a build that copies libtorch).
/// </summary>
public sealed class PackageInstallTests(ITestOutputHelper output)
{
    static readonly TimeSpan StepTimeout = TimeSpan.FromMinutes(8);

    const string Program = """
        using Recur;

        using var baseModel = RecurModel.Load(args[0]);
        using var model = baseModel.Retrofit(new RecurRetrofitOptions { Shape = "1,2,1", Seed = 4, MeanRecurrence = 3 });
        foreach (int t in new[] { 1, 3 })
            Console.WriteLine($"T={t}: [" + model.Generate("the big cat sat on the mat", new GenerateOptions { Recurrences = t, MaxNewTokens = 8, Seed = 9 }) + "]");
        """;

    [LinuxX64Fact]
    public void A_fresh_console_app_with_the_packed_library_loads_retrofits_and_generates()
    {
        string repo = SharedAssets.RepoRoot ?? throw new InvalidOperationException("Recur.sln not found above " + AppContext.BaseDirectory);
        string work = TestModels.TempDir("recur-install");
        string feed = Path.Combine(work, "feed"), app = Path.Combine(work, "app");
        // A version of its own, so the package cache can never hand back an older build of this test's package.
        string version = $"0.0.0-installtest.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string cached = Path.Combine(Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"), "recur", version);
        try
        {
            // The library as this test run built it (same configuration), packed without rebuilding.
            string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
            Dotnet(repo, "pack", Path.Combine(repo, "src", "Recur"), "-c", configuration, "--no-build", "-o", feed, $"-p:PackageVersion={version}");
            string nupkg = Path.Combine(feed, $"Recur.{version}.nupkg");
            bool kernelPacked;
            using (var zip = ZipFile.OpenRead(nupkg))
            {
                Assert.Contains(zip.Entries, e => e.FullName == "buildTransitive/Recur.targets");
                kernelPacked = zip.Entries.Any(e => e.FullName == "runtimes/linux-x64/native/librecur_kernels.so");
            }
            bool haveCc = Which("cc");
            Assert.True(kernelPacked == haveCc, haveCc ? "a C compiler is present but the package lacks runtimes/linux-x64/native/librecur_kernels.so" : "no C compiler, yet a kernel was packed");

            Directory.CreateDirectory(app);
            Dotnet(app, "new", "console", "--name", "App", "--output", app);
            Dotnet(app, "add", "package", "Recur", "--version", version, "--source", feed);
            File.WriteAllText(Path.Combine(app, "Program.cs"), Program);

            string model = ChatModels.Plain(seed: 21);
            var run = Dotnet(app, "run", "--", model);

            using var baseModel = RecurModel.Load(model);
            using var rec = baseModel.Retrofit(new RecurRetrofitOptions { Shape = "1,2,1", Seed = 4, MeanRecurrence = 3 });
            foreach (int t in new[] { 1, 3 })
            {
                string expected = $"T={t}: [" + rec.Generate("the big cat sat on the mat", new GenerateOptions { Recurrences = t, MaxNewTokens = 8, Seed = 9 }) + "]";
                Assert.Contains(expected, run);
            }

            // The output carries Linux x64 natives only, no unpacked copy of libtorch, and the kernel when packed.
            string outDir = Path.Combine(app, "bin", "Debug", "net10.0");
            Assert.False(Directory.Exists(Path.Combine(outDir, "cpu")), "TorchSharp fell back to copying libtorch out of the NuGet cache");
            var rids = Directory.GetDirectories(Path.Combine(outDir, "runtimes")).Select(Path.GetFileName).ToArray();
            Assert.All(rids, r => Assert.True(r is "linux-x64" or "linux" or "unix", $"runtimes/{r} in the output of a Linux x64 app"));
            Assert.False(File.Exists(Path.Combine(outDir, "runtimes", "linux-x64", "native", "libtorch_python.so")));
            Assert.Equal(kernelPacked, File.Exists(Path.Combine(outDir, "runtimes", "linux-x64", "native", "librecur_kernels.so")));
            long bytes = new DirectoryInfo(outDir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            output.WriteLine($"app output: {bytes / 1e6:0} MB");
            Assert.True(bytes < 800_000_000, $"app output is {bytes / 1e6:0} MB");
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
            try { if (Directory.Exists(cached)) Directory.Delete(cached, recursive: true); } catch (IOException) { }
        }
    }

    static bool Which(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Any(d => File.Exists(Path.Combine(d, tool)));

    /// <summary>Runs <c>dotnet</c> with a clean MSBuild environment (not the one of the test host); returns stdout, fails with both streams.</summary>
    string Dotnet(string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(StepTimeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"dotnet {string.Join(' ', args)} did not finish within {StepTimeout.TotalMinutes} minutes");
        }
        p.WaitForExit();
        output.WriteLine($"dotnet {string.Join(' ', args)}: exit {p.ExitCode}, {sw.Elapsed.TotalSeconds:0} s");
        Assert.True(p.ExitCode == 0, $"dotnet {string.Join(' ', args)} failed ({p.ExitCode}):\n{stdout.Result}\n{stderr.Result}");
        return stdout.Result;
    }
}

/// <summary>A fact that skips, saying why, off Linux x64 (the only platform the package is built for).</summary>
public sealed class LinuxX64FactAttribute : FactAttribute
{
    public LinuxX64FactAttribute()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.OSArchitecture != Architecture.X64)
            Skip = "the Recur package is built for Linux x64 only";
    }
}
