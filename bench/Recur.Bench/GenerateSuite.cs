// Greedy decode through the generation loop, nothing else measured (no bandwidth or matmul probes), so that two builds
// can be run A/B/A/B on a loaded machine: plain decoders of the stories15M/110M shapes and a (2,4,2) recurrent model of
// the stories15M shape at its default T (mean_recurrence 4), batch 1, 16-token prompt, fp32 and bf16.
using System.Diagnostics;
using Recur.Engine;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

static class GenerateSuite
{
    public static void Run(string[] shapes, int tokens, int rounds)
    {
        using var _ = no_grad();
        Console.WriteLine($"| model | dtype | decode tok/s (median of {rounds}) | each round |");
        Console.WriteLine("|---|---|---|---|");
        int[] prompt = Enumerable.Range(1, 16).ToArray();
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            foreach (var name in shapes)
            {
                manual_seed(0);
                using var m = new DecoderModel(Presets.Get(name) with { MaxPositionEmbeddings = 1024 });
                foreach (var p in m.parameters()) p.normal_(0, 0.02);
                m.to(dt); m.ComputeDType = dt; m.eval();
                Report(name, dt, Measure(m, prompt, tokens, rounds));
            }
            var opts = new Recur.Checkpoints.RetrofitOptions { Layers = new Recur.Checkpoints.LayerMap([], [], []) };
            var rc = Recur.Checkpoints.Retrofit.ConfigFor(Presets.Stories15M with { MaxPositionEmbeddings = 1024 }, opts) with
            {
                NLayers = 8, NLayersInPrelude = 2, NLayersInRecurrentBlock = 4, NLayersInCoda = 2, MeanRecurrence = 4,
            };
            manual_seed(0);
            using var r = Recur.Training.TrainRun.RandomRecurrent(rc, 0);
            r.to(dt); r.ComputeDType = dt; r.eval();
            Report("recurrent (2,4,2) stories15m, T = 4", dt, Measure(r, prompt, tokens, rounds));
        }
    }

    static List<double> Measure(ICausalLM m, int[] prompt, int tokens, int rounds)
    {
        Generation.Generate(m, [prompt], new GenerationOptions(8)); // warm-up
        var tps = new List<double>();
        for (int i = 0; i < rounds; i++)
        {
            var sw = Stopwatch.StartNew();
            Generation.Generate(m, [prompt], new GenerationOptions(tokens));
            tps.Add(tokens / sw.Elapsed.TotalSeconds);
        }
        return tps;
    }

    static void Report(string name, ScalarType dt, List<double> tps) =>
        Console.WriteLine($"| {name} | {(dt == ScalarType.Float32 ? "fp32" : "bf16")} | {tps.OrderBy(x => x).ElementAt(tps.Count / 2):0.0} | {string.Join(" ", tps.Select(x => x.ToString("0.0")))} |");
}
