// The speculative verify's multi-row kernel (Model/GemvRows.cs) against R calls of the one-row kernel plain decoding
// uses (Gemv.ProductRows with one row) and against libtorch's linear on the same R rows, for one layer's projections
// (q|k|v, o, gate|up, down) of a model shape, fp32, random weights. Each round times the three in turn, interleaved;
// ratios are taken within a round and the table gives medians over rounds.
using System.Diagnostics;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

static class GemvRowsSuite
{
    public static void Run(string[] shapes, int[] counts, int rounds, double targetMs)
    {
        using var _ = no_grad();
        Console.WriteLine($"load average at start: {LoadAverage()}; shared loads on this CPU: {GemvRows.SharesLoads(false)}; kernel threads {KernelThreads.Width}");
        Console.WriteLine();
        Console.WriteLine($"| shape (h, inter, q|k|v) | R | one-row × R µs/row | multi-row µs/row | libtorch linear µs/row | multi ÷ one-row speed-up (median of {rounds}) | each round | multi vs linear | identical |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var name in shapes)
        {
            var c = Presets.Get(name);
            int h = c.HiddenSize, inter = c.IntermediateSize, qkv = (c.NumAttentionHeads + 2 * c.KvHeads) * c.HeadDimension;
            manual_seed(1);
            var ws = new[] { randn(qkv, h), randn(h, h), randn(2 * inter, h), randn(h, inter) }.Select(t => t * 0.02).ToArray();
            var ms = ws.Select(Gemv.Matrix.Of).ToArray();
            int maxCount = counts.Max();
            var rng = new Random(2);
            float[] Fill(int n) { var a = new float[n]; for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
            // Inputs of each product: x for q|k|v, o and gate|up has h columns, for down inter.
            var xh = Fill(maxCount * h);
            var xi = Fill(maxCount * inter);
            int[] outs = [qkv, h, 2 * inter, h];
            var y2 = outs.Select(o => new float[maxCount * o]).ToArray();
            foreach (int count in counts)
            {
                var th = tensor(xh.AsSpan(0, count * h).ToArray(), [count, h]);
                var ti = tensor(xi.AsSpan(0, count * inter).ToArray(), [count, inter]);
                // One row at a time as plain decoding issues it (FastDecode.Project → Gemv.ProductRows with one row).
                var rowsH = Enumerable.Range(0, count).Select(r => xh.AsSpan(r * h, h).ToArray()).ToArray();
                var rowsI = Enumerable.Range(0, count).Select(r => xi.AsSpan(r * inter, inter).ToArray()).ToArray();
                var outRows = outs.Select(o => Enumerable.Range(0, count).Select(_ => new float[o]).ToArray()).ToArray();
                void OneRow()
                {
                    for (int m = 0; m < 4; m++)
                        for (int r = 0; r < count; r++) FastDecode.Project([ms[m]], m == 3 ? rowsI[r] : rowsH[r], outRows[m][r], 1);
                }
                void Multi()
                {
                    for (int m = 0; m < 4; m++) GemvRows.Product([ms[m]], m == 3 ? xi : xh, count, y2[m]);
                }
                void Linear()
                {
                    for (int m = 0; m < 4; m++) { using var y = nn.functional.linear(m == 3 ? ti : th, ws[m]); }
                }
                Reps(Multi, targetMs);
                Reps(Linear, targetMs);
                int reps = Reps(OneRow, targetMs);
                var times = new List<double[]>();
                for (int round = 0; round < rounds; round++)
                    times.Add([Time(OneRow, reps), Time(Multi, reps), Time(Linear, reps)]);
                bool same = Enumerable.Range(0, 4).All(m => outRows[m].SelectMany(y => y).SequenceEqual(y2[m].AsSpan(0, count * outs[m]).ToArray()));
                var speed = times.Select(t => t[0] / t[1]).ToList();
                var vsLinear = times.Select(t => t[2] / t[1]).ToList();
                double Us(int k) => 1e6 * Median(times.Select(t => t[k]).ToList()) / count;
                Console.WriteLine($"| {name} ({h}, {inter}, {qkv}) | {count} | {Us(0):0.0} | {Us(1):0.0} | {Us(2):0.0} | **{Median(speed):0.00}×** | "
                    + $"{string.Join(" ", speed.Select(s => s.ToString("0.00")))} | {Median(vsLinear):0.00}× | {(same ? "yes" : "NO")} |");
            }
            GC.KeepAlive(ws); // the kernels read the weights by address
        }
        Console.WriteLine();
        Console.WriteLine($"load average at end: {LoadAverage()}");
    }

    /// <summary>Repetitions that take about <paramref name="targetMs"/> milliseconds.</summary>
    static int Reps(Action a, double targetMs)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalMilliseconds < 300) a(); // past the JIT's tiering
        sw.Restart();
        int n = 0;
        while (sw.Elapsed.TotalMilliseconds < targetMs / 4) { a(); n++; }
        return Math.Max(1, (int)(4 * n));
    }

    static double Time(Action a, int reps)
    {
        a();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) a();
        return sw.Elapsed.TotalSeconds / reps;
    }

    static double Median(List<double> xs) => xs.OrderBy(x => x).ElementAt(xs.Count / 2);

    static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
