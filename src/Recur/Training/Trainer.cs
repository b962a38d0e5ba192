// The training loop (METHOD §3–4): depth curriculum, Poisson-lognormal depth sampling per micro-batch,
// truncated backprop, Muon + AdamW with a WSD schedule, global-norm clipping, gradient accumulation,
// checkpoints that resume exactly, validation at several T, one JSON line of metrics per step.
//
// Step order (METHOD §4.6): accumulate micro-batches → clip → optimizer step → zero grads → schedules advance.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>One optimizer step's metrics, as written to metrics.jsonl.</summary>
public sealed record StepMetrics
{
    public int Phase { get; init; }
    public long Step { get; init; }          // optimizer steps done in this phase, after this one
    public long GlobalStep { get; init; }
    public long TotalSteps { get; init; }    // of this phase
    public double Loss { get; init; }
    public double LrMuon { get; init; }
    public double LrAdamW { get; init; }
    public int MeanRecurrence { get; init; }
    public int[] N { get; init; } = [];
    public int[] K { get; init; } = [];
    public double GradNorm { get; init; }
    public double ClipCoefficient { get; init; }
    public long Tokens { get; init; }
    public double TokensPerSecond { get; init; }
    public double Flops { get; init; }       // cumulative, METHOD §6
    public double? Mfu { get; init; }
    public double ElapsedSeconds { get; init; }
    public Dictionary<string, double>? ValLoss { get; init; } // "T=4" → loss, on validation steps
}

/// <summary>Where the run stands; saved in every checkpoint as trainer_state.json.</summary>
public sealed record TrainerState
{
    public int Phase { get; init; }
    public long Step { get; init; }
    public long GlobalStep { get; init; }
    public long DataStep { get; init; }      // micro-batches consumed (the depth sampler's seed), METHOD §3.1
    public double Flops { get; init; }
    public long Tokens { get; init; }
    public double ElapsedSeconds { get; init; }
    public JsonNode? Data { get; init; }
    /// <summary>Read from older checkpoints and ignored: s_0 noise is now a function of (seed, data step, row), see Trainer.RowStates.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public string? StateGenerator { get; init; }
    /// <summary>
    /// Ranks the run was started on: the recipe's micro_batch is per rank of this many, so the global batch is
    /// micro_batch × world_size × accumulation rows. A run resumed on another number of ranks keeps that global
    /// batch (and with it the data order and the result) by reading proportionally more or fewer rows per rank.
    /// </summary>
    public int WorldSize { get; init; } = 1;
}

/// <summary>What the trainer needs from the outside world: data per phase and an optional progress sink.</summary>
public sealed class TrainerHooks
{
    /// <summary>Builds the training batches and, optionally, a factory of fresh validation batch sources for a phase.</summary>
    public required Func<TrainRecipe, int, (IBatchSource Train, Func<IBatchSource>? Validation)> Data { get; init; }
    public Action<StepMetrics>? OnStep { get; init; }
    public Action<string>? Log { get; init; }
    public Action<string>? OnCheckpoint { get; init; }
    /// <summary>Gradient averaging across data-parallel ranks; single-process by default.</summary>
    public IGradientSync Sync { get; init; } = SingleProcess.Instance;
}

public sealed class Trainer
{
    readonly TrainRecipe _recipe;
    readonly string _source;
    readonly string _out;
    readonly TrainerHooks _hooks;
    readonly Device _device;
    readonly ScalarType _dtype;
    readonly nn.Module _module;
    readonly RecurrentModel? _rec;
    readonly DecoderModel? _dec;
    readonly double _peak;
    readonly IReadOnlyDictionary<string, string> _extraFiles;
    TrainerState _state;

    public string OutDir => _out;
    public ScalarType ComputeDType => _dtype;
    public ICausalLM Model => (ICausalLM)_module;

    /// <param name="model">A fresh or resumed model with fp32 parameters; trained in place; the caller keeps it and disposes it. The trainer holds nothing else that outlives <see cref="Run"/> (each phase disposes its optimizers), so it is not disposable.</param>
    /// <param name="extraFiles">Files copied into every exported model folder (tokenizer files).</param>
    public Trainer(TrainRecipe recipe, string source, string outDir, ICausalLM model, TrainerHooks hooks, TrainerState? resumeFrom = null,
        IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        _recipe = recipe; _source = source; _out = outDir; _hooks = hooks;
        _extraFiles = extraFiles ?? new Dictionary<string, string>();
        _module = (nn.Module)model;
        _rec = model as RecurrentModel;
        _dec = model as DecoderModel;
        _device = model.Device;
        string why;
        (_dtype, why) = Precision.Resolve(recipe.DType, _device);
        model.ComputeDType = _dtype;
        _module.train();
        Log($"compute dtype {HfCheckpoint.DTypeName(_dtype)} ({why}); parameters and optimizer state fp32");
        _state = resumeFrom ?? new TrainerState { WorldSize = hooks.Sync.WorldSize };
        _peak = recipe.PeakFlops > 0 ? recipe.PeakFlops : MeasurePeak(_dtype, _device);
        Log($"peak for MFU: {_peak / 1e9:0} GFLOP/s ({(recipe.PeakFlops > 0 ? "configured" : "measured matmul")})");
    }

    void Log(string s) => _hooks.Log?.Invoke(s);

    // One measurement per process, dtype, device and size: a run that builds several trainers (the demo builds four,
    // the test suite dozens) would otherwise spend 0.3 s or more on each, and the figure only scales the MFU column.
    static readonly System.Collections.Concurrent.ConcurrentDictionary<(ScalarType, string, int), double> Peaks = new();

    /// <summary>
    /// FLOP/s of a square matmul in the compute dtype: the practical peak MFU is measured against. Measured once per
    /// process for each dtype, device and size, then reused.
    /// </summary>
    public static double MeasurePeak(ScalarType dtype, Device device, int n = 1024) =>
        Peaks.GetOrAdd((dtype, device.ToString(), n), key => MeasurePeakOnce(key.Item1, device, key.Item3));

    static double MeasurePeakOnce(ScalarType dtype, Device device, int n)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var a = randn(n, n, device: device).to(dtype);
        var b = randn(n, n, device: device).to(dtype);
        a.matmul(b).Dispose();
        var sw = Stopwatch.StartNew();
        int reps = 0;
        while (sw.Elapsed.TotalSeconds < 0.3) { a.matmul(b).Dispose(); reps++; }
        return 2.0 * n * n * n * reps / sw.Elapsed.TotalSeconds;
    }

    long ParamsPerLayer => _rec?.Config.ToBlockConfig().ParamsPerLayer ?? _dec!.Config.ParamsPerLayer;

    /// <summary>Training FLOPs per token at mean recurrence μ (METHOD §6); 6·L·N_layer for a plain model.</summary>
    long FlopsPerToken(TrainRecipe r, int mu) => _rec is not null
        ? Flops.PerToken(ParamsPerLayer, _rec.Config.Shape, mu, r.BackpropDepth)
        : Flops.PerTokenNonRecurrent(ParamsPerLayer, _dec!.Config.NumHiddenLayers);

    /// <summary>Runs every remaining phase. Returns false when stopped by <paramref name="cancel"/> (a checkpoint was written).</summary>
    public bool Run(CancellationToken cancel = default)
    {
        for (int phase = _state.Phase; phase < _recipe.PhaseCount; phase++)
        {
            if (phase != _state.Phase) _state = _state with { Phase = phase, Step = 0, Data = null };
            var r = ForWorld(_recipe.Phase(phase, _source));
            if (!RunPhase(r, phase, cancel)) return false;
        }
        return true;
    }

    /// <summary>The phase recipe with micro_batch per rank of the current world, keeping the run's global batch.</summary>
    TrainRecipe ForWorld(TrainRecipe r)
    {
        int started = _state.WorldSize, now = _hooks.Sync.WorldSize;
        if (started == now) return r;
        long global = (long)r.MicroBatch * started;
        if (global % now != 0)
            throw new RecurUserException($"{_source}: the run's global batch of {global} rows (micro_batch {r.MicroBatch} × {started} ranks) does not divide among {now} ranks; resume it on a number of ranks that divides {global}");
        Log($"resuming on {now} rank(s) a run started on {started}: micro_batch {r.MicroBatch} → {global / now} rows per rank; the global batch stays {global} rows");
        return r with { MicroBatch = (int)(global / now) };
    }

    bool RunPhase(TrainRecipe r, int phase, CancellationToken cancel)
    {
        var (train, valFactory) = _hooks.Data(r, phase);
        using var _train = train;
        if (_state.Data is { } ds) train.LoadState(ds);
        if (_rec is not null)
        {
            _rec.RecomputeIterations = r.RecomputeRecurrence;
            if (r.RecomputeRecurrence) Log("recurrence checkpointing on: grad iterations are recomputed in backward");
        }

        var named = _module.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();
        var split = ParamGroups.Split(named, adamWOnly: r.Optimizer == OptimizerKind.AdamW);
        var optimizers = new List<IOptimizer>();
        if (split.Muon.Count > 0) optimizers.Add(new Muon(split.Muon, new MuonOptions(r.MuonLr, r.WeightDecay, r.MuonMomentum)));
        if (split.AdamW.Count > 0) optimizers.Add(new AdamW(split.AdamW, new AdamWOptions(r.AdamWLr, 0.9, 0.95, r.Optimizer == OptimizerKind.AdamW ? 1e-8 : r.AdamWEps, r.WeightDecay)));
        try
        {
            if (_state.Step > 0) RunCheckpoints.LoadOptimizers(_out, optimizers);
            var curriculum = _rec is null ? null : r.MakeCurriculum();
            var wsd = new WsdSchedule(r.Steps, r.Warmup, r.Cooldown, r.MinLrRatio);
            var sampler = r.FixedDepth is { } fd ? DepthSampler.FixedDepth(fd.N, fd.K) : new DepthSampler();
            long tokensPerStep = (long)r.MicroBatch * r.Accumulation * r.SeqLen * _hooks.Sync.WorldSize;
            Log($"phase {phase + 1}/{_recipe.PhaseCount}: {r.Steps} steps × {tokensPerStep} tokens; {wsd}; " +
                (curriculum is null ? "non-recurrent" : $"curriculum {curriculum}, backprop depth {r.BackpropDepth}") +
                $"; optimizers {string.Join(" + ", optimizers.Select(o => $"{o.Name} ({o.Parameters.Count} tensors, lr {o.BaseLearningRate:G3})"))}");

            var sw = Stopwatch.StartNew();
            double elapsedBefore = _state.ElapsedSeconds;
            while (_state.Step < r.Steps)
            {
                long t = _state.Step;
                int mu = curriculum?.MeanRecurrence(t) ?? 1;
                double factor = wsd.Factor(t);
                foreach (var o in optimizers) o.LearningRate = o.BaseLearningRate * factor;
                var stepWatch = Stopwatch.StartNew();
                double loss = 0;
                var ns = new int[_rec is null ? 0 : r.Accumulation];
                var ks = new int[_rec is null ? 0 : r.Accumulation];
                for (int micro = 0; micro < r.Accumulation; micro++)
                {
                    long dataStep = _state.DataStep + 1; // starts at 1 (METHOD §3.1)
                    _state = _state with { DataStep = dataStep };
                    int n = 0, k = 0;
                    if (_rec is not null)
                    {
                        (n, k, _) = sampler.Sample(mu, dataStep, r.BackpropDepth);
                        ns[micro] = n; ks[micro] = k;
                    }
                    using var scope = NewDisposeScope();
                    var (x, y) = train.Next();
                    x = x.to(_device); y = y.to(_device);
                    var l = _rec is not null ? Loss.Of(_rec, x, y, new Recurrence(n, k), RowStates(TrainNoise, dataStep, x)) : Loss.Of(_dec!, x, y);
                    Scalars.Div(l, r.Accumulation).backward();
                    loss += l.item<float>() / r.Accumulation;
                }
                // Data parallelism: every rank saw its slice of the global batch; average before clipping (METHOD §4.6).
                var sync = _hooks.Sync;
                if (sync.WorldSize > 1)
                {
                    foreach (var (_, p) in named) if (p.grad is null) p.grad = zeros_like(p);
                    sync.AllReduceMean(named.Select(p => p.parameter.grad!).ToList());
                    loss = sync.Mean(loss);
                }
                var clip = GradClip.ClipGlobalNorm(named.Select(p => p.parameter.grad).Where(g => g is not null)!, r.Clip);
                if (clip.IsFinite) foreach (var o in optimizers) o.Step();
                else Log($"step {t + 1}: gradient norm is not finite; update skipped");
                foreach (var o in optimizers) o.ZeroGrad();
                _state = _state with
                {
                    Step = t + 1,
                    GlobalStep = _state.GlobalStep + 1,
                    Tokens = _state.Tokens + tokensPerStep,
                    Flops = _state.Flops + (double)FlopsPerToken(r, mu) * tokensPerStep,
                    ElapsedSeconds = elapsedBefore + sw.Elapsed.TotalSeconds,
                };
                double secs = stepWatch.Elapsed.TotalSeconds;
                Dictionary<string, double>? val = null;
                if (valFactory is not null && r.ValEvery > 0 && (_state.Step % r.ValEvery == 0 || _state.Step == r.Steps))
                    val = Validate(r, valFactory);
                var metrics = new StepMetrics
                {
                    Phase = phase, Step = _state.Step, GlobalStep = _state.GlobalStep, TotalSteps = r.Steps, Loss = loss,
                    LrMuon = optimizers.FirstOrDefault(o => o.Name == "muon")?.LearningRate ?? 0,
                    LrAdamW = optimizers.FirstOrDefault(o => o.Name == "adamw")?.LearningRate ?? 0,
                    MeanRecurrence = mu, N = ns, K = ks, GradNorm = clip.Norm, ClipCoefficient = clip.Coefficient,
                    Tokens = _state.Tokens, TokensPerSecond = tokensPerStep / secs, Flops = _state.Flops,
                    // Every rank measured its own share of the machine; the job's peak is their sum.
                    Mfu = (double)FlopsPerToken(r, mu) * tokensPerStep / secs / (_peak * sync.WorldSize),
                    ElapsedSeconds = _state.ElapsedSeconds, ValLoss = val,
                };
                if (_hooks.Sync.Rank == 0 && (_state.Step % r.LogEvery == 0 || val is not null || _state.Step == r.Steps)) _hooks.OnStep?.Invoke(metrics);
                bool stopping = cancel.IsCancellationRequested;
                // Ranks see Ctrl-C at different moments; stopping must be unanimous, or one rank would write its
                // checkpoint (a barrier) while another starts the next step (an all-reduce).
                if (sync.WorldSize > 1) stopping = sync.Mean(stopping ? 1 : 0) > 0;
                if (stopping || _state.Step == r.Steps || (r.CheckpointEvery > 0 && _state.Step % r.CheckpointEvery == 0))
                    SaveCheckpoint(r, optimizers, train);
                if (stopping) return false;
            }
            return true;
        }
        finally
        {
            foreach (var o in optimizers) o.Dispose();
        }
    }

    /// <summary>
    /// Mean validation loss at each T (once for a plain model), on fresh sources. With several ranks each scores its
    /// slice of every validation batch and the token-weighted mean is taken over all of them, so the number equals a
    /// single-process run's.
    /// </summary>
    Dictionary<string, double> Validate(TrainRecipe r, Func<IBatchSource> factory)
    {
        var result = new Dictionary<string, double>();
        var sync = _hooks.Sync;
        _module.eval();
        try
        {
            using var _ = no_grad();
            var depths = _rec is null ? [1] : r.ValRecurrences;
            foreach (var t in depths)
            {
                using var src = factory();
                double sum = 0, count = 0;
                for (int b = 0; b < r.ValBatches; b++)
                {
                    using var scope = NewDisposeScope();
                    var (x, y) = src.Next();
                    if (x.shape[0] == 0) continue; // this rank's share of a short last batch
                    x = x.to(_device);
                    var (s, n) = _rec is not null ? Loss.Sum(_rec, x, y, new Recurrence(t, 0), RowStates(ValNoise + (ulong)t, b, x)) : Loss.Sum(_dec!, x, y);
                    sum += s;
                    count += n;
                }
                if (sync.WorldSize > 1) { sum = sync.Mean(sum); count = sync.Mean(count); }
                result[_rec is null ? "T=-" : $"T={t}"] = count > 0 ? sum / count : double.NaN;
            }
        }
        finally
        {
            _module.train();
        }
        return result;
    }

    const ulong TrainNoise = 0x5EED_0001, ValNoise = 0x5EED_1000;

    /// <summary>
    /// s_0 (METHOD §2.5) for the rows of <paramref name="x"/>, this rank's slice of a global batch. Row g of the
    /// global batch at <paramref name="step"/> draws from its own generator, seeded from (seed, stream, step, g):
    /// the noise a row gets does not depend on how the global batch is split across ranks (one rank with 2B rows
    /// and two ranks with B rows draw the same values), and a resumed run draws the same noise without saved state.
    /// </summary>
    Tensor? RowStates(ulong stream, long step, Tensor x)
    {
        if (_rec is null) return null;
        // Slices are equal except in a short last validation batch, where the rows keep independent (if not
        // rank-count-invariant) draws.
        long rows = x.shape[0], first = _hooks.Sync.Rank * rows;
        using var scope = NewDisposeScope();
        var like = empty([1, x.shape[1], _rec.Config.NEmbd], dtype: _dtype, device: _device);
        var parts = new Tensor[rows];
        for (long i = 0; i < rows; i++)
        {
            ulong seed = Recur.Data.SplitMix64.Mix(Recur.Data.SplitMix64.Mix(Recur.Data.SplitMix64.Mix((ulong)_recipe.Seed ^ stream) + (ulong)step) + (ulong)(first + i));
            using var gen = new Generator(seed);
            parts[i] = _rec.InitialState(like, gen);
        }
        return cat(parts, 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Writes the checkpoint (RunCheckpoints.Save: a loadable model folder plus optimizer state and trainer_state.json,
    /// atomically), then prunes to the newest <c>keep_checkpoints</c>.
    /// </summary>
    void SaveCheckpoint(TrainRecipe r, List<IOptimizer> optimizers, IBatchSource train)
    {
        // Rank 0 alone writes; the others wait so that nobody runs ahead of a checkpoint it may resume from.
        if (_hooks.Sync.Rank != 0)
        {
            _state = _state with { Data = train.SaveState() };
            _hooks.Sync.Barrier();
            return;
        }
        try
        {
            var state = _state with { Data = train.SaveState(), StateGenerator = null };
            var dir = RunCheckpoints.Save(_out, state, optimizers, _extraFiles, (folder, files) =>
            {
                if (_rec is not null) RecurrentCheckpoint.Save(_rec, folder, ScalarType.Float32, force: true, extraFiles: files);
                else HfCheckpoint.SaveFolder(folder, _dec!.Config.ToJson(),
                    _dec.named_parameters().Select(kv => new KeyValuePair<string, Tensor>(kv.name, kv.parameter)).ToList(),
                    ScalarType.Float32, 4L << 30, force: true, files);
            });
            _state = state;
            _hooks.OnCheckpoint?.Invoke(dir);
            RunCheckpoints.Prune(_out, r.KeepCheckpoints);
        }
        finally { _hooks.Sync.Barrier(); }
    }
}
