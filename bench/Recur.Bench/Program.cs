// Recur benchmarks. Each suite measures its peers in the same run and reports ratios, because the
// machine is shared and absolute numbers drift. Usage:
//   dotnet run -c Release --project bench/Recur.Bench -- decode [--threads 2] [--shapes stories15m,stories110m] [--rounds 3] [--peer /path/to/llama2.c/run] [--matmul 0] [--prefill 0]
//   dotnet run -c Release --project bench/Recur.Bench -- gemv [--threads 2] [--rows 1,4,16] [--dims 768] [--dtypes fp32,bf16]
//   dotnet run -c Release --project bench/Recur.Bench -- generate [--threads 2] [--shapes stories15m,stories110m] [--tokens 64] [--rounds 3]
//   dotnet run -c Release --project bench/Recur.Bench -- ttft --peer /path/to/llama2.c/run [--recur src/Recur.Cli/bin/Release/net10.0/linux-x64/Recur.Cli]
//       [--baseline another/Recur.Cli] [--rounds 5] [--shapes stories15m,stories110m] [--threads 2] [--torch-path 1]
//   dotnet run -c Release --project bench/Recur.Bench -- eval [--threads 2] [--problems 64] [--max-new 32] [--items 64] [--batch 32] [--single 0] [--mc 0]
//   dotnet run -c Release --project bench/Recur.Bench -- speculate [--model DIR] [--recurrences 4,8,16,32] [--drafts 1,2,4] [--ks 2,4,8]
//       [--tokens 48] [--prompts 4] [--rounds 3] [--threads 2] [--compare-one-row 1] [--compare-prefill 1]
//   dotnet run -c Release --project bench/Recur.Bench -- prefill [--threads 1] [--shapes stories110m] [--model DIR] [--recurrences 32] [--lengths 8,32,128] [--rounds 3]
//   dotnet run -c Release --project bench/Recur.Bench -- gemvrows [--threads 1] [--shapes demo,stories110m] [--rows 1,2,3,4,5,6,8] [--rounds 5] [--ms 100]
//   dotnet run -c Release --project bench/Recur.Bench -- muon [--threads 2] [--rounds 3]
//   mpiexec -n 2 bench/Recur.Bench/bin/Release/net10.0/linux-x64/Recur.Bench allreduce --threads 1 [--sizes-mb 16,64,256] [--reference 16:4.1,...]
//     (run by bench/mpi/run.sh, which passes the C program's GB/s as --reference)
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Distributed;
using Recur.Engine;
using Recur.Evaluation;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

var argv = args.ToList();
string suite = argv.Count > 0 ? argv[0] : "decode";
int threads = Arg("--threads", 2);
var shapes = ArgS("--shapes", "stories15m,stories110m").Split(',');
torch.set_num_threads(threads);
if ((MpiLaunch.FromEnvironment()?.Rank ?? 0) == 0)
    Console.WriteLine($"# Recur bench '{suite}' — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {threads} threads, {Environment.ProcessorCount} cores, TorchSharp {typeof(torch).Assembly.GetName().Version}");

switch (suite)
{
    case "decode": Decode(); break;
    case "generate": GenerateSuite.Run(shapes, Arg("--tokens", 64), Arg("--rounds", 3)); break;
    case "eval": Eval(); break;
    case "train": Train(); break;
    case "recurrence": RecurrenceDecode(); break;
    case "allreduce": AllReduce(); break;
    case "serve": Serve(); break;
    case "gemv": GemvSuite(); break;
    case "ttft": Ttft(); break;
    case "muon": MuonSuite.Run(Arg("--rounds", 3)); break;
    case "speculate":
        SpeculateSuite.Run(ArgS("--model", "/work/demo-trained/recurrent/model"), Ints("--recurrences", "4,8,16,32"), Ints("--drafts", "1,2,4"), Ints("--ks", "2,4,8"),
            Arg("--tokens", 48), Arg("--prompts", 4), Arg("--rounds", 3), Arg("--compare-one-row", 0) != 0, Arg("--compare-prefill", 0) != 0);
        break;
    case "prefill":
        PrefillSuite.Run(ArgS("--shapes", "stories110m").Split(',', StringSplitOptions.RemoveEmptyEntries), ArgS("--model", "/work/demo-trained/recurrent/model"),
            Ints("--recurrences", "32"), Ints("--lengths", "8,32,128"), ArgS("--dtypes", "fp32,bf16").Split(','), Arg("--rounds", 3));
        break;
    case "gemvrows":
        GemvRowsSuite.Run(ArgS("--shapes", "demo,stories110m").Split(','), Ints("--rows", "1,2,3,4,5,6,8"), Arg("--rounds", 5), Arg("--ms", 100));
        break;
    default: Console.Error.WriteLine($"unknown suite '{suite}' (expected: decode, generate, gemv, ttft, eval, train, recurrence, allreduce, serve, speculate, prefill, gemvrows, muon)"); return 2;
}
return 0;

int Arg(string name, int def) { int i = argv.IndexOf(name); return i >= 0 ? int.Parse(argv[i + 1]) : def; }
string ArgS(string name, string def) { int i = argv.IndexOf(name); return i >= 0 ? argv[i + 1] : def; }
int[] Ints(string name, string def) => ArgS(name, def).Split(',').Select(int.Parse).ToArray();

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

/// <summary>
/// Batch-1 matrix–vector products of the stories110M shapes: libtorch's F.linear (MKL / oneDNN) against Recur's
/// Gemv kernel, as GB/s of weights read, next to the read bandwidth of a plain reduction.
/// </summary>
void GemvSuite()
{
    using var _ = no_grad();
    double bw = ReadBandwidth();
    Console.WriteLine($"read bandwidth (sum of 1 GiB) {bw:0.0} GB/s");
    // --rows 1,4,16: input rows per product (several rows: Recur's tiled kernel against F.linear's GEMM); --dims 288 for
    // the stories15M shapes; --dtypes fp32.
    var rowCounts = ArgS("--rows", "1").Split(',').Select(int.Parse).ToArray();
    int dim = Arg("--dims", 768);
    var dtypes = ArgS("--dtypes", "fp32,bf16").Split(',').Select(d => d == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32).ToArray();
    Console.WriteLine("| out × in | dtype | rows | F.linear GB/s | Gemv GB/s | Gemv ÷ F.linear | Gemv ÷ read bandwidth |");
    Console.WriteLine("|---|---|---|---|---|---|---|");
    foreach (var (o, i) in new[] { (dim, dim), (dim * 8 / 3, dim), (dim, dim * 8 / 3), (3 * dim, dim), (dim * 16 / 3, dim), (32000, dim) })
        foreach (var dt in dtypes)
        foreach (int nRows in rowCounts)
        {
            using var scope = NewDisposeScope();
            // Distinct matrices, cycled, ~400 MB in all so the weights come from memory, not cache.
            long matBytes = (long)o * i * (dt == ScalarType.Float32 ? 4 : 2);
            int count = (int)Math.Max(4, 400_000_000 / matBytes);
            var ws = Enumerable.Range(0, count).Select(_ => randn(o, i).to(dt)).ToArray();
            var x = randn(1, nRows, i).to(dt);
            double bytes = (double)matBytes * count;
            // Interleaved rounds, best of each: the host is shared and its bandwidth drifts.
            double tLib = double.MaxValue, tOurs = double.MaxValue;
            for (int round = 0; round < 3; round++)
            {
                tLib = Math.Min(tLib, Time(() => { foreach (var w in ws) nn.functional.linear(x, w).Dispose(); }, 3));
                tOurs = Math.Min(tOurs, Time(() => { foreach (var w in ws) Gemv.Apply(x, w).Dispose(); }, 3));
            }
            double gLib = bytes / tLib / 1e9, gOurs = bytes / tOurs / 1e9;
            Console.WriteLine($"| {o} × {i} | {(dt == ScalarType.Float32 ? "fp32" : "bf16")} | {nRows} | {gLib:0.0} | {gOurs:0.0} | {gOurs / gLib:0.00} | {gOurs / bw:0.00} |");
        }
}

void Decode()
{
    using var _ = no_grad();
    double bw = ReadBandwidth();
    // --matmul 0 skips the matmul peaks (a 2048² bf16 matmul takes seconds on a host without AVX-512 BF16).
    bool matmul = Arg("--matmul", 1) != 0;
    double peak32 = matmul ? MatmulPeak(ScalarType.Float32) : double.NaN, peak16 = matmul ? MatmulPeak(ScalarType.BFloat16) : double.NaN;
    Console.WriteLine($"machine: read bandwidth {bw:0.0} GB/s; matmul peak fp32 {peak32:0} GFLOP/s, bf16 {peak16:0} GFLOP/s");
    Console.WriteLine();
    // --peer: llama2.c's run.c on the same fp32 weights, one run beside each Recur round (its own "achieved tok/s",
    // timed from its second token, 144 positions like Recur's 16 + 128), reported as the median and Recur ÷ it.
    string peer = ArgS("--peer", "");
    var peerDir = peer.Length > 0 ? Directory.CreateTempSubdirectory("recur-decode-peer-").FullName : "";
    if (peer.Length > 0) WritePeerTokenizer(Path.Combine(peerDir, "tokenizer.bin"), 32000);
    int nRounds = Arg("--rounds", 3);
    string peerHeader = peer.Length > 0 ? " llama2.c fp32 tok/s (median) | Recur ÷ llama2.c |" : "";
    Console.WriteLine($"| shape | dtype | prefill 512 tok/s | prefill GFLOP/s | ÷ matmul peak | decode tok/s | read GB/s | bound tok/s | ÷ bound (median round) | ÷ bound, each round |{peerHeader}");
    Console.WriteLine($"|---|---|---|---|---|---|---|---|---|---|{(peer.Length > 0 ? "---|---|" : "")}");
    foreach (var name in shapes)
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var cfg = Presets.Get(name) with { MaxPositionEmbeddings = 1024 };
            manual_seed(0);
            using var m = new DecoderModel(cfg);
            using (no_grad()) foreach (var p in m.parameters()) p.normal_(0, 0.02);
            string peerBin = Path.Combine(peerDir, $"{name}.bin");
            if (peer.Length > 0 && dt == ScalarType.Float32) WriteLlama2c(m, peerBin); // the same weights, before any cast
            var peerTps = new List<double>();
            m.to(dt); m.ComputeDType = dt; m.eval();
            long nParams = m.parameters().Sum(p => p.numel());
            long embed = m.model.embed_tokens.weight!.numel();
            // Per decoded token every matrix is read once; the embedding is a row lookup unless tied to the head.
            long readParams = nParams - (cfg.TieWordEmbeddings ? 0 : embed);
            int elem = dt == ScalarType.Float32 ? 4 : 2;

            // Prefill: 512-token prompt, logits for the last position only (as generation does).
            // --prefill 0 skips it (a 512-token bf16 prefill takes minutes on a host without AVX-512 BF16); its columns read NaN.
            var prompt = randint(0, cfg.VocabSize, [1, 512], dtype: ScalarType.Int64);
            double tPre = Arg("--prefill", 1) == 0 ? double.NaN
                : Time(() => { using var c = new KvCache(m.CacheSlots, 512); using var l = m.Forward(prompt, cache: c, lastOnly: true); }, 3);
            double flopsPerTok = 2.0 * (nParams - embed) + 4.0 * cfg.NumHiddenLayers * 256 * cfg.NumAttentionHeads * cfg.HeadDimension; // matmuls + attention at mean length 256
            double preTps = 512 / tPre;
            double preGf = preTps * flopsPerTok / 1e9;
            // Decode: 128 greedy tokens after a 16-token prompt, through the real generation loop.
            int[] p16 = Enumerable.Range(1, 16).ToArray();
            int n = 128;
            var opts = new GenerationOptions(n);
            // The host's bandwidth drifts (here between ~45 and ~78 GB/s, sometimes within seconds): three rounds, each
            // a decode with the bandwidth measured right before and after it and the higher value taken (the stricter
            // bound); the round with the median ratio is reported, every round's ratio printed.
            Generation.Generate(m, [p16], opts); // warm-up
            var rounds = new List<(double Tps, double Bw, double Bound, double Ratio)>();
            for (int round = 0; round < nRounds; round++)
            {
                if (peer.Length > 0) peerTps.Add(PeerDecode(peer, peerBin, Path.Combine(peerDir, "tokenizer.bin"), 144, threads));
                double bwNear = ReadBandwidth();
                var sw = Stopwatch.StartNew();
                Generation.Generate(m, [p16], opts);
                double tps = n / sw.Elapsed.TotalSeconds;
                bwNear = Math.Max(bwNear, ReadBandwidth());
                double b = bwNear * 1e9 / (readParams * (double)elem);
                rounds.Add((tps, bwNear, b, tps / b));
            }
            var (decTps, bwMed, bound, _) = rounds.OrderBy(r => r.Ratio).ElementAt(nRounds / 2);
            double peak = dt == ScalarType.Float32 ? peak32 : peak16;
            string peerCells = "";
            if (peer.Length > 0)
            {
                double pm = peerTps.OrderBy(x => x).ElementAt(nRounds / 2), rm = rounds.Select(r => r.Tps).OrderBy(x => x).ElementAt(nRounds / 2);
                peerCells = $" {pm:0.0} ({string.Join(" ", peerTps.Select(x => x.ToString("0")))}) | {rm / pm:0.00} (Recur rounds {string.Join(" ", rounds.Select(r => r.Tps.ToString("0")))}) |";
            }
            Console.WriteLine($"| {name} | {(dt == ScalarType.Float32 ? "fp32" : "bf16")} | {preTps:0} | {preGf:0} | {preGf / peak:0.00} | {decTps:0.0} | {bwMed:0.0} | {bound:0.0} | {decTps / bound:0.00} | {string.Join(" ", rounds.Select(r => r.Ratio.ToString("0.00")))} |{peerCells}");
        }
    if (peerDir.Length > 0) Directory.Delete(peerDir, recursive: true);
}

/// <summary>llama2.c's own decode rate ("achieved tok/s", from its second token on) for a greedy run of <paramref name="steps"/> positions.</summary>
static double PeerDecode(string peer, string bin, string tokenizer, int steps, int threads)
{
    var psi = new ProcessStartInfo(peer) { RedirectStandardError = true, RedirectStandardOutput = true };
    foreach (var a in new[] { bin, "-z", tokenizer, "-n", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "-i", "O", "-t", "0" }) psi.ArgumentList.Add(a);
    psi.Environment["OMP_NUM_THREADS"] = threads.ToString(System.Globalization.CultureInfo.InvariantCulture);
    using var p = Process.Start(psi)!;
    var stdout = p.StandardOutput.ReadToEndAsync();
    string err = p.StandardError.ReadToEnd();
    p.WaitForExit();
    _ = stdout.Result;
    var line = err.Split('\n').FirstOrDefault(l => l.StartsWith("achieved tok/s:", StringComparison.Ordinal))
        ?? throw new InvalidOperationException($"{peer} printed no rate (exit {p.ExitCode}): {err}");
    return double.Parse(line["achieved tok/s:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>
/// Evaluation throughput on a stories15M-shaped recurrent model (random weights, shape 2,2,2, the Llama 2
/// tokenizer it was trained with): GSM8K problems per minute (1-shot paper prompts, greedy, a short budget so
/// that every row runs to it) and multiple-choice items per second (4 choices per item), each batched and one
/// at a time on the same inputs, at T = 1 and 4.
/// </summary>
void Eval()
{
    string shared = ArgS("--shared", Path.Combine(AppContext.BaseDirectory, "../../../../../../../shared"));
    string gsm8k = ArgS("--gsm8k", Path.Combine(shared, "data/gsm8k/test.jsonl"));
    string train = ArgS("--gsm8k-train", Path.Combine(shared, "data/gsm8k/train.jsonl"));
    string tokPath = ArgS("--tokenizer", Path.Combine(shared, "tokenizers/llama2-sentencepiece"));
    int problems = Arg("--problems", 64), maxNew = Arg("--max-new", 32), items = Arg("--items", 64), batch = Arg("--batch", 32);
    Console.WriteLine($"data {Path.GetFullPath(gsm8k)}; tokenizer {Path.GetFullPath(tokPath)}; {problems} problems × {maxNew} new tokens; {items} items × 4 choices; batch {batch}");

    using var tok = TokenizerLoader.Load(tokPath);
    // The stories15M context (256) is shorter than a 1-shot GSM8K prompt; RoPE needs no change for 1024.
    var cfg = Presets.Stories15M with { MaxPositionEmbeddings = 1024 };
    manual_seed(0);
    RecurrentModel m;
    using (var b = new DecoderModel(cfg))
    {
        using (no_grad()) foreach (var p in b.parameters()) p.normal_(0, 0.02);
        b.eval();
        m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(6, 2, 2, 2) });
    }
    using var _m = m;
    TokenizerLoader.CheckFitsModel(tok, m.VocabSize, tokPath);

    var task = Gsm8kTask.Create(Gsm8kVariant.CotSean, new GenerationTaskOptions(MaxNewTokens: maxNew), train);
    var docs = Gsm8kTask.LoadDocs(gsm8k, new TaskLoadOptions(Limit: problems)).Docs;
    var prompts = docs.Select(d => task.BuildPrompt(d.Question)).ToList();
    Console.WriteLine($"prompt tokens: mean {prompts.Average(p => PromptEncoding.EncodePrompt(tok, p).Length):0}, max {prompts.Max(p => PromptEncoding.EncodePrompt(tok, p).Length)}");
    // Multiple choice shaped like HellaSwag/ARC (a ~60-token context, four short endings): each question with the
    // first reasoning line of its own answer and of the next three problems' as the choices.
    var all = Gsm8kTask.LoadDocs(gsm8k, new TaskLoadOptions(Limit: items + 3)).Docs;
    string Ending(Gsm8kDoc d) => " " + d.Answer.Split('\n')[0].Trim();
    var mcRequests = Enumerable.Range(0, Math.Min(items, all.Count - 3))
        .SelectMany(i => Enumerable.Range(0, 4).Select(k => ("Question: " + all[i].Question + "\nAnswer:", Ending(all[i + k]))))
        .ToList();
    int mcItems = mcRequests.Count / 4;

    // --single 0 skips the one-at-a-time runs, --mc 0 the multiple-choice rows (both unchanged by decode work).
    bool single = Arg("--single", 1) != 0, mc = Arg("--mc", 1) != 0;
    Console.WriteLine();
    Console.WriteLine("| task | T | batch | items | seconds | rate | batched ÷ single | answers (SHA-256 of the texts, first 12 hex) | CPU s |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
    foreach (int t in new[] { 1, 4 })
    {
        string digest = "";
        double cpu = 0;
        double Gen(int bs)
        {
            var at = m.At(Recurrence.Fixed(t, new TorchSharp.torch.Generator(0)));
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            var outs = new ModelGenerator(at, tok, bs).Generate(prompts, Gsm8kTask.CotStopSequences, maxNew);
            double secs = sw.Elapsed.TotalSeconds;
            // CPU time (user + system, all threads) moves far less than wall time when the host is oversubscribed.
            cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
            // Same problems, same answers: a digest of every generated text, compared across builds and batch sizes.
            digest = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join("\u0001", outs))))[..12].ToLowerInvariant();
            return secs;
        }
        double Mc(int bs)
        {
            var at = m.At(Recurrence.Fixed(t, new TorchSharp.torch.Generator(0)));
            var sw = Stopwatch.StartNew();
            new ModelLogLikelihood(at, tok, bs).Score(mcRequests);
            return sw.Elapsed.TotalSeconds;
        }
        Gen(batch); // warm-up
        double gb = Gen(batch);
        string batchedDigest = digest;
        double batchedCpu = cpu;
        double g1 = single ? Gen(1) : double.NaN;
        Console.WriteLine($"| gsm8k problems/min | {t} | {batch} | {prompts.Count} | {gb:0.0} | {prompts.Count / gb * 60:0.0} | {(single ? $"{g1 / gb:0.00}" : "")} | {batchedDigest} | {batchedCpu:0.0} |");
        if (single) Console.WriteLine($"| gsm8k problems/min | {t} | 1 | {prompts.Count} | {g1:0.0} | {prompts.Count / g1 * 60:0.0} | | {digest} | {cpu:0.0} |");
        if (!mc) continue;
        double mb = Mc(batch), m1 = single ? Mc(1) : double.NaN;
        Console.WriteLine($"| multiple choice items/s | {t} | {batch} | {mcItems} | {mb:0.0} | {mcItems / mb:0.0} | {(single ? $"{m1 / mb:0.00}" : "")} | | |");
        if (single) Console.WriteLine($"| multiple choice items/s | {t} | 1 | {mcItems} | {m1:0.0} | {mcItems / m1:0.0} | | | |");
    }
}

/// <summary>
/// One training step (forward, backward, AdamW) of a (2,4,2) recurrent model of the stories15M shape at
/// seq 256, T = 4 iterations with gradients — the same model and step as bench/peers/train_step.py.
/// Also a TinyLlama-shaped (4,8,4) step at seq 1024, batch 1 (--tinyllama), with the paper's Muon + AdamW;
/// --recompute turns on activation checkpointing through the recurrence.
/// </summary>
void Train()
{
    int batch = Arg("--batch", 4), seq = Arg("--seq", 256), steps = Arg("--steps", 5), t = Arg("--recurrence", 4);
    bool tiny = argv.Contains("--tinyllama"), recompute = argv.Contains("--recompute");
    var baseCfg = tiny ? Presets.TinyLlama11B : Presets.Stories15M with { MaxPositionEmbeddings = 1024 };
    var shape = tiny ? (4, 8, 4) : (2, 4, 2);
    if (tiny) { batch = 1; seq = 1024; steps = Arg("--steps", 2); }
    var opts = new Recur.Checkpoints.RetrofitOptions { Layers = new Recur.Checkpoints.LayerMap([], [], []) };
    var rc = Recur.Checkpoints.Retrofit.ConfigFor(baseCfg, opts) with
    {
        NLayers = shape.Item1 + shape.Item2 + shape.Item3, NLayersInPrelude = shape.Item1, NLayersInRecurrentBlock = shape.Item2, NLayersInCoda = shape.Item3,
        InitValues = new InitValues { Std = 0 },
    };
    long perTok = Recur.Training.Flops.PerToken(rc.ToBlockConfig().ParamsPerLayer, shape, t);
    foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        if (argv.Contains("--bf16-only") && dt == ScalarType.Float32) continue;
        if (argv.Contains("--fp32-only") && dt == ScalarType.BFloat16) continue;
        manual_seed(0);
        using var m = Recur.Training.TrainRun.RandomRecurrent(rc, 0);
        m.ComputeDType = dt;
        m.train();
        m.RecomputeIterations = recompute;
        var named = m.named_parameters().Select(p => (p.name, p.parameter)).ToList();
        // The PyTorch peer steps AdamW on everything; the TinyLlama step uses the paper's Muon + AdamW split.
        var split = Recur.Training.ParamGroups.Split(named, adamWOnly: !tiny);
        var opts2 = new List<Recur.Training.IOptimizer> { new Recur.Training.AdamW(split.AdamW, new Recur.Training.AdamWOptions(1e-4)) };
        if (split.Muon.Count > 0) opts2.Add(new Recur.Training.Muon(split.Muon, new Recur.Training.MuonOptions(1e-3, 1e-4, 0.95)));
        var ids = randint(0, rc.VocabSize, [batch, seq + 1], dtype: ScalarType.Int64);
        var x = ids.narrow(1, 0, seq); var y = ids.narrow(1, 1, seq);
        var optTimes = new List<double>(); // per step, the first being Time's warm-up
        var phases = new List<(double Fwd, double Loss, double Bwd)>();
        void Step()
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            var logits = m.Forward(x, 0, t);
            double f = sw.Elapsed.TotalSeconds;
            var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), y.reshape(-1));
            double l = sw.Elapsed.TotalSeconds;
            loss.backward();
            double bw = sw.Elapsed.TotalSeconds;
            foreach (var o in opts2) { o.Step(); o.ZeroGrad(); }
            optTimes.Add(sw.Elapsed.TotalSeconds - bw);
            phases.Add((f, l - f, bw - l));
        }
        double sec = Time(Step, steps);
        double optSec = optTimes.Skip(1).Average();
        double tok = batch * seq / sec;
        foreach (var o in opts2) o.Dispose();
        Console.WriteLine($"recur {(dt == ScalarType.Float32 ? "fp32" : "bf16")}{(tiny ? " tinyllama(4,8,4) seq 1024 batch 1, Muon + AdamW" : "")}{(recompute ? ", recurrence recomputed" : "")}: {sec:0.000} s/step (forward {phases.Skip(1).Average(p => p.Fwd):0.000}, loss {phases.Skip(1).Average(p => p.Loss):0.000}, backward {phases.Skip(1).Average(p => p.Bwd):0.000}, optimizer {optSec:0.000} s), {tok:0} tok/s, " +
            $"{tok * perTok / 1e9:0.0} GFLOP/s (METHOD §6 count), peak RSS {System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1e9:0.00} GB");
    }
    Console.WriteLine($"recur matmul 1024: fp32 {MatmulPeak(ScalarType.Float32, 1024):0} GFLOP/s, bf16 {MatmulPeak(ScalarType.BFloat16, 1024):0} GFLOP/s");
}

/// <summary>Decode tokens/s against T for a TinyLlama-shaped (4,8,4) random model (bf16, batch 1, 128-token prompt).</summary>
void RecurrenceDecode()
{
    using var _ = no_grad();
    var opts = new Recur.Checkpoints.RetrofitOptions { Layers = new Recur.Checkpoints.LayerMap([], [], []) };
    var rc = Recur.Checkpoints.Retrofit.ConfigFor(Presets.TinyLlama11B, opts) with { NLayers = 16, NLayersInPrelude = 4, NLayersInRecurrentBlock = 8, NLayersInCoda = 4 };
    var ts = ArgS("--recurrences", "1,2,4,8,16,32").Split(',').Select(int.Parse).ToArray();
    int n = Arg("--tokens", 16);
    using var m = Recur.Training.TrainRun.RandomRecurrent(rc, 0);
    m.to(ScalarType.BFloat16); m.ComputeDType = ScalarType.BFloat16; m.eval();
    int[] prompt = Enumerable.Range(1, 128).ToArray();
    Console.WriteLine("| T | depth p+r·T+c | decode tok/s | ms/token | ms/token ÷ depth | KV cache MB/token |");
    Console.WriteLine("|---|---|---|---|---|---|");
    var xs = new List<double>(); var ys = new List<double>();
    foreach (var t in ts)
    {
        var mt = m.At(Recurrence.Fixed(t, new Generator(1)));
        Generation.Generate(mt, [prompt], new GenerationOptions(2)); // warm-up
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var outs = Generation.Generate(mt, [prompt], new GenerationOptions(n + 1));
        double total = sw.Elapsed.TotalSeconds;
        sw.Restart();
        Generation.Generate(mt, [prompt], new GenerationOptions(1));
        double prefill = sw.Elapsed.TotalSeconds;
        double perTok = (total - prefill) / n;
        int depth = rc.EffectiveDepth(t);
        xs.Add(depth); ys.Add(perTok * 1000);
        double kv = 2.0 * depth * rc.KvHeads * rc.HeadDimension * 2 / 1e6;
        Console.WriteLine($"| {t} | {depth} | {1 / perTok:0.00} | {perTok * 1000:0.0} | {perTok * 1000 / depth:0.00} | {kv:0.000} |");
    }
    // Least-squares line ms/token = a + b·depth: linear growth means a small intercept and a steady slope.
    double mx = xs.Average(), my = ys.Average();
    double b = xs.Zip(ys, (x, y) => (x - mx) * (y - my)).Sum() / xs.Sum(x => (x - mx) * (x - mx));
    double a0 = my - b * mx;
    double r2 = 1 - xs.Zip(ys, (x, y) => Math.Pow(y - (a0 + b * x), 2)).Sum() / ys.Sum(y => Math.Pow(y - my, 2));
    Console.WriteLine($"fit: ms/token = {a0:0.00} + {b:0.000}·depth (R² = {r2:0.0000}); peak RSS {System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1e9:0.00} GB");
}

/// <summary>
/// MpiGradientSync's all-reduce bandwidth (buffer bytes / seconds per call) under mpiexec: the bare MPI_Allreduce
/// through Recur's binding, AllReduceMean on one tensor (adds the division), and AllReduceMean on 1 MiB tensors
/// (adds the copies into and out of the 25 MiB buckets); each as a ratio to the C program's bandwidth.
/// </summary>
void AllReduce()
{
    var mpi = Mpi.TryLoad(out var why) ?? throw new InvalidOperationException(why);
    using var sync = MpiGradientSync.Start(mpi, TimeSpan.FromMinutes(10));
    bool lead = sync.Rank == 0;
    int reps = Arg("--reps", 5);
    var sizes = ArgS("--sizes-mb", "16,64,256").Split(',').Select(int.Parse).ToList();
    var reference = ArgS("--reference", "").Split(',', StringSplitOptions.RemoveEmptyEntries)
        .Select(kv => kv.Split(':')).ToDictionary(kv => int.Parse(kv[0]), kv => double.Parse(kv[1], System.Globalization.CultureInfo.InvariantCulture));
    double Seconds(Action a)
    {
        a(); // warm-up: first touch of the buffers, bucket plan
        sync.Barrier();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) a();
        sync.Barrier();
        return sw.Elapsed.TotalSeconds / reps;
    }
    string Ratio(double gbs, int mib) => reference.TryGetValue(mib, out var c) ? $"{gbs / c:0.00}" : "–";
    if (lead)
    {
        Console.WriteLine($"{sync.WorldSize} ranks, {sync.Library}, {reps} calls per size");
        Console.WriteLine();
        Console.WriteLine("| MiB | C MPI_Allreduce GB/s | Recur MPI_Allreduce GB/s | ÷ C | AllReduceMean, one tensor GB/s | ÷ C | AllReduceMean, 1 MiB tensors GB/s | ÷ C |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
    }
    foreach (int mib in sizes)
    {
        using var scope = NewDisposeScope();
        long bytes = (long)mib << 20;
        var one = ones(bytes / 4);
        var many = Enumerable.Range(0, mib).Select(_ => ones(1 << 18)).ToList();
        double raw = bytes / Seconds(() => sync.ReduceInPlace(one)) / 1e9;
        one.fill_(1);
        double mean1 = bytes / Seconds(() => sync.AllReduceMean([one])) / 1e9;
        double meanN = bytes / Seconds(() => sync.AllReduceMean(many)) / 1e9;
        if (lead)
            Console.WriteLine($"| {mib} | {(reference.TryGetValue(mib, out var c) ? $"{c:0.00}" : "–")} | {raw:0.00} | {Ratio(raw, mib)} | {mean1:0.00} | {Ratio(mean1, mib)} | {meanN:0.00} | {Ratio(meanN, mib)} |");
    }
}

/// <summary>
/// The OpenAI-compatible server under load from a bounded client on loopback: a stories15M-shaped random model
/// with the Llama-2 SentencePiece tokenizer (../shared), /v1/completions, greedy, fixed max_tokens; 1, 4 and 16
/// concurrent clients; requests/s, generated tokens/s, p50/p99 latency.
/// </summary>
void Serve()
{
    int perClient = Arg("--requests", 8), maxTokens = Arg("--max-tokens", 32);
    var tokPath = ArgS("--tokenizer", Path.Combine(AppContext.BaseDirectory, "../../../../../../../shared/tokenizers/llama2-sentencepiece"));
    using var tok = Recur.Tokenization.TokenizerLoader.Load(tokPath);
    manual_seed(0);
    using var m = new DecoderModel(Presets.Stories15M with { MaxPositionEmbeddings = 512 });
    using (no_grad()) foreach (var p in m.parameters()) p.normal_(0, 0.02);
    m.eval();
    var runner = new Recur.Serving.ModelRunner(m, tok);
    using var server = new Recur.Serving.OpenAiServer(runner, ChatTemplate.Plain, new Recur.Serving.ServerOptions { Port = 0, MaxBatch = Arg("--max-batch", 8), MaxQueue = 256 });
    server.Start();
    using var http = new System.Net.Http.HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(5) };
    string[] prompts = ["Once upon a time", "The little dog", "One day a girl named Lily", "The sun was shining and"];
    Console.WriteLine($"server {server.BaseAddress}; stories15M-shaped random model; max_tokens {maxTokens}; {perClient} requests per client; max batch {Arg("--max-batch", 8)}");
    Console.WriteLine();
    Console.WriteLine("| clients | requests | seconds | requests/s | generated tokens/s | p50 latency ms | p99 latency ms |");
    Console.WriteLine("|---|---|---|---|---|---|---|");
    foreach (int clients in ArgS("--clients", "1,4,16").Split(',').Select(int.Parse))
    {
        var latencies = new System.Collections.Concurrent.ConcurrentBag<double>();
        long tokens = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var tasks = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (int i = 0; i < perClient; i++)
            {
                string body = System.Text.Json.JsonSerializer.Serialize(new { model = "recur", prompt = prompts[(c + i) % prompts.Length], max_tokens = maxTokens, temperature = 0 });
                var t0 = System.Diagnostics.Stopwatch.StartNew();
                using var resp = await http.PostAsync("/v1/completions", new System.Net.Http.StringContent(body, System.Text.Encoding.UTF8, "application/json"));
                var text = await resp.Content.ReadAsStringAsync();
                latencies.Add(t0.Elapsed.TotalMilliseconds);
                if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"HTTP {(int)resp.StatusCode}: {text}");
                var usage = System.Text.Json.JsonDocument.Parse(text).RootElement.GetProperty("usage");
                Interlocked.Add(ref tokens, usage.GetProperty("completion_tokens").GetInt64());
            }
        })).ToArray();
        Task.WaitAll(tasks);
        double secs = sw.Elapsed.TotalSeconds;
        var sorted = latencies.OrderBy(x => x).ToArray();
        double P(double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
        Console.WriteLine($"| {clients} | {sorted.Length} | {secs:0.0} | {sorted.Length / secs:0.00} | {tokens / secs:0.0} | {P(0.5):0} | {P(0.99):0} |");
    }
    server.StopAsync(TimeSpan.FromSeconds(5)).Wait();
}

/// <summary>
/// One generated token from a fresh process, warm page cache: wall time and peak RSS (GNU time's %M) of `recur
/// generate` on random stories-shaped models saved as fp32 and bf16 folders and loaded in their stored dtype, against
/// llama2.c's run.c (built by the user, --peer) on the same fp32 weights in its own format, interleaved round by
/// round; medians. CPU time (user + system) is reported next to wall time: on a loaded host it moves far less. The
/// llama2.c file holds the HF weights unpermuted, which is fine for timing and nothing else.
/// </summary>
void Ttft()
{
    string peer = ArgS("--peer", "");
    if (!File.Exists(peer)) { Console.Error.WriteLine("error: --peer: path to a built llama2.c run.c binary (gcc -Ofast -march=native -fopenmp run.c -o run -lm)"); Environment.Exit(2); }
    string recur = ArgS("--recur", Path.Combine(AppContext.BaseDirectory, "../../../../../../src/Recur.Cli/bin/Release/net10.0/linux-x64/Recur.Cli"));
    string baseline = ArgS("--baseline", "");
    string shared = ArgS("--shared", Path.Combine(AppContext.BaseDirectory, "../../../../../../../shared"));
    string tokPath = ArgS("--tokenizer", Path.Combine(shared, "tokenizers/llama2-sentencepiece/tokenizer.model"));
    int rounds = Arg("--rounds", 5);
    if (!File.Exists("/usr/bin/time")) { Console.Error.WriteLine("error: /usr/bin/time (GNU time) is needed for peak RSS"); Environment.Exit(2); }
    var dir = Directory.CreateTempSubdirectory("recur-ttft-").FullName;
    string peerTok = Path.Combine(dir, "tokenizer.bin");
    WritePeerTokenizer(peerTok, 32000);
    var recurs = new List<(string Label, string Bin)> { ("Recur", Path.GetFullPath(recur)) };
    if (baseline.Length > 0) recurs.Insert(0, ("Recur baseline", Path.GetFullPath(baseline)));
    Console.WriteLine($"recur {recurs[^1].Bin}{(baseline.Length > 0 ? $"; baseline {recurs[0].Bin}" : "")}; peer {Path.GetFullPath(peer)}; tokenizer {tokPath}; {rounds} rounds; models in {dir}");
    string ompThreads = threads.ToString(System.Globalization.CultureInfo.InvariantCulture);
    Console.WriteLine();
    Console.WriteLine("| shape | program | file MB | median wall s | ÷ llama2.c | median CPU s | ÷ llama2.c | median peak RSS MB | RSS ÷ file | each round wall s |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
    foreach (var name in shapes)
    {
        var cfg = Presets.Get(name);
        string bin = Path.Combine(dir, $"{name}.bin");
        using (var m = new DecoderModel(cfg))
        {
            using (no_grad())
                foreach (var (pn, p) in m.named_parameters()) { if (pn.Contains("norm")) p.fill_(1); else p.normal_(0, 0.02); }
            foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
                HfCheckpoint.Save(m, Path.Combine(dir, $"{name}-{HfCheckpoint.DTypeName(dt)}"), dt);
            WriteLlama2c(m, bin);
        }
        var runs = new List<(string Label, string File, string Exe, string[] Args, string? TorchFree)>
        {
            ("llama2.c fp32", bin, peer, [bin, "-z", peerTok, "-n", "3", "-i", "O", "-t", "0"], null),
        };
        // --torch-path 1: the measured build also with RECUR_TORCH_FREE=0 (its libtorch path, where the libtorch-free one applies).
        var variants = recurs.Select(r => (r.Label, r.Bin, TorchFree: (string?)null)).ToList();
        if (Arg("--torch-path", 0) != 0) variants.Add(($"{recurs[^1].Label} via libtorch", recurs[^1].Bin, "0"));
        foreach (var (label, exe, torchFree) in variants)
            foreach (var dt in new[] { "float32", "bfloat16" })
            {
                string folder = Path.Combine(dir, $"{name}-{dt}");
                runs.Add(($"{label} {(dt == "float32" ? "fp32" : "bf16")}", Path.Combine(folder, "model.safetensors"), exe,
                    ["generate", "--model", folder, "--tokenizer", tokPath, "--prompt", "O", "--max-new-tokens", "1", "--output-ids",
                     "--threads", ompThreads, "--dtype", dt == "float32" ? "fp32" : "bf16"], torchFree));
            }
        var results = runs.Select(_ => new List<(double S, double Mb, double Cpu)>()).ToArray();
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < runs.Count; i++)
            {
                foreach (var f in runs.Select(r => r.File).Distinct()) File.ReadAllBytes(f); // warm page cache
                results[i].Add(TimeProcess(runs[i].Exe, runs[i].Args, ompThreads, runs[i].TorchFree));
            }
        double Median(IEnumerable<double> xs) { var a = xs.OrderBy(x => x).ToArray(); return a[a.Length / 2]; }
        double peerS = Median(results[0].Select(r => r.S)), peerCpu = Median(results[0].Select(r => r.Cpu));
        for (int i = 0; i < runs.Count; i++)
        {
            double mb = new FileInfo(runs[i].File).Length / 1e6, s = Median(results[i].Select(r => r.S)), rss = Median(results[i].Select(r => r.Mb));
            double cpu = Median(results[i].Select(r => r.Cpu));
            Console.WriteLine($"| {name} | {runs[i].Label} | {mb:0} | {s:0.00} | {s / peerS:0.0} | {cpu:0.00} | {cpu / peerCpu:0.0} | {rss:0} | {rss / mb:0.00} | {string.Join(" ", results[i].Select(r => r.S.ToString("0.00")))} |");
        }
    }
    Directory.Delete(dir, recursive: true);
}

static (double Seconds, double PeakMb, double CpuSeconds) TimeProcess(string exe, string[] args, string ompThreads, string? torchFree = null)
{
    var psi = new ProcessStartInfo("/usr/bin/time") { RedirectStandardError = true, RedirectStandardOutput = true };
    psi.ArgumentList.Add("-f");
    psi.ArgumentList.Add("ttft %e %M %U %S");
    psi.ArgumentList.Add(exe);
    foreach (var a in args) psi.ArgumentList.Add(a);
    psi.Environment["OMP_NUM_THREADS"] = ompThreads;
    if (torchFree is not null) psi.Environment["RECUR_TORCH_FREE"] = torchFree;
    using var p = Process.Start(psi)!;
    var stdout = p.StandardOutput.ReadToEndAsync();
    string err = p.StandardError.ReadToEnd();
    p.WaitForExit();
    _ = stdout.Result;
    var line = err.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault(l => l.StartsWith("ttft ", StringComparison.Ordinal))
        ?? throw new InvalidOperationException($"{exe} failed (exit {p.ExitCode}): {err}");
    var parts = line.Split(' ');
    double D(int i) => double.Parse(parts[i], System.Globalization.CultureInfo.InvariantCulture);
    return (D(1), D(2) * 1024 / 1e6, D(3) + D(4));
}

/// <summary>llama2.c's legacy (version 0) layout, the order Checkpoints/Llama2c.cs reads; weights as the model holds them.</summary>
static void WriteLlama2c(DecoderModel m, string path)
{
    var c = m.Config;
    using var fs = File.Create(path);
    using var w = new BinaryWriter(fs);
    foreach (int v in new[] { c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KvHeads, c.TieWordEmbeddings ? c.VocabSize : -c.VocabSize, c.MaxPositionEmbeddings })
        w.Write(v);
    void T(Tensor t) { using var f = t.detach().to(ScalarType.Float32).contiguous(); w.Write(f.bytes); }
    var layers = m.model.layers;
    T(m.model.embed_tokens.weight!);
    foreach (var l in layers) T(l.input_layernorm!.weight);
    foreach (var l in layers) T(l.self_attn.q_proj.weight!);
    foreach (var l in layers) T(l.self_attn.k_proj.weight!);
    foreach (var l in layers) T(l.self_attn.v_proj.weight!);
    foreach (var l in layers) T(l.self_attn.o_proj.weight!);
    foreach (var l in layers) T(l.post_attention_layernorm.weight);
    foreach (var l in layers) T(l.mlp.gate_proj.weight!);
    foreach (var l in layers) T(l.mlp.down_proj.weight!);
    foreach (var l in layers) T(l.mlp.up_proj.weight!);
    T(m.model.norm.weight);
    using (var freqs = zeros(c.MaxPositionEmbeddings, c.HeadDimension)) T(freqs); // freq_cis real + imag (unused by run.c)
    if (!c.TieWordEmbeddings) T(m.lm_head!.weight!);
}

/// <summary>A llama2.c tokenizer.bin of <paramref name="vocab"/> tokens: the 3 specials, the 256 bytes, then filler pieces.</summary>
static void WritePeerTokenizer(string path, int vocab)
{
    var pieces = new List<byte[]> { "<unk>"u8.ToArray(), "<s>"u8.ToArray(), "</s>"u8.ToArray() };
    for (int b = 0; b < 256; b++) pieces.Add([(byte)b]);
    while (pieces.Count < vocab) pieces.Add(System.Text.Encoding.ASCII.GetBytes($"t{pieces.Count}"));
    using var w = new BinaryWriter(File.Create(path));
    w.Write(pieces.Max(p => p.Length));
    for (int i = 0; i < pieces.Count; i++) { w.Write(-(float)i); w.Write(pieces[i].Length); w.Write(pieces[i]); }
}
