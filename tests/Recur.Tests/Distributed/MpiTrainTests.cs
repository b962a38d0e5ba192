using System.Diagnostics;
using System.Text.Json;
using Recur.Checkpoints;
using Recur.Distributed;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Distributed;

/// <summary>A <see cref="FactAttribute"/> that skips when MPICH's mpiexec or the MPI library is not installed.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiTrainTests.Mpiexec is null) Skip = "mpiexec not found on PATH (apt-get install mpich)";
        else if (!MpiLibraryInstalled()) Skip = $"no MPI library ({string.Join(", ", Mpi.Candidates)}) in the loader's cache (apt-get install mpich)";
    }

    /// <summary>
    /// Whether the ranks will find an MPI library, asked without loading it here: MPICH pulls in UCX, whose memory
    /// hooks and signal handlers must not enter the test host (a segfault at its exit failed a whole run).
    /// </summary>
    static bool MpiLibraryInstalled()
    {
        if (Environment.GetEnvironmentVariable(Mpi.LibraryVariable) is { Length: > 0 } lib) return File.Exists(lib);
        string ldconfig = File.Exists("/sbin/ldconfig") ? "/sbin/ldconfig" : "ldconfig";
        try
        {
            using var p = Process.Start(new ProcessStartInfo(ldconfig, "-p") { RedirectStandardOutput = true, UseShellExecute = false })!;
            string cache = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return Mpi.Candidates.Any(c => cache.Contains(c + " ", StringComparison.Ordinal));
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}

/// <summary>
/// `recur train` under `mpiexec -n 2`, end to end: the built CLI in separate processes, as a user runs it. The
/// tests of one class run one after another, so at most two ranks compete for the cores.
/// </summary>
[Collection("Exclusive")]
public class MpiTrainTests
{
    public static readonly string? Mpiexec = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
        .Select(d => Path.Combine(d, "mpiexec")).FirstOrDefault(File.Exists);

    static readonly string Cli = Path.Combine(AppContext.BaseDirectory, "Recur.Cli.dll");
    static readonly string Smoke = Path.Combine(SharedAssets.RepoRoot ?? ".", "recipes", "smoke.json");

    /// <summary>A few steps of the smoke recipe with AdamW (fp32 throughout: Muon's bf16 Newton–Schulz would turn
    /// last-bit differences of the summed gradients into visible ones), one thread per rank.</summary>
    static string[] Recipe(string dir, int microBatch, params string[] sets) =>
        ["train", "--recipe", Smoke, "--out", dir, "--set", "steps=4", "--set", $"micro_batch={microBatch}", "--set", "optimizer=adamw",
         "--set", "threads=1", "--set", "val_every=2", "--set", "val_batches=2", "--set", "checkpoint_every=2", "--set", "keep_checkpoints=5",
         .. sets.SelectMany(s => new[] { "--set", s })];

    record Result(int Code, string Output, TimeSpan Elapsed);

    /// <summary>Runs the CLI with <paramref name="ranks"/> processes (0: without mpiexec); kills it after <paramref name="limit"/>.</summary>
    static Result Run(int ranks, string[] args, (string, string)[]? env = null, int limitSeconds = 60)
    {
        var psi = new ProcessStartInfo(ranks > 0 ? Mpiexec! : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (ranks > 0)
        {
            psi.ArgumentList.Add("-n"); psi.ArgumentList.Add(ranks.ToString());
            foreach (var (k, v) in env ?? []) { psi.ArgumentList.Add("-env"); psi.ArgumentList.Add(k); psi.ArgumentList.Add(v); }
            psi.ArgumentList.Add("dotnet");
        }
        else foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        psi.ArgumentList.Add(Cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(limitSeconds)))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            return new Result(-1, $"timed out after {limitSeconds} s\n{stdout.Result}\n{stderr.Result}", sw.Elapsed);
        }
        return new Result(p.ExitCode, stdout.Result + "\n" + stderr.Result, sw.Elapsed);
    }

    static Dictionary<string, float[]> Weights(string modelDir)
    {
        using var f = SafeTensorsFile.Open(Path.Combine(modelDir, "model.safetensors"));
        return f.Entries.Keys.ToDictionary(k => k, k => { using var t = f.Read(k); return t.data<float>().ToArray(); });
    }

    static void AssertSameWeights(string expectedDir, string actualDir, double tolerance = 1e-5)
    {
        var a = Weights(Path.Combine(expectedDir, TrainRun.FinalModelDir));
        var b = Weights(Path.Combine(actualDir, TrainRun.FinalModelDir));
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (k, x) in a)
        {
            double worst = x.Zip(b[k], (p, q) => Math.Abs(p - q)).Max();
            Assert.True(worst <= tolerance, $"{k}: max |Δ| {worst:G3} > {tolerance:G3}");
        }
    }

    static List<StepMetrics> Metrics(string dir) => TrainRun.ReadMetrics(dir);

    [MpiFact]
    public void Two_ranks_of_half_the_batch_train_what_one_rank_of_the_full_batch_trains_and_resume_across_rank_counts()
    {
        var one = TestModels.TempDir();
        var two = TestModels.TempDir();
        var r1 = Run(0, Recipe(one, 8));
        Assert.True(r1.Code == 0, r1.Output);
        var r2 = Run(2, Recipe(two, 4));
        Assert.True(r2.Code == 0, r2.Output);

        AssertSameWeights(one, two);
        // Rank 0 alone logs: one metrics line per step, and the global loss and sharded validation loss match.
        var m1 = Metrics(one);
        var m2 = Metrics(two);
        Assert.Equal(4, m2.Count);
        Assert.Equal(m1.Select(m => m.Tokens), m2.Select(m => m.Tokens));
        for (int i = 0; i < m1.Count; i++)
        {
            Assert.Equal(m1[i].Loss, m2[i].Loss, 1e-5);
            Assert.Equal(m1[i].ValLoss is null, m2[i].ValLoss is null);
            foreach (var (k, v) in m1[i].ValLoss ?? []) Assert.Equal(v, m2[i].ValLoss![k], 1e-5);
        }
        Assert.Contains("data parallel: 2 ranks", r2.Output);
        Assert.Equal(1, r2.Output.Split('\n').Count(l => l.StartsWith("done:", StringComparison.Ordinal)));

        // Resume the 2-rank run on 1 rank and the 1-rank run on 2 ranks from step 2: same global batch, same result.
        foreach (var dir in new[] { one, two })
        {
            Directory.Delete(RunCheckpoints.Latest(dir)!, recursive: true);
            Assert.EndsWith("phase1-step0000002", RunCheckpoints.Latest(dir));
        }
        var bad = Run(3, ["train", "--resume", two]);
        Assert.NotEqual(0, bad.Code);
        Assert.True(bad.Output.Contains("does not divide among 3 ranks", StringComparison.Ordinal), bad.Output);
        var back1 = Run(0, ["train", "--resume", two]);
        Assert.True(back1.Code == 0, back1.Output);
        Assert.Contains("micro_batch 4 → 8 rows per rank", back1.Output);
        var back2 = Run(2, ["train", "--resume", one]);
        Assert.True(back2.Code == 0, back2.Output);
        Assert.Contains("micro_batch 8 → 4 rows per rank", back2.Output);
        AssertSameWeights(one, two);
        Assert.Equal(4, Metrics(two).Count);
    }

    [MpiFact]
    public void A_rank_killed_mid_run_ends_the_job_within_bounded_time()
    {
        string dir = TestModels.TempDir(), log = Path.Combine(dir, "fault.log");
        var r = Run(2, Recipe(Path.Combine(dir, "run"), 4, "steps=50"), [("RECUR_TEST_FAULT", "1:2:kill"), ("RECUR_TEST_FAULT_LOG", log), (MpiGradientSync.TimeoutVariable, "20")]);
        Assert.True(r.Code > 0, $"exit {r.Code}: {r.Output}");
        Assert.True(r.Elapsed < TimeSpan.FromSeconds(60), $"took {r.Elapsed}");
        // The rank's own record (mpiexec may drop a killed rank's last forwarded line under load).
        Assert.True(File.Exists(log), $"the fault never struck: {r.Output}");
        Assert.Equal("test fault: kill at batch 2\n", File.ReadAllText(log));
        // The launcher reports the dead rank (MPICH's Hydra kills the job); the watchdog would have, after 20 s.
        Assert.True(r.Output.Contains("BAD TERMINATION", StringComparison.Ordinal) || r.Output.Contains("has waited", StringComparison.Ordinal), r.Output);
    }

    [MpiFact]
    public void A_hung_rank_makes_the_others_abort_with_a_clear_message()
    {
        var r = Run(2, Recipe(TestModels.TempDir(), 4, "steps=50"), [("RECUR_TEST_FAULT", "1:2:hang"), (MpiGradientSync.TimeoutVariable, "5")]);
        Assert.True(r.Code == MpiGradientSync.TimeoutExitCode, $"exit {r.Code}: {r.Output}");
        Assert.True(r.Elapsed < TimeSpan.FromSeconds(45), $"took {r.Elapsed}");
        Assert.Contains("error: rank 0 of 2:", r.Output);
        Assert.Contains("has waited", r.Output);
        Assert.Contains("another rank has died or hangs", r.Output);
    }

    [MpiFact]
    public void A_rank_that_fails_aborts_the_job_with_its_error()
    {
        var r = Run(2, Recipe(TestModels.TempDir(), 4, "steps=50"), [("RECUR_TEST_FAULT", "1:2:throw")]);
        Assert.True(r.Code == 1, $"exit {r.Code}: {r.Output}");
        Assert.Contains("error: rank 1: injected test fault", r.Output);
        Assert.True(r.Elapsed < TimeSpan.FromSeconds(45), $"took {r.Elapsed}");
    }

    [MpiFact]
    public void Without_an_MPI_library_a_launched_job_trains_once_on_rank_0_and_says_so()
    {
        var dir = TestModels.TempDir();
        var r = Run(2, Recipe(dir, 4, "steps=2"), [(Mpi.LibraryVariable, "/nonexistent/libmpi.so.12")]);
        Assert.True(r.Code == 0, r.Output);
        Assert.Contains("training as a single process (rank 0)", r.Output);
        Assert.Contains("this rank exits, rank 0 trains alone", r.Output);
        Assert.Equal(2, Metrics(dir).Count);
    }
}
