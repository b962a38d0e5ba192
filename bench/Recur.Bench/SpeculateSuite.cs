// Self-speculative decoding (Engine/Speculative.cs) against plain decoding at the same T, on a trained recurrent model
// (by default the demo's running-sum model), batch 1, greedy, fp32. Prompts are held-out-style direct running sums
// ("2+1+0+2=", terms 0–2 as the demo trains them); every run generates exactly --tokens tokens (end-of-text ignored, so
// plain and speculative runs do the same work). Each round times plain decoding and every (T_d, K) in turn, interleaved,
// and a speed-up is plain ÷ speculative time within one round; the table gives the median over rounds. Both include
// the prompt's prefill (the same op-by-op forward in both); each round also times each path's prefill alone (generating
// one token: the setup and the prompt's forward), and "without prefill" is (plain − its prefill) ÷ (speculative − its
// prefill) within the round. The draft/verify
// split sums all rounds; "rest" is what a speculative generation spends outside prefill, draft and verify, per cycle.
// Every speculative run's ids are checked against plain decoding's.
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Data;
using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

static class SpeculateSuite
{
    /// <param name="compareOneRow">Also time every setting with the verify's products one row at a time (GemvRows off), interleaved.</param>
    public static void Run(string modelDir, int[] ts, int[] drafts, int[] ks, int tokens, int promptCount, int rounds, bool compareOneRow = false)
    {
        using var _ = no_grad();
        Console.WriteLine($"model {modelDir}; load average at start: {LoadAverage()}");
        List<int[]> prompts;
        RecurrentModel m;
        if (modelDir.StartsWith("random:", StringComparison.Ordinal))
        {
            // A random (2,4,2) recurrent model of a llama2.c shape (as the generate suite builds one): no trained behaviour,
            // so its acceptance says little; it shows what the verify costs where the weights do not fit in cache.
            var opts = new RetrofitOptions { Layers = new LayerMap([], [], []) };
            var rc = Retrofit.ConfigFor(Presets.Get(modelDir["random:".Length..]) with { MaxPositionEmbeddings = 1024 }, opts) with
            {
                NLayers = 8, NLayersInPrelude = 2, NLayersInRecurrentBlock = 4, NLayersInCoda = 2,
            };
            manual_seed(0);
            m = Recur.Training.TrainRun.RandomRecurrent(rc, 0);
            prompts = [.. Enumerable.Range(0, promptCount).Select(i => Enumerable.Range(0, 16).Select(j => 1 + (i * 131 + j * 17) % 500).ToArray())];
            Console.WriteLine($"{prompts.Count} prompts of 16 token ids; {tokens} new tokens each; {rounds} rounds");
        }
        else
        {
            m = (RecurrentModel)ModelLoader.Load(modelDir, ScalarType.Float32, CPU);
            using var tok = TokenizerLoader.Load(TokenizerLoader.PathFor(modelDir, null) ?? throw new InvalidOperationException($"{modelDir}: no tokenizer"));
            var sums = new VariableChainsOptions(DepthTaskKind.Sum, MaxOffset: 2);
            var problems = VariableChains.TestSet(sums, 20261206, 3, 8, 4);
            prompts = [.. Enumerable.Range(0, promptCount).Select(i => problems[i * problems.Count / promptCount]).Select(p => tok.Encode(p.Prompt))];
            Console.WriteLine($"{prompts.Count} prompts, e.g. '{tok.Decode(prompts[0])}'; {tokens} new tokens each; {rounds} rounds");
        }
        using var _m = m;
        Console.WriteLine();
        Console.WriteLine($"| T | T_d | K | verify kernel | plain tok/s | speculative tok/s | speed-up (median of {rounds}) | each round | without prefill | prefill share of plain | acceptance | tokens/cycle | plain ms/token | draft ms/pass | verify ms/row | of which products | rest ms/cycle | ids |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (int t in ts)
        {
            var configs = (from td in drafts where td < t from k in ks from shared in compareOneRow ? new[] { true, false } : new[] { true }
                           select (Options: new SpeculativeOptions(td, k), Shared: shared)).ToList();
            // Warm-up of both paths and both verify kernels until the JIT's tiering has settled (a short warm-up left the
            // first timed round several times slower than the others).
            for (int w = 0; w < 3; w++)
            {
                Plain(m, t, prompts[0], tokens);
                foreach (var shared in configs.Select(x => x.Shared).Distinct())
                {
                    GemvRows.Enabled = shared;
                    Speculated(m, t, prompts[0], tokens, configs[0].Options, new SpeculativeStats());
                }
                GemvRows.Enabled = true;
            }
            var plainTimes = new List<double>();
            var prefillTimes = new List<double>();
            var specPrefillTimes = new List<double>();
            var specTimes = configs.Select(_ => new List<double>()).ToList();
            var stats = configs.Select(_ => new SpeculativeStats()).ToList();
            var same = configs.Select(_ => true).ToList();
            var productSeconds = new double[configs.Count];
            for (int round = 0; round < rounds; round++)
            {
                var reference = new List<List<int>>();
                var sw = Stopwatch.StartNew();
                foreach (var p in prompts) Plain(m, t, p, 1);
                prefillTimes.Add(sw.Elapsed.TotalSeconds);
                sw.Restart();
                foreach (var p in prompts) Speculated(m, t, p, 1, configs[0].Options, new SpeculativeStats());
                specPrefillTimes.Add(sw.Elapsed.TotalSeconds);
                sw.Restart();
                foreach (var p in prompts) reference.Add(Plain(m, t, p, tokens));
                plainTimes.Add(sw.Elapsed.TotalSeconds);
                for (int c = 0; c < configs.Count; c++)
                {
                    var roundStats = stats[c];
                    sw.Restart();
                    GemvRows.Enabled = configs[c].Shared;
                    long ticks = SpeculativeDecoder.ProductTicks;
                    var outs = prompts.Select(p => Speculated(m, t, p, tokens, configs[c].Options, roundStats)).ToList();
                    specTimes[c].Add(sw.Elapsed.TotalSeconds);
                    productSeconds[c] += Stopwatch.GetElapsedTime(0, SpeculativeDecoder.ProductTicks - ticks).TotalSeconds;
                    GemvRows.Enabled = true;
                    same[c] &= outs.Zip(reference).All(x => x.First.SequenceEqual(x.Second));
                }
            }
            double total = (double)tokens * prompts.Count;
            for (int c = 0; c < configs.Count; c++)
            {
                var ratios = plainTimes.Zip(specTimes[c], (a, b) => a / b).ToList();
                var decodeRatios = Enumerable.Range(0, rounds).Select(r => (plainTimes[r] - prefillTimes[r]) / (specTimes[c][r] - specPrefillTimes[r])).ToList();
                var (o, shared) = configs[c];
                Console.WriteLine($"| {t} | {o.DraftRecurrences} | {o.DraftTokens} | {(shared ? "multi-row" : "one-row")} | {total / Median(plainTimes):0.0} | {total / Median(specTimes[c]):0.0} | "
                    + $"**{Median(ratios):0.00}×** | {string.Join(" ", ratios.Select(r => r.ToString("0.00")))} | {Median(decodeRatios):0.00}× | {Median(prefillTimes.Zip(plainTimes, (a, b) => a / b).ToList()):P0} | {stats[c].AcceptanceRate:P0} | {stats[c].TokensPerCycle:0.00} | "
                    + $"{1000 * Median(plainTimes) / total:0.00} | {1000 * stats[c].DraftSeconds / Math.Max(1, stats[c].Drafted + stats[c].Cycles):0.00} | {1000 * stats[c].VerifySeconds / Math.Max(1, stats[c].VerifiedRows):0.00} | {productSeconds[c] / stats[c].VerifySeconds:P0} | "
                    + $"{1000 * (specTimes[c].Sum() - specPrefillTimes.Sum() - stats[c].DraftSeconds - stats[c].VerifySeconds) / Math.Max(1, stats[c].Cycles):0.00} | "
                    + $"{(same[c] ? "identical" : "DIFFER")} |");
            }
        }
        Console.WriteLine();
        Console.WriteLine($"load average at end: {LoadAverage()}");
    }

    static List<int> Plain(RecurrentModel m, int t, int[] prompt, int tokens)
    {
        using var gen = new Generator(1);
        return Generation.Generate(m.At(Recurrence.Fixed(t, gen)), [prompt], new GenerationOptions(tokens))[0];
    }

    static List<int> Speculated(RecurrentModel m, int t, int[] prompt, int tokens, SpeculativeOptions s, SpeculativeStats stats)
    {
        using var gen = new Generator(1);
        return Speculative.Generate(m.At(Recurrence.Fixed(t, gen)), [prompt], new GenerationOptions(tokens), s, stats)[0];
    }

    static double Median(List<double> xs) => xs.OrderBy(x => x).ElementAt(xs.Count / 2);

    static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
