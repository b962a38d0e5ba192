// Muon's Newton–Schulz step (METHOD §4.4) on the demo decoder's 56 matrices (8 layers × q, k, v, o, gate, up, down of
// the `demo` preset), with libtorch's bf16 `mm` against ExactBf16MatMul's kernels, interleaved round by round in one
// process (bench/RESULTS.md, "Demo time budget (issue 13)"). Both give the same bits, which is checked.
using System.Diagnostics;
using Recur.Model;
using Recur.Training;
using static TorchSharp.torch;

static class MuonSuite
{
    public static void Run(int rounds)
    {
        var c = Presets.Demo;
        long h = c.HiddenSize, kv = c.KvHeads * c.HeadDimension, inter = c.IntermediateSize;
        long[][] layer = [[h, h], [kv, h], [kv, h], [h, h], [inter, h], [inter, h], [h, inter]];
        var grads = Enumerable.Range(0, c.NumHiddenLayers).SelectMany(_ => layer).Select(s => randn(s[0], s[1])).ToList();
        var mm = new ExactBf16MatMul();
        foreach (var g in grads)
        {
            using var scope = NewDisposeScope();
            if (!ExactBf16MatMul.SameBits(Muon.NewtonSchulz5(g), Muon.NewtonSchulz5(g, matmul: mm))) throw new InvalidOperationException("the kernels changed NS5's output");
        }
        Console.WriteLine($"{grads.Count} matrices; NS5 outputs identical with both; shapes left on libtorch's mm: {mm.MismatchedShapes}; load average {File.ReadAllText("/proc/loadavg").Trim()}");
        var ratios = new List<double>();
        for (int round = 1; round <= rounds; round++)
        {
            var sw = Stopwatch.StartNew();
            foreach (var g in grads) { using var scope = NewDisposeScope(); Muon.NewtonSchulz5(g); }
            double lib = sw.Elapsed.TotalSeconds;
            sw.Restart();
            foreach (var g in grads) { using var scope = NewDisposeScope(); Muon.NewtonSchulz5(g, matmul: mm); }
            double fast = sw.Elapsed.TotalSeconds;
            ratios.Add(lib / fast);
            Console.WriteLine($"round {round}: NS5 of all matrices: libtorch mm {lib:0.000} s, exact kernels {fast:0.000} s, ratio {lib / fast:0.00}");
        }
        ratios.Sort();
        Console.WriteLine($"median ratio {ratios[ratios.Count / 2]:0.00} over {rounds} rounds");
    }
}
