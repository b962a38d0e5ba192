using System.CommandLine;
using Recur.Checkpoints;
using Recur.Distributed;
using Recur.Model;
using Recur.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Cli;

static class TrainCommand
{
    public static Command Create()
    {
        var recipe = new Option<string?>("--recipe") { Description = "Recipe file (recipes/*.json)" };
        var sets = new Option<string[]>("--set") { Description = "Override a recipe field: key=value (dotted keys reach into objects); repeatable" };
        var output = new Option<string?>("--out") { Description = "Run folder (metrics, checkpoints, final model)" };
        var resume = new Option<string?>("--resume") { Description = "Continue the run in this folder from its newest checkpoint" };
        var force = new Option<bool>("--force") { Description = "Replace an existing run folder" };
        // The common options, as shorthands for the recipe's fields (--set device=…, dtype=…, threads=…).
        var device = new Option<string?>("--device") { Description = "cpu or cuda[:N] (the recipe's device) [default: the recipe's, cpu]" };
        var dtype = new Option<string?>("--dtype") { Description = "Compute dtype: fp32 or bf16 (the recipe's dtype) [default: the recipe's, fp32]" };
        var threads = new Option<int?>("--threads") { Description = "CPU threads for tensor ops, 0: all cores (the recipe's threads) [default: the recipe's, 0]" };
        var cmd = new Command("train", "Train a recurrent (or non-recurrent) model with the paper's recipe") { recipe, sets, output, resume, force, device, dtype, threads };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            var overrides = (parse.GetValue(sets) ?? []).ToList();
            if (parse.GetValue(device) is { } d) overrides.Add($"device={d}");
            if (parse.GetValue(dtype) is { } t) overrides.Add($"dtype={t}");
            if (parse.GetValue(threads) is { } n) overrides.Add($"threads={n}");
            return Launch(parse.GetValue(recipe), [.. overrides], parse.GetValue(output), parse.GetValue(resume), parse.GetValue(force), parse.GetValue(Common.Verbose));
        }));
        return cmd;
    }

    /// <summary>
    /// One process, or one rank of a data-parallel job when an MPI launcher started this process (docs/distributed.md).
    /// A rank that fails aborts the whole job after printing its error: the others may be waiting in a collective.
    /// </summary>
    static int Launch(string? recipePath, string[] sets, string? outDir, string? resumeDir, bool force, bool verbose)
    {
        var launch = MpiLaunch.FromEnvironment();
        if (launch is null || launch.Size == 1) return Run(recipePath, sets, outDir, resumeDir, force, null, null);
        var mpi = Mpi.TryLoad(out var why);
        if (mpi is null)
        {
            // Started as several processes with no MPI to join them: one trains, the others must not write the same folder.
            if (launch.Rank != 0)
            {
                Console.Error.WriteLine($"note: {launch}: {why}; this rank exits, rank 0 trains alone");
                return 0;
            }
            return Run(recipePath, sets, outDir, resumeDir, force, null,
                $"note: launched by {launch.Launcher} as {launch.Size?.ToString() ?? "several"} processes, but {why}: training as a single process (rank 0); the other ranks exit");
        }
        var timeout = MpiGradientSync.TimeoutFromEnvironment();
        using var sync = MpiGradientSync.Start(mpi, timeout);
        if (launch.Size is { } n && n != sync.WorldSize)
            throw new RecurUserException($"{launch.Launcher} started {n} processes but {sync.Library} sees {sync.WorldSize}: the launcher belongs to another MPI than the library " +
                $"(e.g. Open MPI's mpirun with MPICH); launch with MPICH's mpiexec (mpiexec.mpich) or set ${Mpi.LibraryVariable} to the launcher's MPICH-ABI library");
        if (sync.WorldSize == 1) return Run(recipePath, sets, outDir, resumeDir, force, null, null);
        try { return Run(recipePath, sets, outDir, resumeDir, force, sync, null); }
        catch (Exception e)
        {
            int code = Common.Report(e, verbose, sync.Rank == 0 ? "" : $"rank {sync.Rank}: ");
            sync.Abort(code == 0 ? 1 : code);
            return code;
        }
    }

    static int Run(string? recipePath, string[] sets, string? outDir, string? resumeDir, bool force, MpiGradientSync? mpi, string? note)
    {
        IGradientSync sync = (IGradientSync?)mpi ?? SingleProcess.Instance;
        bool lead = sync.Rank == 0;
        TrainRecipe r;
        string dir;
        TrainerState? state = null;
        string? checkpoint = null;
        if (resumeDir is not null)
        {
            if (recipePath is not null || sets.Length > 0 || outDir is not null) throw new RecurUserException("--resume takes no --recipe, --set, --out, --device, --dtype or --threads: the run folder has its recipe");
            dir = resumeDir;
            r = TrainRecipe.Load(Path.Combine(dir, TrainRun.RecipeFile));
            // Killed saves leave a model and optimizer state each; they are never resumed from, so they go.
            if (lead)
                foreach (var left in TrainRun.CleanLeftovers(dir)) Console.Error.WriteLine($"note: removed {left}, left by an interrupted save");
            checkpoint = RunCheckpoints.Latest(dir) ?? throw new RecurUserException(
                $"{dir}: no checkpoint to resume from (the run stopped before its first save); start it again with --recipe {Path.Combine(dir, TrainRun.RecipeFile)} --out {dir}");
            state = RunCheckpoints.ReadState(checkpoint);
            long lastPhaseSteps = r.Phase(r.PhaseCount - 1, Path.Combine(dir, TrainRun.RecipeFile)).Steps;
            if (state.Phase == r.PhaseCount - 1 && state.Step >= lastPhaseSteps)
            {
                // A finished run: say so instead of loading the model and running zero steps.
                string finalDir = Path.Combine(dir, TrainRun.FinalModelDir);
                if (!lead) return 0;
                if (!Directory.Exists(finalDir)) TrainRun.ExportModel(checkpoint, finalDir);
                Console.WriteLine($"nothing to do: {dir} has finished (phase {r.PhaseCount} of {r.PhaseCount}, step {state.Step} of {lastPhaseSteps}); the final model is in {finalDir}");
                return 0;
            }
        }
        else
        {
            if (recipePath is null || outDir is null) throw new RecurUserException("give --recipe FILE and --out DIR (or --resume DIR)");
            r = TrainRecipe.Load(recipePath, sets);
            dir = outDir;
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() && !force)
            {
                if (!TrainRun.NothingToResume(dir))
                    throw new RecurUserException($"{dir}: run folder already exists and is not empty (use --resume {dir} to continue it, or --force to replace it)");
                if (lead) Console.Error.WriteLine($"note: {dir} holds no checkpoint (a run that stopped before its first save); starting it again");
            }
            TrainRun.CheckData(r);
        }
        bool plain = Console.IsOutputRedirected;
        // Rank 0 alone speaks (log lines above one live progress line on a terminal); the other ranks print only their errors.
        var line = ProgressLine.ForConsole();
        void Log(string s) { if (lead) line.Log(s); }
        if (note is not null) Console.Error.WriteLine(note);
        int threads = r.Threads > 0 || mpi is null ? r.Threads : ThreadsPerRank(mpi.LocalSize);
        Common.SetThreads(threads);
        if (mpi is not null)
            Log($"data parallel: {mpi.WorldSize} ranks ({mpi.LocalSize} on this node) over {mpi.Library}; global batch {r.MicroBatch} × {mpi.WorldSize} ranks" +
                (r.Accumulation > 1 ? $" × {r.Accumulation} accumulation" : "") + $" = {(long)r.MicroBatch * mpi.WorldSize * r.Accumulation} rows per step; " +
                $"threads per rank {threads}; collective timeout " + (mpi.Timeout > TimeSpan.Zero ? $"{mpi.Timeout.TotalSeconds:0} s" : "off") + $" (${MpiGradientSync.TimeoutVariable})");
        var device = Common.ParseDevice(r.Device);
        if (mpi is not null && device.type != DeviceType.CPU)
            throw new RecurUserException($"recipe device '{r.Device}': MPI data parallelism runs on the CPU; GPU ranks need the NCCL backend, which is not implemented (docs/distributed.md)");

        using var tok = TrainRun.LoadTokenizer(r);
        ICausalLM model;
        if (checkpoint is not null)
        {
            model = ModelLoader.Load(checkpoint, ScalarType.Float32, device, s => Log($"note: {s}"));
            if (lead) TrainRun.TruncateMetrics(dir, state!.GlobalStep);
            Log($"resuming {dir} from {Path.GetFileName(checkpoint)} (phase {state!.Phase + 1}, step {state.Step})");
        }
        else
        {
            // Everything that can fail on bad input happens before the run folder is created or replaced; every rank
            // has checked the folder before rank 0 replaces it.
            model = TrainRun.BuildModel(r, tok, device, Log);
            sync.Barrier();
            if (lead)
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                Directory.CreateDirectory(dir);
                AtomicFile.WriteAllText(Path.Combine(dir, TrainRun.RecipeFile), r.ToJson());
            }
        }
        using var _model = model;
        if (mpi is not null) CheckRanksAgree(mpi, r, model, state);
        var scratch = Path.Combine(Path.GetTempPath(), $"recur-tok-{Guid.NewGuid():N}");
        var tokFiles = TrainRun.TokenizerFiles(tok, scratch);

        var data = TrainRun.DataHooks(tok, null, sync.Rank, sync.WorldSize);
        if (mpi is not null)
        {
            // Rank 0 tokenises a missing data cache first; the others then find it built instead of all writing it.
            var perRank = data;
            data = (rr, phase) =>
            {
                if (!lead) mpi.UnboundedBarrier();
                var d = perRank(rr, phase);
                if (lead) mpi.UnboundedBarrier();
                return d;
            };
        }
        if (TestFault.FromEnvironment(sync.Rank) is { } fault) data = fault.Wrap(data);
        var hooks = new TrainerHooks
        {
            Data = data,
            Log = Log,
            OnStep = m =>
            {
                TrainRun.AppendMetrics(dir, m);
                string status = Describe(m);
                if (plain || m.ValLoss is not null) Log(status + (m.ValLoss is { } v ? "  val " + string.Join(" ", v.Select(kv => $"{kv.Key}:{kv.Value:0.000}")) : ""));
                if (lead) line.Update(m.Step, m.TotalSteps, $"phase {m.Phase + 1} {status}");
            },
            OnCheckpoint = c => Log($"checkpoint {c}"),
            Sync = sync,
        };
        using var cancel = Common.CancelOnCtrlC();
        bool finished;
        var trainer = new Trainer(r, Path.Combine(dir, TrainRun.RecipeFile), dir, model, hooks, state, tokFiles);
        if (plain || !lead) finished = trainer.Run(cancel.Token);
        else
        {
            line.Start("starting", 0);
            finished = false;
            // Redraws the elapsed time and ETA between steps (a step can take seconds).
            using var tick = new Timer(_ => line.Refresh(), null, 500, 500);
            try { finished = trainer.Run(cancel.Token); }
            finally { tick.Dispose(); line.Finish(finished); }
        }
        try { Directory.Delete(scratch, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        if (!lead) return finished ? 0 : 130;
        WritePlots(dir);
        if (!finished)
        {
            Console.Error.WriteLine($"interrupted: checkpoint written; continue with: {Common.CommandName()} train --resume {dir}");
            return 130;
        }
        var last = RunCheckpoints.Latest(dir)!;
        var final = Path.Combine(dir, TrainRun.FinalModelDir);
        TrainRun.ExportModel(last, final);
        // Through the progress line: on a terminal it breaks between words like the log above it.
        line.Log($"done: final model in {final}; metrics in {Path.Combine(dir, TrainRun.MetricsFile)}; plots in {dir}");
        return 0;
    }

    /// <summary>
    /// Default intra-op threads of one rank. Ranks on one node share its cores, so each takes its share; but a rank
    /// the launcher has bound to some cores (mpiexec -bind-to, srun --cpus-per-task) already sees only its own
    /// (ProcessorCount follows the affinity mask), and dividing again would leave cores idle.
    /// </summary>
    static int ThreadsPerRank(int localRanks)
    {
        int visible = Environment.ProcessorCount;
        int online = OnlineCpus();
        bool bound = false;
        if (online is > 0 and <= 64 && OperatingSystem.IsLinux())
            bound = System.Numerics.BitOperations.PopCount((ulong)(long)System.Diagnostics.Process.GetCurrentProcess().ProcessorAffinity) < online;
        return bound ? visible : Math.Max(1, visible / localRanks);
    }

    /// <summary>Online CPUs from /sys/devices/system/cpu/online ("0-63,65"); 0 when unknown.</summary>
    static int OnlineCpus()
    {
        try
        {
            int n = 0;
            foreach (var part in File.ReadAllText("/sys/devices/system/cpu/online").Trim().Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                var ends = part.Split('-');
                n += ends.Length == 2 ? int.Parse(ends[1]) - int.Parse(ends[0]) + 1 : 1;
            }
            return n;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return 0; }
    }

    /// <summary>
    /// Data parallelism is only correct when every rank starts from the same weights with the same recipe: the ranks
    /// build their models independently (same seed, or the same files), so compare hashes before the first step.
    /// </summary>
    static void CheckRanksAgree(MpiGradientSync mpi, TrainRecipe r, ICausalLM model, TrainerState? state)
    {
        if (!mpi.Agree(Fingerprint.OfText(r.ToJson())))
            throw new RecurUserException("the ranks read different recipes (a recipe file or --set that differs between nodes?)");
        if (!mpi.Agree(state?.GlobalStep ?? -1))
            throw new RecurUserException("the ranks resume from different checkpoints (is the run folder on a file system every node shares?)");
        var named = ((nn.Module)model).named_parameters().Select(p => (p.name, (Tensor)p.parameter));
        if (!mpi.Agree(Fingerprint.OfTensors(named)))
            throw new RecurUserException("the ranks start from different parameters (a model folder that differs between nodes?); every rank must load the same weights");
    }

    static string Describe(StepMetrics m) =>
        $"step {m.Step}/{m.TotalSteps} loss {m.Loss:0.0000} " +
        (m.N.Length > 0 ? $"μ={m.MeanRecurrence} (n,k)=({string.Join(";", m.N.Zip(m.K, (n, k) => $"{n},{k}"))}) " : "") +
        $"lr {m.LrMuon:0.0e0}/{m.LrAdamW:0.0e0} gn {m.GradNorm:0.00} {m.TokensPerSecond:0} tok/s MFU {m.Mfu * 100:0.0}%";

    public static void WritePlots(string dir)
    {
        var m = TrainRun.ReadMetrics(dir);
        if (m.Count == 0) return;
        string run = RunLabel(dir);
        var step = m.Select(x => (double)x.GlobalStep).ToArray();
        var loss = m.Select(x => x.Loss).ToArray();
        Plots.Line(Path.Combine(dir, "loss_vs_step.png"), $"Training loss — {run}", "optimizer step", "training loss (nats/token)", [new("train", step, loss)]);
        Plots.Line(Path.Combine(dir, "loss_vs_flops.png"), $"Training loss against training FLOPs — {run}", "training FLOPs (log scale)", "training loss (nats/token)",
            [new("train", m.Select(x => x.Flops).ToArray(), loss)], xAxis: Plots.XAxis.Log10);
        var vals = m.Where(x => x.ValLoss is not null).ToList();
        if (vals.Count > 0)
        {
            var keys = vals.SelectMany(x => x.ValLoss!.Keys).Distinct().OrderBy(k => k.Length).ThenBy(k => k).ToList();
            Plots.Line(Path.Combine(dir, "val_loss.png"), $"Validation loss at each test-time recurrence T — {run}", "optimizer step", "validation loss (nats/token)",
                keys.Select(k => new Plots.Series(k, vals.Where(v => v.ValLoss!.ContainsKey(k)).Select(v => (double)v.GlobalStep).ToArray(),
                    vals.Where(v => v.ValLoss!.ContainsKey(k)).Select(v => v.ValLoss![k]).ToArray())));
        }
    }

    /// <summary>
    /// What a run's figures are about, from its recipe: "smoke: (1,2,1) retrofit of preset:tiny on synthetic arithmetic
    /// (1-2 steps)"; the folder's name when the recipe cannot be read.
    /// </summary>
    internal static string RunLabel(string dir)
    {
        string folder = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
        try
        {
            // Read loosely: a label is not worth failing the plots over.
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, TrainRun.RecipeFile)),
                documentOptions: new System.Text.Json.JsonDocumentOptions { CommentHandling = System.Text.Json.JsonCommentHandling.Skip, AllowTrailingCommas = true });
            string name = json?["name"]?.GetValue<string>() is { Length: > 0 } n ? n : folder;
            string? shape = json?["retrofit"]?["shape"]?.GetValue<string>() ?? json?["retrofit"]?["layers"]?.GetValue<string>();
            string model = json?["model"]?.GetValue<string>() is { Length: > 0 } m ? Path.GetFileName(Path.TrimEndingDirectorySeparator(m)) : "";
            string what = shape is null ? model : $"({shape}) retrofit of {model}";
            string data = json?["synth_data"] is { } synth
                ? $"synthetic arithmetic ({synth["steps"]?.GetValue<string>() ?? "1-4"} steps)"
                : string.Join(" + ", (json?["data"]?.AsArray() ?? []).Select(d => d?["path"]?.GetValue<string>() is { Length: > 0 } p ? Path.GetFileName(Path.TrimEndingDirectorySeparator(p)) : null).OfType<string>());
            return $"{name}: {what}{(data.Length > 0 ? " on " + data : "")}";
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or InvalidOperationException) { return folder; }
    }
}
