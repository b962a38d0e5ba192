// Recur benchmarks. Each suite measures its peers in the same run and reports ratios, because the
// machine is shared and absolute numbers drift. Usage:
//   dotnet run -c Release --project bench/Recur.Bench -- decode [--threads 2] [--shapes stories15m,stories110m]
using System.Diagnostics;
using Recur.Engine;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

var argv = args.ToList();
string suite = argv.Count > 0 ? argv[0] : "decode";
int threads = Arg("--threads", 2);
var shapes = ArgS("--shapes", "stories15m,stories110m").Split(',');
torch.set_num_threads(threads);
Console.WriteLine($"# Recur bench '{suite}' — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {threads} threads, {Environment.ProcessorCount} cores, TorchSharp {typeof(torch).Assembly.GetName().Version}");

switch (suite)
{
    case "decode": Decode(); break;
    default: Console.Error.WriteLine($"unknown suite '{suite}' (expected: decode)"); return 2;
}
return 0;

int Arg(string name, int def) { int i = argv.IndexOf(name); return i >= 0 ? int.Parse(argv[i + 1]) : def; }
string ArgS(string name, string def) { int i = argv.IndexOf(name); return i >= 0 ? argv[i + 1] : def; }

static double Time(Action a, int reps)
{
    a(); // warm-up
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < reps; i++) a();
    return sw.Elapsed.TotalSeconds / reps;
}

/// <summary>Peak matmul throughput (GFLOP/s) for square n×n products in a dtype.</summary>
static double MatmulPeak(ScalarType dt, int n = 2048)
{
    using var scope = NewDisposeScope();
    var a = randn(n, n).to(dt); var b = randn(n, n).to(dt);
    double s = Time(() => { using var c = a.matmul(b); }, 5);
    return 2.0 * n * n * n / s / 1e9;
}

/// <summary>Read bandwidth (GB/s): summing a 1 GiB fp32 tensor reads every byte once.</summary>
static double ReadBandwidth()
{
    using var scope = NewDisposeScope();
    var t = ones(1L << 28);
    double s = Time(() => { using var r = t.sum(); }, 5);
    return (1L << 30) / s / 1e9;
}

void Decode()
{
    using var _ = no_grad();
    double bw = ReadBandwidth();
    double peak32 = MatmulPeak(ScalarType.Float32), peak16 = MatmulPeak(ScalarType.BFloat16);
    Console.WriteLine($"machine: read bandwidth {bw:0.0} GB/s; matmul peak fp32 {peak32:0} GFLOP/s, bf16 {peak16:0} GFLOP/s");
    Console.WriteLine();
    Console.WriteLine("| shape | dtype | prefill 512 tok/s | prefill GFLOP/s | ÷ matmul peak | decode tok/s | bound tok/s | ÷ bound |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|");
    foreach (var name in shapes)
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var cfg = Presets.Get(name) with { MaxPositionEmbeddings = 1024 };
            manual_seed(0);
            using var m = new DecoderModel(cfg);
            using (no_grad()) foreach (var p in m.parameters()) p.normal_(0, 0.02);
            m.to(dt); m.ComputeDType = dt; m.eval();
            long nParams = m.parameters().Sum(p => p.numel());
            long embed = m.model.embed_tokens.weight!.numel();
            // Per decoded token every matrix is read once; the embedding is a row lookup unless tied to the head.
            long readParams = nParams - (cfg.TieWordEmbeddings ? 0 : embed);
            int elem = dt == ScalarType.Float32 ? 4 : 2;
            double bound = bw * 1e9 / (readParams * (double)elem);
            // Prefill: 512-token prompt, logits for the last position only (as generation does).
            var prompt = randint(0, cfg.VocabSize, [1, 512], dtype: ScalarType.Int64);
            double tPre = Time(() => { using var c = new KvCache(m.CacheSlots, 512); using var l = m.Forward(prompt, cache: c, lastOnly: true); }, 3);
            double flopsPerTok = 2.0 * (nParams - embed) + 4.0 * cfg.NumHiddenLayers * 256 * cfg.NumAttentionHeads * cfg.HeadDimension; // matmuls + attention at mean length 256
            double preTps = 512 / tPre;
            double preGf = preTps * flopsPerTok / 1e9;
            // Decode: 128 greedy tokens after a 16-token prompt, through the real generation loop.
            int[] p16 = Enumerable.Range(1, 16).ToArray();
            int n = 128;
            var opts = new GenerationOptions(n);
            double tDec = Time(() => Generation.Generate(m, [p16], opts), 2);
            double decTps = n / tDec;
            double peak = dt == ScalarType.Float32 ? peak32 : peak16;
            Console.WriteLine($"| {name} | {(dt == ScalarType.Float32 ? "fp32" : "bf16")} | {preTps:0} | {preGf:0} | {preGf / peak:0.00} | {decTps:0.0} | {bound:0.0} | {decTps / bound:0.00} |");
        }
}
