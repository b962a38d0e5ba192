// Self-speculative decoding (Engine/Speculative.cs) against plain decoding at the same T, on a trained recurrent model
// (by default the demo's running-sum model), batch 1, greedy, fp32. Prompts are held-out-style direct running sums
// ("2+1+0+2=", terms 0–2 as the demo trains them); every run generates exactly --tokens tokens (end-of-text ignored, so
// plain and speculative runs do the same work). Each round times plain decoding and every (T_d, K) in turn, interleaved,
// and a speed-up is plain ÷ speculative time within one round; the table gives the median over rounds. Both include
// the prompt's prefill (the same in both: its positions as rows through each block, or op by op with --compare-prefill,
// which adds a row per setting for the op-path prefill, interleaved, and a column comparing each setting with the
// op-path prefill's plain decoding of the same round); each round also times each path's prefill alone (generating
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
    /// <param name="comparePrefill">Also time every setting with the prompt's prefill op by op (FastDecode.MultiRowPrefill off, the state before it), interleaved.</param>
    public static void Run(string modelDir, int[] ts, int[] drafts, int[] ks, int tokens, int promptCount, int rounds, bool compareOneRow = false, bool comparePrefill = false)
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
        string before = comparePrefill ? " speed-up vs op-path-prefill plain (median) |" : "";
        Console.WriteLine($"| T | T_d | K | verify kernel | prefill | prefill ms/prompt | plain tok/s | speculative tok/s | speed-up (median of {rounds}) | each round |{before} without prefill | prefill share of plain | acceptance | tokens/cycle | plain ms/token | draft ms/pass | verify ms/row | of which products | rest ms/cycle | ids |");
        Console.WriteLine($"|---|---|---|---|---|---|---|---|---|---|{(comparePrefill ? "---|" : "")}---|---|---|---|---|---|---|---|---|---|");
        foreach (int t in ts)
        {
            var configs = (from td in drafts where td < t from k in ks from shared in compareOneRow ? new[] { true, false } : new[] { true }
                           select (Options: new SpeculativeOptions(td, k), Shared: shared)).ToList();
            // The prompt's prefill: as rows (FastRows.cs), and with --compare-prefill also op by op as before it (both paths
            // alike), interleaved round by round.
            var modes = comparePrefill ? new[] { false, true } : new[] { true };
            // Warm-up of both paths, both verify kernels and both prefills until the JIT's tiering has settled (a short
            // warm-up left the first timed round several times slower than the others).
            for (int w = 0; w < 3; w++)
                foreach (var rows in modes)
                {
                    FastDecode.MultiRowPrefill = rows;
                    Plain(m, t, prompts[0], tokens);
                    foreach (var shared in configs.Select(x => x.Shared).Distinct())
                    {
                        GemvRows.Enabled = shared;
                        Speculated(m, t, prompts[0], tokens, configs[0].Options, new SpeculativeStats());
                    }
                    GemvRows.Enabled = true;
                }
            int nm = modes.Length;
            var plainTimes = modes.Select(_ => new List<double>()).ToArray();
            var prefillTimes = modes.Select(_ => new List<double>()).ToArray();
            var specPrefillTimes = modes.Select(_ => new List<double>()).ToArray();
            var specTimes = modes.Select(_ => configs.Select(_ => new List<double>()).ToList()).ToArray();
            var stats = modes.Select(_ => configs.Select(_ => new SpeculativeStats()).ToList()).ToArray();
            var same = configs.Select(_ => true).ToList();
            var productSeconds = modes.Select(_ => new double[configs.Count]).ToArray();
            List<List<int>>? firstReference = null;
            for (int round = 0; round < rounds; round++)
                for (int mi = 0; mi < nm; mi++)
                {
                    FastDecode.MultiRowPrefill = modes[mi];
                    var reference = new List<List<int>>();
                    var sw = Stopwatch.StartNew();
                    foreach (var p in prompts) Plain(m, t, p, 1);
                    prefillTimes[mi].Add(sw.Elapsed.TotalSeconds);
                    sw.Restart();
                    foreach (var p in prompts) Speculated(m, t, p, 1, configs[0].Options, new SpeculativeStats());
                    specPrefillTimes[mi].Add(sw.Elapsed.TotalSeconds);
                    sw.Restart();
                    foreach (var p in prompts) reference.Add(Plain(m, t, p, tokens));
                    plainTimes[mi].Add(sw.Elapsed.TotalSeconds);
                    // Every plain and speculative run, with either prefill, must give the first plain run's ids.
                    firstReference ??= reference;
                    same[0] &= reference.Zip(firstReference).All(x => x.First.SequenceEqual(x.Second));
                    for (int c = 0; c < configs.Count; c++)
                    {
                        var roundStats = stats[mi][c];
                        sw.Restart();
                        GemvRows.Enabled = configs[c].Shared;
                        long ticks = SpeculativeDecoder.ProductTicks;
                        var outs = prompts.Select(p => Speculated(m, t, p, tokens, configs[c].Options, roundStats)).ToList();
                        specTimes[mi][c].Add(sw.Elapsed.TotalSeconds);
                        productSeconds[mi][c] += Stopwatch.GetElapsedTime(0, SpeculativeDecoder.ProductTicks - ticks).TotalSeconds;
                        GemvRows.Enabled = true;
                        same[c] &= outs.Zip(firstReference).All(x => x.First.SequenceEqual(x.Second));
                    }
                }
            FastDecode.MultiRowPrefill = true;
            double total = (double)tokens * prompts.Count;
            for (int c = 0; c < configs.Count; c++)
                for (int mi = 0; mi < nm; mi++)
                {
                    var (pt, pre, spre, st, sts) = (plainTimes[mi], prefillTimes[mi], specPrefillTimes[mi], specTimes[mi][c], stats[mi][c]);
                    var ratios = pt.Zip(st, (a, b) => a / b).ToList();
                    var decodeRatios = Enumerable.Range(0, rounds).Select(r => (pt[r] - pre[r]) / (st[r] - spre[r])).ToList();
                    // Against the op-path prefill's plain decoding of the same round (the state before this prefill).
                    string vsBefore = comparePrefill ? $" {Median([.. plainTimes[0].Zip(st, (a, b) => a / b)]):0.00}× |" : "";
                    var (o, shared) = configs[c];
                    Console.WriteLine($"| {t} | {o.DraftRecurrences} | {o.DraftTokens} | {(shared ? "multi-row" : "one-row")} | {(modes[mi] ? "rows" : "op path")} | {pre.Sum() / rounds / prompts.Count * 1000:0.0} | {total / Median(pt):0.0} | {total / Median(st):0.0} | "
                        + $"**{Median(ratios):0.00}×** | {string.Join(" ", ratios.Select(r => r.ToString("0.00")))} |{vsBefore} {Median(decodeRatios):0.00}× | {Median([.. pre.Zip(pt, (a, b) => a / b)]):P0} | {sts.AcceptanceRate:P0} | {sts.TokensPerCycle:0.00} | "
                        + $"{1000 * Median(pt) / total:0.00} | {1000 * sts.DraftSeconds / Math.Max(1, sts.Drafted + sts.Cycles):0.00} | {1000 * sts.VerifySeconds / Math.Max(1, sts.VerifiedRows):0.00} | {productSeconds[mi][c] / sts.VerifySeconds:P0} | "
                        + $"{1000 * (st.Sum() - spre.Sum() - sts.DraftSeconds - sts.VerifySeconds) / Math.Max(1, sts.Cycles):0.00} | "
                        + $"{(same[c] && same[0] ? "identical" : "DIFFER")} |");
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
