// The prompt's prefill on the fast path (its positions as rows through each block, Model/FastRows.cs) against the op-by-op
// forward it replaces (FastDecode.MultiRowPrefill off: the state before it), interleaved within each round in one
// process: the time of a one-token greedy generation (the cache, the prompt's forward, the head and the first token —
// time to first token without the process start), for random llama2.c-shaped decoders (weights N(0, 0.02), as the
// decode suite makes them) in fp32 and bf16, and for a trained recurrent model at the given T. A ratio is op path ÷
// rows within one round; the table gives the median over rounds. Both must pick the same first token.
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

static class PrefillSuite
{
    public static void Run(string[] shapes, string recurrentDir, int[] ts, int[] lengths, string[] dtypes, int rounds)
    {
        using var _ = no_grad();
        Console.WriteLine($"load average at start: {LoadAverage()}; {rounds} rounds");
        Console.WriteLine();
        Console.WriteLine($"| model | dtype | T | prompt tokens | op path ms | rows ms | op path ÷ rows (median of {rounds}) | each round | first token |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var name in shapes)
            foreach (var dt in dtypes.Select(d => d == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32))
            {
                var cfg = Presets.Get(name) with { MaxPositionEmbeddings = 1024 };
                manual_seed(0);
                using var m = new DecoderModel(cfg);
                foreach (var p in m.parameters()) p.normal_(0, 0.02);
                m.to(dt); m.ComputeDType = dt; m.eval();
                foreach (int n in lengths) Compare(name, dt, "—", () => m, Prompt(n, cfg.VocabSize), rounds);
            }
        if (recurrentDir.Length > 0 && Directory.Exists(recurrentDir))
        {
            using var rm = (RecurrentModel)ModelLoader.Load(recurrentDir, ScalarType.Float32, CPU);
            foreach (int t in ts)
                foreach (int n in lengths)
                    Compare(recurrentDir, ScalarType.Float32, t.ToString(), () => rm.At(Recurrence.Fixed(t, new Generator(1))), Prompt(n, rm.VocabSize), rounds);
        }
        Console.WriteLine();
        Console.WriteLine($"load average at end: {LoadAverage()}");
    }

    static int[] Prompt(int n, int vocab) => [.. Enumerable.Range(0, n).Select(i => 3 + (i * 131 + 17) % Math.Min(vocab - 3, 500))];

    /// <param name="view">The model for one generation (a recurrent one with a fresh s_0 generator of the same seed each time).</param>
    static void Compare(string name, ScalarType dt, string t, Func<ICausalLM> view, int[] prompt, int rounds)
    {
        double First(bool rows, out int token)
        {
            FastDecode.MultiRowPrefill = rows;
            var sw = Stopwatch.StartNew();
            token = Generation.Generate(view(), [prompt], new GenerationOptions(1))[0].DefaultIfEmpty(-1).First();
            return sw.Elapsed.TotalSeconds;
        }
        First(false, out _); First(true, out _); // warm-up (JIT, plans)
        var op = new List<double>();
        var rowsT = new List<double>();
        bool same = true;
        for (int r = 0; r < rounds; r++)
        {
            op.Add(First(false, out int a));
            rowsT.Add(First(true, out int b));
            same &= a == b;
        }
        FastDecode.MultiRowPrefill = true;
        var ratios = op.Zip(rowsT, (a, b) => a / b).ToList();
        Console.WriteLine($"| {name} | {(dt == ScalarType.BFloat16 ? "bf16" : "fp32")} | {t} | {prompt.Length} | {1000 * Median(op):0.0} | {1000 * Median(rowsT):0.0} | **{Median(ratios):0.00}×** | "
            + $"{string.Join(" ", ratios.Select(x => x.ToString("0.00")))} | {(same ? "same" : "DIFFER")} |");
    }

    static double Median(List<double> xs) => xs.OrderBy(x => x).ElementAt(xs.Count / 2);

    static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
