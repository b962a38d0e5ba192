using System.CommandLine;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Training;
using Spectre.Console;
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
        var cmd = new Command("train", "Train a recurrent (or non-recurrent) model with the paper's recipe") { recipe, sets, output, resume, force };
        cmd.SetAction(parse => Common.Run(parse, () => Run(parse.GetValue(recipe), parse.GetValue(sets) ?? [], parse.GetValue(output), parse.GetValue(resume), parse.GetValue(force))));
        return cmd;
    }

    static int Run(string? recipePath, string[] sets, string? outDir, string? resumeDir, bool force)
    {
        TrainRecipe r;
        string dir;
        TrainerState? state = null;
        string? checkpoint = null;
        if (resumeDir is not null)
        {
            if (recipePath is not null || sets.Length > 0 || outDir is not null) throw new RecurUserException("--resume takes no --recipe, --set or --out: the run folder has its recipe");
            dir = resumeDir;
            r = TrainRecipe.Load(Path.Combine(dir, TrainRun.RecipeFile));
            checkpoint = Trainer.LatestCheckpoint(dir) ?? throw new RecurUserException($"{dir}: no checkpoint to resume from");
            state = Trainer.ReadState(checkpoint);
        }
        else
        {
            if (recipePath is null || outDir is null) throw new RecurUserException("give --recipe FILE and --out DIR (or --resume DIR)");
            r = TrainRecipe.Load(recipePath, sets);
            dir = outDir;
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() && !force)
                throw new RecurUserException($"{dir}: run folder already exists and is not empty (use --resume {dir} to continue it, or --force to replace it)");
        }
        Common.SetThreads(r.Threads);
        var device = Common.ParseDevice(r.Device);
        bool plain = Console.IsOutputRedirected;
        void Log(string s) { if (plain) Console.WriteLine(s); else AnsiConsole.MarkupLine($"[grey]{Markup.Escape(s)}[/]"); }

        using var tok = TrainRun.LoadTokenizer(r);
        ICausalLM model;
        if (checkpoint is not null)
        {
            model = ModelLoader.Load(checkpoint, ScalarType.Float32, device, s => Log($"note: {s}"));
            TrainRun.TruncateMetrics(dir, state!.GlobalStep);
            Log($"resuming {dir} from {Path.GetFileName(checkpoint)} (phase {state.Phase + 1}, step {state.Step})");
        }
        else
        {
            // Everything that can fail on bad input happens before the run folder is created or replaced.
            model = TrainRun.BuildModel(r, tok, device, Log);
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            Directory.CreateDirectory(dir);
            AtomicFile.WriteAllText(Path.Combine(dir, TrainRun.RecipeFile), r.ToJson());
        }
        using var _model = model;
        var scratch = Path.Combine(Path.GetTempPath(), $"recur-tok-{Guid.NewGuid():N}");
        var tokFiles = TrainRun.TokenizerFiles(tok, scratch);

        var hooks = new TrainerHooks
        {
            Data = TrainRun.DataHooks(tok),
            Log = Log,
            OnStep = m =>
            {
                TrainRun.AppendMetrics(dir, m);
                Status = Describe(m);
                if (plain || m.ValLoss is not null) Log(Status + (m.ValLoss is { } v ? "  val " + string.Join(" ", v.Select(kv => $"{kv.Key}:{kv.Value:0.000}")) : ""));
                Progress = (m.Step, m.TotalSteps, m.Phase);
            },
            OnCheckpoint = c => Log($"checkpoint {c}"),
        };
        using var cancel = Common.CancelOnCtrlC();
        bool finished;
        using (var trainer = new Trainer(r, Path.Combine(dir, TrainRun.RecipeFile), dir, model, hooks, state, tokFiles))
        {
            if (plain) finished = trainer.Run(cancel.Token);
            else
                finished = AnsiConsole.Progress()
                    .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new ElapsedTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask("starting", maxValue: 1);
                        var poll = new Timer(_ =>
                        {
                            var (step, total, phase) = Progress;
                            if (total > 0) { task.MaxValue = total; task.Value = step; }
                            task.Description = Markup.Escape($"phase {phase + 1} {Status}");
                        }, null, 0, 250);
                        try { return trainer.Run(cancel.Token); }
                        finally { poll.Dispose(); }
                    });
        }
        try { Directory.Delete(scratch, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        WritePlots(dir);
        if (!finished)
        {
            Console.Error.WriteLine($"interrupted: checkpoint written; continue with: recur train --resume {dir}");
            return 130;
        }
        var last = Trainer.LatestCheckpoint(dir)!;
        var final = Path.Combine(dir, TrainRun.FinalModelDir);
        ExportModel(last, final);
        Console.WriteLine($"done: final model in {final}; metrics in {Path.Combine(dir, TrainRun.MetricsFile)}; plots in {dir}");
        return 0;
    }

    static string Status = "";
    static (long Step, long Total, int Phase) Progress;

    static string Describe(StepMetrics m) =>
        $"step {m.Step}/{m.TotalSteps} loss {m.Loss:0.0000} " +
        (m.N.Length > 0 ? $"μ={m.MeanRecurrence} (n,k)=({string.Join(";", m.N.Zip(m.K, (n, k) => $"{n},{k}"))}) " : "") +
        $"lr {m.LrMuon:0.0e0}/{m.LrAdamW:0.0e0} gn {m.GradNorm:0.00} {m.TokensPerSecond:0} tok/s MFU {m.Mfu * 100:0.0}%";

    /// <summary>The final model folder: the last checkpoint without optimizer and trainer state.</summary>
    static void ExportModel(string checkpoint, string dst)
    {
        var tmp = dst + $".tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(tmp);
        foreach (var f in Directory.GetFiles(checkpoint))
        {
            var name = Path.GetFileName(f);
            if (name is Trainer.OptimizerFile or Trainer.StateFile) continue;
            File.Copy(f, Path.Combine(tmp, name));
        }
        if (Directory.Exists(dst)) Directory.Delete(dst, true);
        Directory.Move(tmp, dst);
    }

    public static void WritePlots(string dir)
    {
        var m = TrainRun.ReadMetrics(dir);
        if (m.Count == 0) return;
        var step = m.Select(x => (double)x.GlobalStep).ToArray();
        var loss = m.Select(x => x.Loss).ToArray();
        Plots.Line(Path.Combine(dir, "loss_vs_step.png"), "Training loss", "optimizer step", "loss", [new("train", step, loss)]);
        Plots.Line(Path.Combine(dir, "loss_vs_flops.png"), "Training loss against training FLOPs", "FLOPs", "loss", [new("train", m.Select(x => x.Flops).ToArray(), loss)], logX: true);
        var vals = m.Where(x => x.ValLoss is not null).ToList();
        if (vals.Count > 0)
        {
            var keys = vals.SelectMany(x => x.ValLoss!.Keys).Distinct().OrderBy(k => k.Length).ThenBy(k => k).ToList();
            Plots.Line(Path.Combine(dir, "val_loss.png"), "Validation loss per test-time recurrence", "optimizer step", "loss",
                keys.Select(k => new Plots.Series(k, vals.Where(v => v.ValLoss!.ContainsKey(k)).Select(v => (double)v.GlobalStep).ToArray(),
                    vals.Where(v => v.ValLoss!.ContainsKey(k)).Select(v => v.ValLoss![k]).ToArray())));
        }
    }
}
