// Shared by both demo tasks (DemoPipeline: word problems; DepthDemo: depth-bound tasks): the paper's post-training
// recipe shape scaled to the demo's model, and one training run from in-memory rows to a final model folder.
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tokenization;
using Recur.Training;

namespace Recur.Demo;

/// <summary>What one demo training run produced: its final model folder, training FLOPs (METHOD §6), wall time and loss curve.</summary>
public sealed record DemoTrainOutcome(string ModelDir, double Flops, double WallSeconds, List<(double Flops, double Loss)> Curve);

/// <summary>One trained model of a demo run, as both demos report it; each adds its own scores.</summary>
public abstract record DemoModel
{
    public string Name { get; init; } = "";
    public string Description { get; init; } = "";
    public bool Recurrent { get; init; }
    public long Steps { get; init; }
    public double TrainFlops { get; init; }
    public double WallSeconds { get; init; }
    /// <summary>(cumulative FLOPs, training loss) per step.</summary>
    public List<(double Flops, double Loss)> Curve { get; init; } = new();
}

static class DemoTraining
{
    /// <summary>The paper's post-training recipe (METHOD §3–4: 1-sqrt curriculum over 75 %, Muon + AdamW, WSD, clipping 1.0), scaled to a small model.</summary>
    public static TrainRecipe Recipe(string name, string model, RetrofitSpec? retrofit, long steps, int microBatch, int seqLen, int seed,
        int trainRecurrence, int backpropDepth, double muonLr, double adamWLr, string dtype) => new()
    {
        Name = name, Model = model, Tokenizer = "char", Retrofit = retrofit,
        SynthData = new SynthDataSpec(), // unused: the demo supplies its rows through the data hook
        Steps = steps, MicroBatch = microBatch, Accumulation = 1, SeqLen = seqLen, Seed = seed,
        TrainRecurrence = trainRecurrence, Curriculum = CurriculumKind.OneMinusSqrt, CurriculumFraction = 0.75, BackpropDepth = backpropDepth,
        Optimizer = OptimizerKind.Muon, MuonLr = muonLr, AdamWLr = adamWLr, Warmup = 0.05, Cooldown = 0.4, MinLrRatio = 0.001, Clip = 1.0,
        DType = dtype, LogEvery = 1, ValEvery = 0, CheckpointEvery = 0, KeepCheckpoints = 1,
    };

    /// <summary><see cref="Train(TrainRecipe, string, ITokenizer, Func{ICausalLM}, List{int[]}, List{int[]}, IDemoProgress, CancellationToken)"/>, with its outcome as a <typeparamref name="TModel"/> named after the recipe (scores still empty).</summary>
    public static (string ModelDir, TModel Result) TrainModel<TModel>(TrainRecipe r, string dir, ITokenizer tok, Func<ICausalLM> build,
        List<int[]> train, List<int[]> val, IDemoProgress ui, CancellationToken cancel) where TModel : DemoModel, new()
    {
        var t = Train(r, dir, tok, build, train, val, ui, cancel);
        return (t.ModelDir, new TModel { Name = r.Name!, Recurrent = r.Recurrent, Steps = r.Steps, TrainFlops = t.Flops, WallSeconds = t.WallSeconds, Curve = t.Curve });
    }

    /// <summary>
    /// Trains the model from <paramref name="build"/> with recipe <paramref name="r"/> on <paramref name="train"/> rows into
    /// <paramref name="dir"/> (replaced), then keeps only the final weights, config and tokenizer in
    /// <c>dir/</c><see cref="TrainRun.FinalModelDir"/> (no optimizer state or intermediate checkpoints).
    /// </summary>
    public static DemoTrainOutcome Train(TrainRecipe r, string dir, ITokenizer tok, Func<ICausalLM> build,
        List<int[]> train, List<int[]> val, IDemoProgress ui, CancellationToken cancel)
    {
        r = r.Validate(r.Name!);
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.CreateDirectory(dir);
        var curve = new List<(double, double)>();
        var sw = Stopwatch.StartNew();
        var hooks = new TrainerHooks
        {
            Data = (rr, phase) => (new InMemoryRows(train, rr.SeqLen, rr.MicroBatch, rr.Seed, tok.EosId ?? 0), () => new InMemoryRows(val, rr.SeqLen, rr.MicroBatch, 0, tok.EosId ?? 0)),
            OnStep = m => { curve.Add((m.Flops, m.Loss)); TrainRun.AppendMetrics(dir, m); ui.Step(r.Name!, m.Step, m.TotalSteps, m.Loss); },
            Log = ui.Info,
        };
        var scratch = Path.Combine(dir, ".tok");
        var files = TrainRun.TokenizerFiles(tok, scratch);
        using (var model = build())
            if (!new Trainer(r with { CheckpointEvery = 0 }, r.Name!, dir, model, hooks, null, files).Run(cancel)) throw new OperationCanceledException();
        double flops = curve.Count > 0 ? curve[^1].Item1 : 0;
        var ckpt = RunCheckpoints.Latest(dir)!;
        var final = Path.Combine(dir, TrainRun.FinalModelDir);
        Directory.CreateDirectory(final);
        foreach (var f in Directory.GetFiles(ckpt))
            if (Path.GetFileName(f) is not (RunCheckpoints.OptimizerFile or RunCheckpoints.StateFile)) File.Copy(f, Path.Combine(final, Path.GetFileName(f)), true);
        Directory.Delete(Path.Combine(dir, "checkpoints"), true);
        Directory.Delete(scratch, true);
        return new DemoTrainOutcome(final, flops, sw.Elapsed.TotalSeconds, curve);
    }
}
