// `recur demo` on a depth-bound task (docs/demo.md, docs/variable-chains.md): the paper's experiment in miniature.
//   a. pretrain a small non-recurrent Llama on worked and partly worked rows (it learns the single step);
//   b. retrofit it to (p, r, c) and post-train with the paper's recipe on mostly direct rows (METHOD §2.2, §3, §4);
//   c. post-train the base without recurrence for the same training FLOPs (METHOD §6) — the equal-FLOPs baseline;
//   d. post-train the same recurrent shape from random initialisation for the same FLOPs — the init ablation;
//   e. score every model on held-out direct problems per difficulty k, the recurrent ones at each test-time T.
// Answers are one character, so scoring is one teacher-forced forward per problem: the answer's probability at the
// prompt's last position (accuracy = the answer is the argmax over the whole vocabulary; answer loss = −log p).
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using Recur.Checkpoints;
using Recur.Data;
using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using Recur.Training;
using static TorchSharp.torch;

namespace Recur.Demo;

/// <summary>
/// Sizes, data mix and budgets of a depth-task demo run. Every field can be overridden from a JSON file
/// (<c>recur demo --config</c>), which is how the pilot runs in docs/demo.md were made.
/// </summary>
public sealed record DepthDemoOptions
{
    public int Seed { get; init; } = 7;
    public DepthTaskKind Task { get; init; } = DepthTaskKind.Sum;
    public int Chains { get; init; } = 3;
    public int DistractorMaxHops { get; init; } = 4;
    public int Tail { get; init; } = 2;
    public string Names { get; init; } = VariableChains.DefaultNames;
    public int MaxOffset { get; init; } = 2;
    /// <summary>Gapped sum rows: probability that each intermediate value is written.</summary>
    public double WriteProbability { get; init; } = 0.5;
    /// <summary>Extra queries in a training row (more supervised lookups per forward); test problems ask one.</summary>
    public int Queries { get; init; } = 3;

    // a. Pretraining: worked rows teach the step; partial rows ask for the last k hops.
    public int PretrainRows { get; init; } = 10_000;
    /// <summary>300: the base then meets the one-hop gate (≥ 90 % on k 1–2; 150 steps gave 69 %), docs/demo.md pilots G1 and E1.</summary>
    public int PretrainSteps { get; init; } = 300;
    public double PretrainWorked { get; init; } = 0.4;
    public double PretrainDirect { get; init; }
    /// <summary>Fraction of gapped rows (sums: several gaps of hidden additions per row, each written value a target).</summary>
    public double PretrainGapped { get; init; } = 0.4;
    public int PretrainMinK { get; init; } = 1;
    public int PretrainMaxK { get; init; } = 6;
    public double PretrainMuonLr { get; init; } = 0.02;
    public double PretrainAdamWLr { get; init; } = 0.004;
    public double PretrainWarmup { get; init; } = 0.05;

    // b–d. Post-training: mostly direct rows over a wider k range.
    public int PostRows { get; init; } = 10_000;
    public int RecurrentSteps { get; init; } = 100;
    public double PostWorked { get; init; } = 0.1;
    public double PostDirect { get; init; } = 1.0;
    public double PostGapped { get; init; } = 0.5;
    public int PostMinK { get; init; } = 1;
    public int PostMaxK { get; init; } = 8;
    public double MuonLr { get; init; } = 0.01;
    public double AdamWLr { get; init; } = 0.002;
    public string Shape { get; init; } = "2,2,2";
    /// <summary>The retrofit's adapter: "default" (PyTorch's Linear init, as the paper leaves it, METHOD §2.5) or "identity" ([0 | I]: the first iteration sees exactly the prelude output).</summary>
    public string AdapterInit { get; init; } = "default";
    public int TrainRecurrence { get; init; } = 6;
    public int BackpropDepth { get; init; } = 6;
    public bool SkipRandomInit { get; init; }

    // e. Evaluation.
    public int TestMinK { get; init; } = 1;
    public int TestMaxK { get; init; } = 12;
    /// <summary>Test problems per k; 100 gives 200 per two-k bucket, a binomial SE ≤ 3.5 points (paired differences are
    /// tighter); sums at small k have fewer, see VariableChains.PerKCap.</summary>
    public int TestPerK { get; init; } = 100;
    /// <summary>Difficulty buckets "lo-hi", in order.</summary>
    public string[] Buckets { get; init; } = ["1-2", "3-4", "5-6", "7-8", "9-12"];
    public int[] Recurrences { get; init; } = [1, 2, 4, 6, 8, 16, 32];
    public int EvalBatch { get; init; } = 128;

    public int MicroBatch { get; init; } = 32;
    public string DType { get; init; } = "auto";
    /// <summary>Stop after pretraining and scoring the base (for pilot runs of the pretraining recipe).</summary>
    public bool BaseOnly { get; init; }
    /// <summary>
    /// A base model folder from an earlier run (its <c>base/model</c>, made with the same names and hence the same
    /// vocabulary): skip pretraining and post-train that base (for pilot runs of the post-training recipe).
    /// </summary>
    public string? BaseModel { get; init; }

    /// <summary>
    /// The default run: running sums with terms 0–2 and gapped rows (docs/demo.md, pilots B2 and C1 — the setup in which
    /// the base shows a graded depth cliff and the retrofitted model's accuracy rises with T), pretrained for 300 steps
    /// (pilots G1 and E1: the base meets the one-hop gate).
    /// </summary>
    public static DepthDemoOptions Default => new();

    /// <summary>These options for <paramref name="task"/>: gapped rows exist for sums only, so chains get none.</summary>
    public DepthDemoOptions ForTask(DepthTaskKind task) =>
        this with { Task = task, PretrainGapped = task == DepthTaskKind.Sum ? PretrainGapped : 0, PostGapped = task == DepthTaskKind.Sum ? PostGapped : 0 };

    /// <summary>
    /// Smoke-sized: every stage of the pipeline on a few rows (its measured time is in docs/demo.md); its numbers mean nothing. Ten recurrent
    /// steps keep the equal-FLOPs baseline's whole-step rounding within 5 %.
    /// </summary>
    public static DepthDemoOptions QuickRun => new()
    {
        PretrainRows = 600, PostRows = 600, PretrainSteps = 16, RecurrentSteps = 10, TestPerK = 6, TestMaxK = 8,
        Buckets = ["1-2", "3-4", "5-8"], Recurrences = [1, 2, 4, 8], MicroBatch = 8,
    };

    /// <summary>
    /// <c>--long</c>: the configuration of pilots W2/W3 in docs/demo.md — the cut (2,4,2) that keeps all eight layers,
    /// the identity adapter (post-training starts from exactly the base's function), train recurrence and backprop
    /// depth 3 (T = 3 unrolls 16 layers, as (2,2,2) at T = 6 does), twice the default's post-training (the baseline
    /// gets equal FLOPs, METHOD §6) — with random init included, so claim (c) is measured in the same run. Pretraining
    /// and evaluation are the default's; T = 3 is added to the test recurrences because claim (a) is read there.
    /// Its estimated time on the idle 2-core host is in docs/demo.md (≤ 60 minutes, the issue's budget for this mode).
    /// </summary>
    public static DepthDemoOptions LongRun => Default with
    {
        Shape = "2,4,2", AdapterInit = "identity", TrainRecurrence = 3, BackpropDepth = 3,
        RecurrentSteps = 2 * Default.RecurrentSteps, Recurrences = [1, 2, 3, 4, 6, 8, 16, 32],
    };

    /// <summary>The preset a <c>recur demo</c> invocation starts from: <see cref="QuickRun"/>, <see cref="LongRun"/> or <see cref="Default"/>.</summary>
    public static DepthDemoOptions Preset(bool quick, bool longRun)
    {
        if (quick && longRun)
            throw new RecurUserException("--quick and --long cannot be combined (--quick is the smoke-sized CI run, --long the longer preset; see docs/demo.md)");
        return quick ? QuickRun : longRun ? LongRun : Default;
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary><paramref name="start"/> with the fields of a JSON object (snake_case names) replaced.</summary>
    public static DepthDemoOptions Override(DepthDemoOptions start, string json, string source)
    {
        try
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(start, Json))!.AsObject();
            var patch = System.Text.Json.Nodes.JsonNode.Parse(json) as System.Text.Json.Nodes.JsonObject
                ?? throw new RecurUserException($"{source}: expected a JSON object");
            foreach (var (k, v) in patch)
            {
                if (!node.ContainsKey(k)) throw new RecurUserException($"{source}: unknown key '{k}' (known: {string.Join(", ", node.Select(p => p.Key))})");
                node[k] = v?.DeepClone();
            }
            return JsonSerializer.Deserialize<DepthDemoOptions>(node.ToJsonString(), Json)!.Validate(source);
        }
        catch (JsonException e) { throw new RecurUserException($"{source}: {e.Message}"); }
    }

    public (int Lo, int Hi)[] BucketRanges() => Buckets.Select(b =>
    {
        var parts = b.Split('-');
        int lo = int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture);
        int hi = parts.Length > 1 ? int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) : lo;
        return (lo, hi);
    }).ToArray();

    public DepthDemoOptions Validate(string source)
    {
        void Check(bool ok, string what) { if (!ok) throw new RecurUserException($"{source}: {what}"); }
        Check(PretrainMinK >= 1 && PretrainMaxK >= PretrainMinK, "pretrain_min_k/pretrain_max_k must satisfy 1 ≤ min ≤ max");
        Check(PostMinK >= 1 && PostMaxK >= PostMinK, "post_min_k/post_max_k must satisfy 1 ≤ min ≤ max");
        Check(TestMinK >= 1 && TestMaxK >= TestMinK, "test_min_k/test_max_k must satisfy 1 ≤ min ≤ max");
        Check(PretrainWorked is >= 0 and <= 1 && PostWorked is >= 0 and <= 1 && PretrainDirect is >= 0 and <= 1 && PostDirect is >= 0 and <= 1
            && PretrainGapped is >= 0 and <= 1 && PostGapped is >= 0 and <= 1, "fractions must be in [0, 1]");
        Check(PretrainWorked + PretrainGapped <= 1 && PostWorked + PostGapped <= 1, "worked + gapped fractions must be ≤ 1");
        Check(Task == DepthTaskKind.Sum || PretrainGapped + PostGapped == 0, "gapped rows (pretrain_gapped, post_gapped) exist for the running sum only");
        Check(PretrainRows > 0 && PostRows > 0 && PretrainSteps > 0 && RecurrentSteps > 0 && TestPerK > 0 && MicroBatch > 0 && EvalBatch > 0, "counts and steps must be > 0");
        Check(Recurrences.Length > 0 && Recurrences.All(t => t >= 1), "recurrences must be ≥ 1");
        Check(Buckets.Length > 0, "buckets must not be empty");
        Check(AdapterInit is "default" or "identity", $"adapter_init must be default or identity (got '{AdapterInit}')");
        try
        {
            var r = BucketRanges();
            Check(r.All(b => b.Lo >= TestMinK && b.Hi <= TestMaxK && b.Lo <= b.Hi), $"each bucket must lie inside test k {TestMinK}–{TestMaxK}");
        }
        catch (FormatException) { Check(false, "buckets must be \"lo-hi\" or \"k\""); }
        Check(BaseModel is null || File.Exists(Path.Combine(BaseModel, "config.json")), $"base_model {BaseModel}: not a model folder (no config.json)");
        TaskOptions.Validate();
        return this;
    }

    public VariableChainsOptions TaskOptions => new(Task, Chains, DistractorMaxHops, Tail, Names, MaxOffset, WriteProbability);
}

/// <summary>Scores of one model at one T on the test problems, per problem (for paired comparisons).</summary>
public sealed record ProblemScores(bool[] Correct, double[] Loss);

/// <summary>One trained model's numbers.</summary>
public sealed record DepthModelResult : DemoModel
{
    /// <summary>T (1 for non-recurrent models) → per-problem scores on the test set.</summary>
    public SortedDictionary<int, ProblemScores> Scores { get; init; } = new();
}

/// <summary>Mean and standard error (of a mean of per-problem values, or of paired differences).</summary>
public readonly record struct Estimate(double Mean, double Se, int N)
{
    public static Estimate Of(IReadOnlyList<double> x)
    {
        int n = x.Count;
        if (n == 0) return new(double.NaN, double.NaN, 0);
        double m = x.Average();
        double v = n > 1 ? x.Sum(a => (a - m) * (a - m)) / (n - 1) : 0;
        return new(m, Math.Sqrt(v / n), n);
    }

    /// <summary>Paired: mean of a_i − b_i over the same problems, with the SE of that mean (not of two independent means).</summary>
    public static Estimate Paired(IReadOnlyList<double> a, IReadOnlyList<double> b) => Of(a.Zip(b, (x, y) => x - y).ToList());

    /// <summary>|mean| beyond two standard errors.</summary>
    public bool Beyond2Se => N > 1 && Math.Abs(Mean) > 2 * Se;
}

public sealed record DepthDemoResult(DepthDemoOptions Options, List<DepthModelResult> Models, List<DepthProblem> Test, double WallSeconds, string Machine,
    long SeqLen, string DataSummary)
{
    /// <summary>Indices of the test problems in each bucket, in <see cref="DepthDemoOptions.Buckets"/> order.</summary>
    public int[][] BucketIndices() => Options.BucketRanges().Select(b => Test.Select((p, i) => (p, i)).Where(x => x.p.K >= b.Lo && x.p.K <= b.Hi).Select(x => x.i).ToArray()).ToArray();

    public static Estimate Accuracy(ProblemScores s, int[] idx) => Estimate.Of(idx.Select(i => s.Correct[i] ? 1.0 : 0.0).ToList());
    public static Estimate Loss(ProblemScores s, int[] idx) => Estimate.Of(idx.Select(i => s.Loss[i]).ToList());
    public static Estimate AccuracyDiff(ProblemScores a, ProblemScores b, int[] idx) =>
        Estimate.Paired(idx.Select(i => a.Correct[i] ? 1.0 : 0.0).ToList(), idx.Select(i => b.Correct[i] ? 1.0 : 0.0).ToList());
    public static Estimate LossDiff(ProblemScores a, ProblemScores b, int[] idx) =>
        Estimate.Paired(idx.Select(i => a.Loss[i]).ToList(), idx.Select(i => b.Loss[i]).ToList());
}

public static class DepthDemo
{
    public const string BaseName = "base (pretrained only)";
    public const string BaselineName = "baseline (non-recurrent)";
    public const string RecurrentName = "recurrent from base";
    public const string RandomName = "recurrent random init";

    /// <summary>Tokenizer with exactly the task's characters (a 10-digit answer space in a small vocabulary).</summary>
    public static CharTokenizerAdapter Tokenizer(DepthDemoOptions o) => new(new CharTokenizer(VariableChains.Alphabet(o.Names)), "char:variable-chains");

    public sealed record DepthData(List<int[]> Pretrain, List<int[]> PostTrain, List<int[]> Validation, List<DepthProblem> Test, int SeqLen, string Summary);

    /// <summary>
    /// Token rows: BOS + characters; characters that are not targets are stored complemented (inputs only, see
    /// <see cref="InMemoryRows"/>), and every row is padded to one length so that each training row holds exactly one
    /// problem (names never mix across problems).
    /// </summary>
    public static DepthData MakeData(DepthDemoOptions o)
    {
        var to = o.TaskOptions;
        var test = VariableChains.TestSet(to, (ulong)o.Seed, o.TestMinK, o.TestMaxK, o.TestPerK);
        var held = new HashSet<string>(test.Select(p => p.Key));
        var pre = VariableChains.TrainRows(to, (ulong)o.Seed, 1, o.PretrainRows, o.PretrainWorked, o.PretrainDirect, o.PretrainMinK, o.PretrainMaxK, o.Queries, held, o.PretrainGapped);
        var post = VariableChains.TrainRows(to, (ulong)o.Seed, 2, o.PostRows, o.PostWorked, o.PostDirect, o.PostMinK, o.PostMaxK, o.Queries, held, o.PostGapped);
        var val = VariableChains.TrainRows(to, (ulong)o.Seed, 3, Math.Max(o.MicroBatch * 4, 256), 0, 1.0, o.PostMinK, o.PostMaxK, 1, held);
        var tok = Tokenizer(o);
        int longest = pre.Concat(post).Concat(val).Concat(test).Max(p => p.Text.Length) + 1; // + BOS
        int seqLen = (longest + 7) / 8 * 8;
        int[] Row(DepthProblem p)
        {
            var ids = tok.Inner.Encode(p.Text, addBos: true);
            var row = new int[seqLen + 1];
            row[0] = ~ids[0];
            for (int i = 1; i < ids.Length; i++) row[i] = p.Targets[i - 1] ? ids[i] : ~ids[i];
            for (int i = ids.Length; i < row.Length; i++) row[i] = ~tok.Inner.PadId;
            return row;
        }
        string Mix(List<DepthProblem> rows)
        {
            var hidden = rows.Where(p => p.Form != DepthRowForm.Worked).ToList();
            int gapped = rows.Count(p => p.Form == DepthRowForm.Gapped);
            return $"{rows.Count - hidden.Count} worked, {(gapped > 0 ? $"{gapped} gapped, " : "")}{hidden.Count(p => p.Form == DepthRowForm.Partial)} partial, {hidden.Count(p => p.Form == DepthRowForm.Direct)} direct"
                + (hidden.Count > 0 ? $" (k {hidden.Min(p => p.K)}–{hidden.Max(p => p.K)})" : "");
        }
        string summary = $"pretraining {Mix(pre)}; post-training {Mix(post)}; test {test.Count} direct problems ({o.TestPerK} per k, k {o.TestMinK}–{o.TestMaxK}); rows of {seqLen} tokens";
        return new DepthData(pre.Select(Row).ToList(), post.Select(Row).ToList(), val.Select(Row).ToList(), test, seqLen, summary);
    }

    public static DepthDemoResult Run(DepthDemoOptions o, string outDir, IDemoProgress ui, CancellationToken cancel = default)
    {
        var wall = Stopwatch.StartNew();
        var tok = Tokenizer(o);
        var data = MakeData(o);
        ui.Info("data: " + data.Summary);
        var results = new List<DepthModelResult>();
        var device = CPU;
        var cfg = Presets.Demo with { VocabSize = tok.VocabSize, BosTokenId = tok.BosId, EosTokenId = [tok.EosId!.Value], MaxPositionEmbeddings = Math.Max(Presets.Demo.MaxPositionEmbeddings, data.SeqLen) };

        string baseDir;
        DepthModelResult basePre;
        if (o.BaseModel is { } reuse)
        {
            ui.Stage($"a. reuse the pretrained base {reuse}");
            (baseDir, basePre) = (reuse, new DepthModelResult { Name = BaseName, Description = "" });
        }
        else
        {
            ui.Stage("a. pretrain the base model");
            var preRecipe = Recipe(o, data, "base-pretrain", "preset:demo", null, o.PretrainSteps) with
            {
                Curriculum = CurriculumKind.Constant, MuonLr = o.PretrainMuonLr, AdamWLr = o.PretrainAdamWLr, Warmup = o.PretrainWarmup,
            };
            (baseDir, basePre) = Train(preRecipe, Path.Combine(outDir, "base"), tok, () => TrainRun.RandomDecoder(cfg, o.Seed), data.Pretrain, data.Validation, ui, cancel);
        }
        results.Add(Evaluate(basePre with { Name = BaseName, Description = o.BaseModel is null ? "the pretrained base model before post-training" : $"the pretrained base reused from {o.BaseModel}" }, baseDir, data, o, ui, cancel));
        if (o.BaseOnly) return new DepthDemoResult(o, results, data.Test, wall.Elapsed.TotalSeconds, DemoPipeline.Machine(), data.SeqLen, data.Summary);

        ui.Stage($"b. retrofit to ({o.Shape}) and post-train with recurrence");
        var recRecipe = Recipe(o, data, "recurrent", baseDir, new RetrofitSpec { Shape = o.Shape, AdapterInit = o.AdapterInit == "identity" ? Recur.Checkpoints.AdapterInit.Identity : Recur.Checkpoints.AdapterInit.Default }, o.RecurrentSteps);
        var (recDir, rec) = Train(recRecipe, Path.Combine(outDir, "recurrent"), tok, () => TrainRun.BuildModel(recRecipe, tok, device, ui.Info), data.PostTrain, data.Validation, ui, cancel);
        // Scored at once (listed after the baseline): its numbers are the ones a run is for, so they come first.
        var recScored = Evaluate(rec with { Name = RecurrentName, Description = $"retrofitted to ({o.Shape}) from the pretrained base, post-trained with the recurrence curriculum" }, recDir, data, o, ui, cancel);

        ui.Stage("c. post-train the base without recurrence, same FLOPs");
        long perToken = Flops.PerTokenNonRecurrent(cfg.ParamsPerLayer, cfg.NumHiddenLayers);
        long tokensPerStep = (long)o.MicroBatch * data.SeqLen;
        long baselineSteps = Math.Max(1, (long)Math.Round(rec.TrainFlops / ((double)perToken * tokensPerStep)));
        var blRecipe = Recipe(o, data, "baseline", baseDir, null, baselineSteps) with { Curriculum = CurriculumKind.Constant };
        var (blDir, baseline) = Train(blRecipe, Path.Combine(outDir, "baseline"), tok, () => TrainRun.BuildModel(blRecipe, tok, device, ui.Info), data.PostTrain, data.Validation, ui, cancel);

        DepthModelResult? random = null;
        string? rndDir = null;
        if (!o.SkipRandomInit)
        {
            ui.Stage("d. same recurrent shape from random initialisation, same FLOPs");
            var rndRecipe = recRecipe with { Retrofit = recRecipe.Retrofit! with { Init = RetrofitInit.Random } };
            (rndDir, random) = Train(rndRecipe, Path.Combine(outDir, "random-init"), tok, () => TrainRun.BuildModel(rndRecipe, tok, device, ui.Info), data.PostTrain, data.Validation, ui, cancel);
        }

        ui.Stage("e. evaluate on held-out direct problems");
        results.Add(Evaluate(baseline with { Name = BaselineName, Description = "the base post-trained without recurrence for the same training FLOPs" }, blDir, data, o, ui, cancel));
        results.Add(recScored);
        if (random is not null)
            results.Add(Evaluate(random with { Name = RandomName, Description = $"the same ({o.Shape}) shape and recipe from random weights" }, rndDir!, data, o, ui, cancel));
        return new DepthDemoResult(o, results, data.Test, wall.Elapsed.TotalSeconds, DemoPipeline.Machine(), data.SeqLen, data.Summary);
    }

    /// <summary>The paper's post-training recipe shape (METHOD §3–4), scaled to a 1.5-million-parameter model.</summary>
    static TrainRecipe Recipe(DepthDemoOptions o, DepthData d, string name, string model, RetrofitSpec? retrofit, long steps) =>
        DemoTraining.Recipe(name, model, retrofit, steps, o.MicroBatch, d.SeqLen, o.Seed, o.TrainRecurrence, o.BackpropDepth, o.MuonLr, o.AdamWLr, o.DType);

    static (string ModelDir, DepthModelResult Result) Train(TrainRecipe r, string dir, ITokenizer tok, Func<ICausalLM> build,
        List<int[]> train, List<int[]> val, IDemoProgress ui, CancellationToken cancel) =>
        DemoTraining.TrainModel<DepthModelResult>(r, dir, tok, build, train, val, ui, cancel);

    static DepthModelResult Evaluate(DepthModelResult res, string modelDir, DepthData data, DepthDemoOptions o, IDemoProgress ui, CancellationToken cancel)
    {
        using var model = ModelLoader.Load(modelDir, ScalarType.Float32, CPU);
        var (dt, _) = Precision.Resolve(o.DType, CPU);
        model.ComputeDType = dt;
        var rec = model as RecurrentModel;
        var tok = Tokenizer(o);
        var scores = new SortedDictionary<int, ProblemScores>();
        var buckets = new DepthDemoResult(o, [], data.Test, 0, "", 0, "").BucketIndices();
        if (rec is null) scores[1] = Score(model, tok, data.Test, o.EvalBatch, cancel);
        else foreach (var (t, s) in ScoreAcrossT(rec, o.Recurrences, (ulong)o.Seed, tok, data.Test, o.EvalBatch, cancel)) scores[t] = s;
        foreach (var (t, s) in scores)
        {
            string per = string.Join(", ", o.Buckets.Select((b, i) => $"k {b}: {100 * DepthDemoResult.Accuracy(s, buckets[i]).Mean:0.0} %"));
            ui.Info($"{res.Name}{(rec is null ? "" : $", T = {t}")}: {per}");
        }
        return res with { Scores = scores };
    }

    /// <summary>
    /// <see cref="Score"/> of <paramref name="model"/> at every T in <paramref name="recurrences"/>, each with s₀ from a
    /// generator seeded with <paramref name="seed"/> — the same numbers, bit for bit, as one <see cref="Score"/> per T
    /// with a fresh <c>new Generator(seed)</c>, at a fraction of the cost. Each batch runs the prelude and draws s₀ once
    /// and iterates the core once up to the largest T, applying the coda at every T on the way (the states at T = 1, 2,
    /// … are the same whichever T the forward stops at; the batches draw s₀ in the same order either way). With
    /// test-time noise, whose draws interleave with the iterations, it falls back to one pass per T.
    /// </summary>
    public static SortedDictionary<int, ProblemScores> ScoreAcrossT(RecurrentModel model, IReadOnlyList<int> recurrences, ulong seed,
        CharTokenizerAdapter tok, IReadOnlyList<DepthProblem> test, int batch, CancellationToken cancel = default)
    {
        var ts = recurrences.Distinct().Order().ToArray();
        if (ts.Length == 0 || ts[0] < 1) throw new ArgumentException("recurrences must be ≥ 1", nameof(recurrences));
        if (model.Config.TestTimeNoise > 0)
        {
            var each = new SortedDictionary<int, ProblemScores>();
            foreach (int t in ts)
            {
                using var g = new Generator(seed);
                each[t] = Score(model.At(Recurrence.Fixed(t, g)), tok, test, batch, cancel);
            }
            return each;
        }
        using var gen = new Generator(seed);
        var (p, r, _) = model.Config.Shape;
        return ScoreBatches(model, ts, tok, test, batch, cancel, ids => AllT(ids));

        IEnumerable<(int T, Tensor Hidden)> AllT(Tensor ids)
        {
            // As RecurrentModel.Hidden does for one T, stopping at each T on the way to the last.
            using var ctx = model.Context(ids, stateGenerator: gen);
            var e = model.Prelude(ids, ctx);
            var state = model.InitialState(e, gen);
            int done = 0;
            foreach (int t in ts)
            {
                for (; done < t; done++) state = model.Iterate(state, e, ctx, p + done * r);
                yield return (t, model.Coda(state, ctx, p + r * t));
            }
        }
    }

    /// <summary>
    /// One teacher-forced forward per problem: the distribution at the prompt's last position. Prompts are batched by
    /// length and right-padded (padding after a prompt cannot affect it under causal attention).
    /// </summary>
    public static ProblemScores Score(ICausalLM model, CharTokenizerAdapter tok, IReadOnlyList<DepthProblem> test, int batch, CancellationToken cancel = default) =>
        ScoreBatches(model, [0], tok, test, batch, cancel, ids => [(0, model.Hidden(ids))])[0];

    /// <summary>The scoring loop of <see cref="Score"/>: <paramref name="hidden"/> gives a batch's final hidden states under each key.</summary>
    static SortedDictionary<int, ProblemScores> ScoreBatches(ICausalLM model, IReadOnlyList<int> keys, CharTokenizerAdapter tok, IReadOnlyList<DepthProblem> test,
        int batch, CancellationToken cancel, Func<Tensor, IEnumerable<(int Key, Tensor Hidden)>> hidden)
    {
        var result = new SortedDictionary<int, ProblemScores>(keys.ToDictionary(k => k, _ => new ProblemScores(new bool[test.Count], new double[test.Count])));
        var order = Enumerable.Range(0, test.Count).OrderBy(i => test[i].Prompt.Length).ThenBy(i => i).ToArray();
        using var noGrad = no_grad();
        for (int start = 0; start < order.Length; start += batch)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var idx = order.Skip(start).Take(batch).ToArray();
            var prompts = idx.Select(i => tok.Inner.Encode(test[i].Prompt, addBos: true)).ToArray();
            int width = prompts.Max(p => p.Length);
            var flat = new long[idx.Length * width];
            for (int r = 0; r < idx.Length; r++)
                for (int j = 0; j < prompts[r].Length; j++) flat[r * width + j] = prompts[r][j];
            var last = tensor(prompts.Select(p => (long)p.Length - 1).ToArray()).to(model.Device);
            var rows = Scalars.Add(Scalars.Mul(Scalars.Arange(0, idx.Length, model.Device), width), last);
            var target = tensor(idx.Select(i => (long)tok.Inner.Encode(test[i].Answer.ToString(), addBos: false)[0]).ToArray()).to(model.Device);
            var tg = target.data<long>().ToArray();
            foreach (var (key, hiddenStates) in hidden(tensor(flat, [idx.Length, width]).to(model.Device)))
            {
                var h = hiddenStates.reshape(idx.Length * width, -1).index_select(0, rows);
                var logp = model.Logits(h).log_softmax(-1);
                var lp = logp.gather(1, target.unsqueeze(1)).squeeze(1).data<float>().ToArray();
                var arg = logp.argmax(-1).data<long>().ToArray();
                var (correct, loss) = result[key];
                for (int r = 0; r < idx.Length; r++) { loss[idx[r]] = -lp[r]; correct[idx[r]] = arg[r] == tg[r]; }
            }
        }
        return result;
    }
}
