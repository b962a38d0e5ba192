// `recur demo`: the paper's experiment in miniature, on a laptop CPU, with nothing downloaded.
//
// What the paper does to TinyLlama (METHOD §2.2, §3–4, §6, §9), done to a small Llama that the demo
// pretrains itself on synthetic arithmetic word problems:
//   a. pretrain a non-recurrent base model;
//   b. retrofit it to (p, r, c), removing middle layers, and post-train with the paper's recipe
//      (1-sqrt depth curriculum, Poisson-lognormal depths, truncated backprop, Muon + AdamW, WSD);
//   c. post-train the base model without recurrence for the same training FLOPs (METHOD §6) — the baseline;
//   d. post-train the same recurrent shape from random initialisation for the same FLOPs — the init ablation;
//   e. evaluate all on held-out problems per difficulty, at T ∈ {1, 2, 4, 8, 16} for the recurrent models.
// The post-training task is direct answering ("#### N" with no written reasoning), where the computation
// has to happen inside the network, so extra depth has the most room to help.
using System.Diagnostics;
using System.Text.RegularExpressions;
using Recur.Checkpoints;
using Recur.Data;
using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using Recur.Training;
using static TorchSharp.torch;

namespace Recur.Demo;

/// <summary>Sizes and budgets of a demo run. <see cref="QuickRun"/> is a smoke-sized variant for CI.</summary>
public sealed record DemoOptions
{
    public int Seed { get; init; } = 7;
    public int MinSteps { get; init; } = 1;
    public int MaxSteps { get; init; } = 4;
    public int MaxValue { get; init; } = 12;
    public int PretrainProblems { get; init; } = 24_000;
    public int PostTrainProblems { get; init; } = 24_000;
    public int TestPerDifficulty { get; init; } = 250;
    public int SeqLen { get; init; } = 256;
    public int MicroBatch { get; init; } = 16;
    public int PretrainSteps { get; init; } = 600;
    public int RecurrentSteps { get; init; } = 300;
    public string Shape { get; init; } = "2,2,2";
    public int TrainRecurrence { get; init; } = 4;
    public int BackpropDepth { get; init; } = 4;
    public double MuonLr { get; init; } = 0.01;
    public double AdamWLr { get; init; } = 0.002;
    public int[] Recurrences { get; init; } = [1, 2, 4, 8, 16];
    public int EvalBatch { get; init; } = 64;
    public string DType { get; init; } = "auto";

    public static DemoOptions Default => new();

    public static DemoOptions QuickRun => new()
    {
        PretrainProblems = 4000, PostTrainProblems = 4000, TestPerDifficulty = 20, PretrainSteps = 120, RecurrentSteps = 60,
        Recurrences = [1, 2, 4, 8],
    };
}

/// <summary>One trained model's numbers.</summary>
public sealed record DemoModelResult : DemoModel
{
    /// <summary>T (1 for non-recurrent models) → difficulty (reasoning steps) → accuracy.</summary>
    public SortedDictionary<int, SortedDictionary<int, double>> Accuracy { get; init; } = new();
    public SortedDictionary<int, double> OverallAccuracy { get; init; } = new();
    public SortedDictionary<int, double> ValLoss { get; init; } = new();
}

public sealed record DemoResult(DemoOptions Options, List<DemoModelResult> Models, double WallSeconds, string Machine);

/// <summary>What the pipeline reports as it goes; the CLI renders it.</summary>
public interface IDemoProgress
{
    void Stage(string name);
    void Step(string stage, long step, long total, double loss);
    void Info(string line);
}

public static class DemoPipeline
{
    public static string Prompt(SynthMathProblem p) => $"Question: {p.Question}\nAnswer:";
    public static string Text(SynthMathProblem p) => $"Question: {p.Question}\nAnswer: {p.Answer}";

    static readonly Regex Final = new(@"####\s*(-?\d+)", RegexOptions.Compiled);

    /// <summary>The number after "####" in a generated answer, or null.</summary>
    public static int? Extract(string output)
    {
        var m = Final.Match(output);
        return m.Success && int.TryParse(m.Groups[1].Value, out int v) ? v : null;
    }

    public static DemoResult Run(DemoOptions o, string outDir, IDemoProgress ui, CancellationToken cancel = default)
    {
        var wall = Stopwatch.StartNew();
        var tok = new CharTokenizerAdapter(new CharTokenizer(), "char");
        var data = MakeData(o, ui);
        var results = new List<DemoModelResult>();
        var device = CPU;

        // a. Pretrain the base model.
        ui.Stage("a. pretrain the base model");
        var baseRecipe = Recipe(o, "base-pretrain", "preset:demo", null, o.PretrainSteps) with { Curriculum = CurriculumKind.Constant };
        var (baseModelDir, basePre) = Train(baseRecipe, Path.Combine(outDir, "base"), tok,
            () => TrainRun.RandomDecoder(Presets.Demo with { VocabSize = tok.VocabSize, BosTokenId = tok.BosId, EosTokenId = [tok.EosId!.Value] }, o.Seed),
            data.Pretrain, data.Validation, ui, cancel);

        // b. Retrofit and post-train with the recurrence curriculum.
        ui.Stage("b. retrofit to (" + o.Shape + ") and post-train with recurrence");
        var recRecipe = Recipe(o, "recurrent", baseModelDir, new RetrofitSpec { Shape = o.Shape }, o.RecurrentSteps);
        var (recDir, rec) = Train(recRecipe, Path.Combine(outDir, "recurrent"), tok,
            () => TrainRun.BuildModel(recRecipe, tok, device, ui.Info), data.PostTrain, data.Validation, ui, cancel);

        // c. Baseline: the base model, post-trained without recurrence for the same FLOPs.
        ui.Stage("c. post-train the base without recurrence, same FLOPs");
        long perToken = Flops.PerTokenNonRecurrent(Presets.Demo.ParamsPerLayer, Presets.Demo.NumHiddenLayers);
        long tokensPerStep = (long)o.MicroBatch * o.SeqLen;
        long baselineSteps = Math.Max(1, (long)Math.Round(rec.TrainFlops / ((double)perToken * tokensPerStep)));
        var baseRecipeC = Recipe(o, "baseline", baseModelDir, null, baselineSteps) with { Curriculum = CurriculumKind.Constant };
        var (_, baseline) = Train(baseRecipeC, Path.Combine(outDir, "baseline"), tok,
            () => TrainRun.BuildModel(baseRecipeC, tok, device, ui.Info), data.PostTrain, data.Validation, ui, cancel);

        // d. Random initialisation of the same recurrent shape, same recipe, same FLOPs.
        ui.Stage("d. same recurrent shape from random initialisation, same FLOPs");
        var randRecipe = recRecipe with { Retrofit = new RetrofitSpec { Shape = o.Shape, Init = RetrofitInit.Random } };
        var (_, random) = Train(randRecipe, Path.Combine(outDir, "random-init"), tok,
            () => TrainRun.BuildModel(randRecipe, tok, device, ui.Info), data.PostTrain, data.Validation, ui, cancel);

        // e. Evaluate.
        ui.Stage("e. evaluate on held-out problems");
        results.Add(Evaluate(basePre with { Name = "base (pretrained only)", Description = "the pretrained base model before post-training" }, Path.Combine(outDir, "base", TrainRun.FinalModelDir), tok, data, o, ui, cancel));
        results.Add(Evaluate(baseline with { Name = "baseline (non-recurrent)", Description = "base post-trained without recurrence for the same FLOPs" }, Path.Combine(outDir, "baseline", TrainRun.FinalModelDir), tok, data, o, ui, cancel));
        results.Add(Evaluate(rec with { Name = $"recurrent ({o.Shape}) from base", Description = "retrofitted from the pretrained base and post-trained with the recurrence curriculum" }, recDir, tok, data, o, ui, cancel));
        results.Add(Evaluate(random with { Name = $"recurrent ({o.Shape}) random init", Description = "same shape and recipe from random initialisation" }, Path.Combine(outDir, "random-init", TrainRun.FinalModelDir), tok, data, o, ui, cancel));
        return new DemoResult(o, results, wall.Elapsed.TotalSeconds, Machine());
    }

    public sealed record DemoData(List<int[]> Pretrain, List<int[]> PostTrain, List<int[]> Validation, List<SynthMathProblem> Test);

    /// <summary>
    /// Pretraining corpus: worked solutions and direct answers (the "language" of the task). Post-training corpus:
    /// direct answers only. The test set is disjoint from both (by normalised question text).
    /// </summary>
    public static DemoData MakeData(DemoOptions o, IDemoProgress ui)
    {
        int levels = o.MaxSteps - o.MinSteps + 1;
        int testCount = o.TestPerDifficulty * levels;
        var post = SynthMath.Generate(new SynthMathOptions(o.PostTrainProblems + testCount * 2, o.MinSteps, o.MaxSteps, Direct: true, Seed: (ulong)o.Seed, MaxValue: o.MaxValue,
            ValidationFraction: (double)testCount / (o.PostTrainProblems + testCount * 2), TestFraction: (double)testCount / (o.PostTrainProblems + testCount * 2)));
        var held = new HashSet<string>(post.Test.Concat(post.Validation).Select(p => SynthMath.Normalize(p.Question)));
        var cot = SynthMath.Generate(new SynthMathOptions(o.PretrainProblems / 2, o.MinSteps, o.MaxSteps, Direct: false, Seed: (ulong)o.Seed + 100, MaxValue: o.MaxValue, ValidationFraction: 0, TestFraction: 0));
        var direct = SynthMath.Generate(new SynthMathOptions(o.PretrainProblems / 2, o.MinSteps, o.MaxSteps, Direct: true, Seed: (ulong)o.Seed + 200, MaxValue: o.MaxValue, ValidationFraction: 0, TestFraction: 0));
        var pre = cot.Train.Concat(direct.Train).Where(p => !held.Contains(SynthMath.Normalize(p.Question))).ToList();
        var tok = new CharTokenizerAdapter(new CharTokenizer(), "char");
        int[] Doc(SynthMathProblem p) => TrainRun.Doc(tok, Text(p));
        // Post-training learns the answers: the question's tokens are inputs only (stored complemented, see
        // InMemoryRows). Its numbers are random draws no model can predict, and at this scale they would
        // dominate the loss; the paper's math corpora are mostly worked text, where every token is learnable.
        int[] AnswerOnly(SynthMathProblem p)
        {
            var ids = Doc(p);
            int prompt = tok.Encode(Prompt(p)).Length;
            for (int i = 0; i < prompt && i < ids.Length; i++) ids[i] = ~ids[i];
            return ids;
        }
        ui.Info($"data: pretraining {pre.Count} problems (worked + direct), post-training {post.Train.Count} direct, validation {post.Validation.Count}, test {post.Test.Count} ({o.TestPerDifficulty} per difficulty {o.MinSteps}–{o.MaxSteps}); numbers ≤ {o.MaxValue}");
        return new DemoData(pre.Select(Doc).ToList(), post.Train.Select(AnswerOnly).ToList(), post.Validation.Select(AnswerOnly).ToList(), [.. post.Test]);
    }

    /// <summary>The paper's post-training recipe shape, scaled to a 2-million-parameter model (learning rates, steps, lengths).</summary>
    static TrainRecipe Recipe(DemoOptions o, string name, string model, RetrofitSpec? retrofit, long steps) =>
        DemoTraining.Recipe(name, model, retrofit, steps, o.MicroBatch, o.SeqLen, o.Seed, o.TrainRecurrence, o.BackpropDepth, o.MuonLr, o.AdamWLr, o.DType);

    static (string ModelDir, DemoModelResult Result) Train(TrainRecipe r, string dir, ITokenizer tok, Func<ICausalLM> build,
        List<int[]> train, List<int[]> val, IDemoProgress ui, CancellationToken cancel) =>
        DemoTraining.TrainModel<DemoModelResult>(r, dir, tok, build, train, val, ui, cancel);

    static DemoModelResult Evaluate(DemoModelResult res, string modelDir, ITokenizer tok, DemoData data, DemoOptions o, IDemoProgress ui, CancellationToken cancel)
    {
        using var model = ModelLoader.Load(modelDir, ScalarType.Float32, CPU);
        var (dt, _) = Precision.Resolve(o.DType, CPU);
        model.ComputeDType = dt;
        var rec = model as RecurrentModel;
        var depths = rec is null ? new[] { 1 } : o.Recurrences;
        var acc = new SortedDictionary<int, SortedDictionary<int, double>>();
        var overall = new SortedDictionary<int, double>();
        var valLoss = new SortedDictionary<int, double>();
        foreach (int t in depths)
        {
            using var answerGen = rec is null ? null : new Generator((ulong)o.Seed);
            var correct = Answer(rec?.At(Recurrence.Fixed(t, answerGen)) ?? model, tok, data.Test, o, cancel);
            acc[t] = new SortedDictionary<int, double>(data.Test.Select((p, i) => (p.Steps, correct[i])).GroupBy(x => x.Steps).ToDictionary(g => g.Key, g => g.Average(x => x.Item2 ? 1.0 : 0.0)));
            overall[t] = correct.Average(c => c ? 1.0 : 0.0);
            using var lossGen = rec is null ? null : new Generator((ulong)o.Seed);
            var scored = rec?.At(Recurrence.Fixed(t, lossGen)) ?? model;
            using var rows = new InMemoryRows(data.Validation, o.SeqLen, o.MicroBatch, 0, tok.EosId ?? 0);
            double sum = 0; long n = 0;
            for (int b = 0; b < Math.Max(1, rows.Rows / o.MicroBatch); b++)
            {
                var (x, y) = rows.Next();
                var (s, c) = Loss.Sum(scored, x, y);
                sum += s; n += c;
            }
            valLoss[t] = sum / Math.Max(1, n);
            ui.Info($"{res.Name}{(rec is null ? "" : $", T = {t}")}: accuracy {overall[t]:P1}, held-out answer loss {valLoss[t]:0.0000}");
        }
        return res with { Accuracy = acc, OverallAccuracy = overall, ValLoss = valLoss };
    }

    /// <summary>Greedy direct answers, batched; a problem is right when the number after #### equals the answer.</summary>
    static bool[] Answer(ICausalLM model, ITokenizer tok, List<SynthMathProblem> test, DemoOptions o, CancellationToken cancel)
    {
        var result = new bool[test.Count];
        int newline = tok.Encode("\n", addSpecialTokens: false)[0];
        for (int start = 0; start < test.Count; start += o.EvalBatch)
        {
            var batch = test.Skip(start).Take(o.EvalBatch).ToList();
            var prompts = batch.Select(p => tok.Encode(Prompt(p))).ToList();
            var opts = new GenerationOptions(12, null, [tok.EosId!.Value, newline]);
            var outs = Generation.Generate(model, prompts, opts, cancel: cancel);
            for (int i = 0; i < batch.Count; i++) result[start + i] = Extract(tok.Decode(outs[i])) == batch[i].Final;
        }
        return result;
    }

    public static string Machine()
    {
        string cpu = "unknown CPU";
        try { cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu; }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}";
    }
}
