using System.CommandLine;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tokenization;
using static TorchSharp.torch;

namespace Recur.Cli;

static class RetrofitCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Pretrained Llama/OLMo-2 model folder (or llama2.c .bin)", Required = true };
        var shape = new Option<string?>("--shape") { Description = "p,r,c: prelude, recurrent block and coda layers [default: the paper's preset for the base model]" };
        var layers = new Option<string?>("--layers") { Description = "Explicit source layers, e.g. prelude=0-3,core=10-17,coda=18-21 [default: first p, then the last r + c]" };
        var adapterInit = new Option<string>("--adapter-init") { Description = "default (PyTorch Linear init, as the paper) or identity ([0 | I])", DefaultValueFactory = _ => "default" };
        adapterInit.AcceptOnlyFromAmong("default", "identity");
        var seed = new Option<long>("--seed") { Description = "Seed of the adapter initialisation", DefaultValueFactory = _ => 0 };
        var std = new Option<double>("--state-std") { Description = "σ of the initial state s0 (0: zeros)", DefaultValueFactory = _ => InitValues.HuginnStd };
        var meanRec = new Option<int>("--mean-recurrence") { Description = "Default test-time T written to the config", DefaultValueFactory = _ => 32 };
        var dtype = new Option<string?>("--save-dtype") { Description = "Stored dtype: fp32, bf16 or fp16 [default: the base model's]" };
        var output = new Option<string>("--out") { Description = "Output folder (Raven layout)", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace an existing output folder" };
        var cmd = new Command("retrofit", "Cut a pretrained model into prelude / recurrent block / coda, add the adapter, and save it in the paper's checkpoint format")
        {
            model, shape, layers, adapterInit, seed, std, meanRec, dtype, output, force,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string src = parse.GetValue(model)!, dst = parse.GetValue(output)!;
            if (Directory.Exists(dst) && !parse.GetValue(force)) throw new RecurUserException($"{dst}: output folder already exists (use --force to overwrite)");
            if (parse.GetValue(std) < 0) throw new RecurUserException($"--state-std must be ≥ 0 (got {parse.GetValue(std)})");
            if (parse.GetValue(meanRec) < 1) throw new RecurUserException($"--mean-recurrence must be ≥ 1 (got {parse.GetValue(meanRec)})");
            using var b = ModelLoader.LoadDecoder(src, ScalarType.Float32, CPU, s => Console.Error.WriteLine($"note: {s}"));
            int L = b.Config.NumHiddenLayers;
            (int, int, int)? want = parse.GetValue(shape) is { } s ? Retrofit.ParseShape(s) : null;
            LayerMap map;
            if (parse.GetValue(layers) is { } l) map = LayerMap.Parse(l, L, want);
            else
            {
                var (p, r, c) = want ?? Retrofit.PresetShape(b.Config)
                    ?? throw new RecurUserException($"{src}: no preset shape for a {L}-layer model; give --shape p,r,c");
                map = LayerMap.Default(L, p, r, c);
            }
            var opts = new RetrofitOptions
            {
                Layers = map,
                AdapterInit = parse.GetValue(adapterInit) == "identity" ? AdapterInit.Identity : AdapterInit.Default,
                Seed = parse.GetValue(seed), StateStd = parse.GetValue(std), MeanRecurrence = parse.GetValue(meanRec),
            };
            using var m = Retrofit.FromDecoder(b, opts);
            double diff = Retrofit.EquivalenceCheck(b, m, map);
            if (diff > 1e-4) throw new InvalidOperationException($"equivalence check failed: max |Δlogit| = {diff:G3} > 1e-4 (METHOD §2.8)");
            var extra = new Dictionary<string, string>();
            if (Directory.Exists(src))
                foreach (var f in new[] { "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", Recur.Tokenization.CharTokenizerAdapter.FileName })
                    if (File.Exists(Path.Combine(src, f))) extra[f] = Path.Combine(src, f);
            var storeType = parse.GetValue(dtype) is { } d ? HfCheckpoint.ParseDType(d) : HfCheckpoint.ParseDType(b.Config.TorchDType ?? "float32");
            RecurrentCheckpoint.Save(m, dst, storeType, parse.GetValue(force), extraFiles: extra);
            Console.WriteLine($"prelude ← layers {Ranges(map.Prelude)}; recurrent block ← {Ranges(map.Core)}; coda ← {Ranges(map.Coda)}; removed: {Ranges(Enumerable.Range(0, L).Except(map.Prelude).Except(map.Core).Except(map.Coda).ToArray())}");
            Console.WriteLine($"equivalence check (T = 1, s0 = 0, identity adapter vs. base without removed layers): max |Δlogit| = {diff:G3}");
            Console.WriteLine($"wrote {dst}: shape ({map.Prelude.Length},{map.Core.Length},{map.Coda.Length}), adapter {parse.GetValue(adapterInit)}, {HfCheckpoint.DTypeName(storeType)}{(extra.Count > 0 ? $", tokenizer files copied" : "")}");
            return 0;
        }));
        return cmd;
    }

    static string Ranges(int[] xs)
    {
        if (xs.Length == 0) return "none";
        var parts = new List<string>();
        int start = xs[0], prev = xs[0];
        foreach (var x in xs.Skip(1).Append(int.MinValue))
        {
            if (x == prev + 1) { prev = x; continue; }
            parts.Add(start == prev ? $"{start}" : $"{start}-{prev}");
            start = prev = x;
        }
        return string.Join(",", parts);
    }
}
