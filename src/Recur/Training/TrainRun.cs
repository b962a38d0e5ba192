using System.Text.Json;
using Recur.Checkpoints;
using Recur.Data;
using Recur.Model;
using Recur.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>
/// Everything around the loop: the output folder, the model the recipe asks for (a base model, a retrofit
/// of it, or a random initialisation), the tokenizer, the data per phase, metrics.jsonl and resume.
/// </summary>
public static class TrainRun
{
    public const string RecipeFile = "recipe.json";
    public const string MetricsFile = "metrics.jsonl";
    public const string FinalModelDir = "model";

    /// <summary>The text a synthetic problem becomes for training: the question, a newline, the answer.</summary>
    public static string SynthText(SynthMathProblem p) => $"Question: {p.Question}\nAnswer: {p.Answer}";

    public static ITokenizer LoadTokenizer(TrainRecipe r)
    {
        string model = r.Model.StartsWith("preset:", StringComparison.Ordinal) ? r.Model : Recur.Hub.HubCache.Resolve(r.Model);
        if (!r.Model.StartsWith("preset:", StringComparison.Ordinal)) ModelLoader.Detect(model); // "model path not found" before anything else
        if (r.Tokenizer == "char") return new CharTokenizerAdapter(new CharTokenizer(), "char");
        if (r.Tokenizer is { } path) return TokenizerLoader.Load(path);
        if (Directory.Exists(model) && TokenizerLoader.TryResolve(model) is not null) return TokenizerLoader.Load(model);
        throw new RecurUserException($"recipe: no tokenizer: set \"tokenizer\" (a path, or \"char\") — the model '{r.Model}' has none");
    }

    /// <summary>
    /// Checks what a run will read before its folder is created: every phase's data sources must be valid and
    /// exist, so that a typo fails now instead of leaving a folder with only recipe.json behind.
    /// </summary>
    public static void CheckData(TrainRecipe r, string source = "recipe")
    {
        for (int i = 0; i < r.PhaseCount; i++)
        {
            var p = r.Phase(i, source);
            if (p.SynthData is not null) continue;
            string where = r.PhaseCount > 1 ? $"{source} data (phase {i + 1})" : $"{source} data";
            new DataSpec { Sources = p.Data, SeqLen = p.SeqLen, ValFraction = p.ValFraction > 0 ? p.ValFraction : null, Seed = p.Seed }.Validate(where);
            foreach (var s in p.Data)
                if (!File.Exists(s.Path) && !Directory.Exists(s.Path))
                    throw new RecurUserException($"{where}: data source '{s.Path}' does not exist; expected a file or a folder of data files");
        }
    }

    /// <summary>
    /// Removes what interrupted saves leave in a run folder: <c>.scratch-*</c> folders of optimizer state,
    /// temporary checkpoint folders (<c>checkpoints/.…tmp-*</c>, <c>.…old-*</c>), atomic-write temporaries
    /// (<c>.metrics.jsonl.tmp-*</c>, <c>.recipe.json.tmp-*</c>) and half-exported model folders. Only names Recur
    /// itself writes are touched. Returns the names removed.
    /// </summary>
    public static List<string> CleanLeftovers(string outDir)
    {
        var removed = new List<string>();
        if (!Directory.Exists(outDir)) return removed;
        static bool Temporary(string name) => name.StartsWith('.') && (name.Contains(".tmp-", StringComparison.Ordinal) || name.Contains(".old-", StringComparison.Ordinal));
        void Remove(string path)
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true); else File.Delete(path);
            removed.Add(Path.GetRelativePath(outDir, path));
        }
        foreach (var d in Directory.GetDirectories(outDir, ".scratch-*")) Remove(d);
        foreach (var d in Directory.GetDirectories(outDir, FinalModelDir + ".tmp-*")) Remove(d);
        foreach (var f in Directory.GetFileSystemEntries(outDir, ".*").Where(e => Temporary(Path.GetFileName(e)))) Remove(f);
        var checkpoints = Path.Combine(outDir, "checkpoints");
        if (Directory.Exists(checkpoints))
            foreach (var e in Directory.GetFileSystemEntries(checkpoints, ".*").Where(e => Temporary(Path.GetFileName(e)))) Remove(e);
        return removed;
    }

    /// <summary>
    /// True when a run folder holds nothing a restart would lose: no complete checkpoint and no exported model,
    /// only recipe.json, metrics.jsonl and leftovers of interrupted saves (a run stopped before its first save).
    /// </summary>
    public static bool NothingToResume(string outDir)
    {
        if (!Directory.Exists(outDir)) return true;
        if (RunCheckpoints.Latest(outDir) is not null) return false;
        foreach (var e in Directory.EnumerateFileSystemEntries(outDir))
        {
            string n = Path.GetFileName(e);
            if (n is RecipeFile or MetricsFile || n.StartsWith('.')) continue;
            if (n == "checkpoints" && Directory.Exists(e) && Directory.EnumerateFileSystemEntries(e).All(x => Path.GetFileName(x).StartsWith('.'))) continue;
            return false;
        }
        return true;
    }

    /// <summary>Builds the model a fresh run starts from, with fp32 parameters on <paramref name="device"/>.</summary>
    public static ICausalLM BuildModel(TrainRecipe r, ITokenizer tok, Device device, Action<string>? log = null)
    {
        DecoderModel? b = null;
        RecurrentModel? rec = null;
        if (r.Model.StartsWith("preset:", StringComparison.Ordinal))
        {
            var cfg = Presets.Get(r.Model["preset:".Length..]) with { VocabSize = tok.VocabSize, BosTokenId = tok.BosId, EosTokenId = tok.EosId is { } e ? [e] : null };
            b = RandomDecoder(cfg, r.Seed);
            log?.Invoke($"model: random {r.Model} ({Count(b)} parameters)");
        }
        else
        {
            var m = ModelLoader.Load(r.Model, ScalarType.Float32, CPU, s => log?.Invoke($"note: {s}"));
            TokenizerLoader.CheckFitsModel(tok, m.VocabSize, tok.SourcePath);
            if (m is RecurrentModel rm) rec = rm; else b = (DecoderModel)m;
            log?.Invoke($"model: {r.Model} ({(rec is null ? "non-recurrent" : "recurrent")}, {Count((nn.Module)m)} parameters)");
        }
        if (r.Recurrent && b is not null)
        {
            var rf = r.Retrofit!;
            int layers = b.Config.NumHiddenLayers;
            (int, int, int)? shape = rf.Shape is { } s ? Retrofit.ParseShape(s) : null;
            var map = rf.Layers is { } l ? LayerMap.Parse(l, layers, shape) : LayerMap.Default(layers, shape!.Value.Item1, shape.Value.Item2, shape.Value.Item3);
            var opts = new RetrofitOptions
            {
                Layers = map, AdapterInit = rf.AdapterInit, Seed = r.Seed,
                StateStd = rf.StateStd, MeanRecurrence = r.TrainRecurrence, MeanBackpropDepth = r.BackpropDepth,
            };
            if (rf.Init == RetrofitInit.Random)
            {
                rec = RandomRecurrent(Retrofit.ConfigFor(b.Config, opts).Validate("retrofit"), r.Seed);
                log?.Invoke($"retrofit: random initialisation of shape {rec.Config.Shape} (the paper's init ablation)");
            }
            else
            {
                rec = Retrofit.FromDecoder(b, opts);
                double diff = Retrofit.EquivalenceCheck(b, rec, map);
                log?.Invoke($"retrofit: shape {rec.Config.Shape} from layers prelude {string.Join(",", map.Prelude)} core {string.Join(",", map.Core)} coda {string.Join(",", map.Coda)}; equivalence check max |Δlogit| {diff:G3}");
                if (diff > 1e-3) throw new InvalidOperationException($"retrofit equivalence check failed (max |Δlogit| {diff:G3})");
            }
            b.Dispose();
            b = null;
        }
        ICausalLM model = (ICausalLM?)rec ?? b!;
        // Rows longer than the context would be trained at positions the model never has at inference, and a
        // huge seq_len (1e8 on a 256-position model) would only grow the batch until memory runs out.
        if (r.SeqLen > model.MaxPositions)
        {
            model.Dispose();
            throw new RecurUserException($"recipe: seq_len {r.SeqLen} exceeds the model's context of {model.MaxPositions} positions (max_position_embeddings)");
        }
        ((nn.Module)model).to(device);
        return model;
    }

    static string Count(nn.Module m) => $"{m.parameters().Sum(p => p.numel()) / 1e6:0.###}M";

    /// <summary>HF-style random init: N(0, 0.02) matrices and embeddings, unit norms.</summary>
    public static DecoderModel RandomDecoder(ModelConfig cfg, long seed)
    {
        var m = new DecoderModel(cfg);
        InitRandom(m, seed);
        return m;
    }

    public static RecurrentModel RandomRecurrent(RecurConfig cfg, long seed)
    {
        var m = new RecurrentModel(cfg);
        InitRandom(m, seed);
        return m;
    }

    static void InitRandom(nn.Module m, long seed)
    {
        using var gen = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in m.named_parameters())
        {
            // Holds randn's result and the product until copy_ has read them (Model/Scalars.cs: tensors outside a scope).
            using var scope = NewDisposeScope();
            if (name.Contains("norm") || name.Contains("ln_f")) p.fill_(Scalars.One);
            else p.copy_(Scalars.Mul(randn(p.shape, generator: gen), 0.02));
        }
    }

    /// <summary>Tokenised documents for a phase's training and validation data.</summary>
    public static (List<int[]> Train, List<int[]> Validation) Documents(TrainRecipe r, ITokenizer tok)
    {
        if (r.SynthData is { } sd)
        {
            var (lo, hi) = TrainRecipe.SynthSteps(sd) ?? throw new RecurUserException($"recipe: 'synth_data.steps' must be a range A-B (got '{sd.Steps}')");
            var splits = SynthMath.Generate(new SynthMathOptions(sd.Count, lo, hi, sd.Direct, sd.Seed, sd.MaxValue, Math.Max(r.ValFraction, 0.02), 0.0));
            return (splits.Train.Select(p => Doc(tok, SynthText(p))).ToList(), splits.Validation.Select(p => Doc(tok, SynthText(p))).ToList());
        }
        throw new RecurUserException("recipe: file data sources need the data pipeline (recur data prepare); use synth_data for now");
    }

    /// <summary>BOS (when the tokenizer adds one) + tokens + EOS, as METHOD §5 packs documents.</summary>
    public static int[] Doc(ITokenizer tok, string text)
    {
        var ids = tok.Encode(text.Trim(), addSpecialTokens: true).ToList();
        if (tok.EosId is { } eos && (ids.Count == 0 || ids[^1] != eos)) ids.Add(eos);
        return [.. ids];
    }

    public static string DefaultDataCache =>
        Environment.GetEnvironmentVariable("RECUR_DATA_CACHE") is { Length: > 0 } env ? env
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "recur", "data");

    /// <summary>
    /// Trainer data hooks: file sources are tokenised once into the cache and packed (Recur.Data); synthetic
    /// data is generated and packed in memory. <paramref name="progress"/> reports tokenisation. With
    /// <paramref name="world"/> ranks, rank <paramref name="rank"/> reads its slice of every global batch of
    /// micro_batch × world rows, for training and validation alike.
    /// </summary>
    public static Func<TrainRecipe, int, (IBatchSource, Func<IBatchSource>?)> DataHooks(ITokenizer tok, IProgress<(long Done, long Total)>? progress = null,
        int rank = 0, int world = 1)
    {
        int pad = tok.EosId ?? 0;
        return (r, phase) =>
        {
            if (r.SynthData is null)
            {
                var spec = new DataSpec { Sources = r.Data, SeqLen = r.SeqLen, ValFraction = r.ValFraction > 0 ? r.ValFraction : null, Seed = r.Seed + phase };
                spec.Validate("recipe data");
                var ds = PackedDataset.Open(spec, tok, r.DataCache ?? DefaultDataCache, progress);
                Func<IBatchSource>? packedVal = ds.ValRows > 0 ? () => new PackedValidation(ds, r.MicroBatch * world, rank, world) : null;
                return (new PackedBatchSource(ds, r.MicroBatch * world, rank, world), packedVal);
            }
            var (train, val) = Documents(r, tok);
            Func<IBatchSource>? valFactory = val.Count > 0 ? () => new InMemoryRows(val, r.SeqLen, r.MicroBatch, 0, pad, rank, world) : null;
            return (new InMemoryRows(train, r.SeqLen, r.MicroBatch, r.Seed + phase, pad, rank, world), valFactory);
        };
    }

    /// <summary>Appends a metrics line; on resume, lines past the checkpoint are dropped first so the file reads as one run.</summary>
    public static void AppendMetrics(string outDir, StepMetrics m) =>
        File.AppendAllText(Path.Combine(outDir, MetricsFile), JsonSerializer.Serialize(m, RunCheckpoints.Json).Replace("\n", "").Replace("  ", "") + "\n");

    public static void TruncateMetrics(string outDir, long globalStep)
    {
        var p = Path.Combine(outDir, MetricsFile);
        if (!File.Exists(p)) return;
        var keep = File.ReadAllLines(p).Where(l =>
        {
            try { return JsonDocument.Parse(l).RootElement.GetProperty("global_step").GetInt64() <= globalStep; }
            catch (JsonException) { return false; }
        }).ToList();
        AtomicFile.WriteAllText(p, keep.Count > 0 ? string.Join("\n", keep) + "\n" : "");
    }

    public static List<StepMetrics> ReadMetrics(string outDir)
    {
        var p = Path.Combine(outDir, MetricsFile);
        if (!File.Exists(p)) return [];
        return File.ReadAllLines(p).Where(l => l.Length > 0).Select(l => JsonSerializer.Deserialize<StepMetrics>(l, RunCheckpoints.Json)!).ToList();
    }

    /// <summary>The final model folder: the last checkpoint without optimizer and trainer state (replaces <paramref name="dst"/>).</summary>
    public static void ExportModel(string checkpoint, string dst)
    {
        var tmp = dst + $".tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(tmp);
        foreach (var f in Directory.GetFiles(checkpoint))
        {
            var name = Path.GetFileName(f);
            if (name is RunCheckpoints.OptimizerFile or RunCheckpoints.StateFile) continue;
            File.Copy(f, Path.Combine(tmp, name));
        }
        if (Directory.Exists(dst)) Directory.Delete(dst, true);
        Directory.Move(tmp, dst);
    }

    /// <summary>Tokenizer files to ship with every exported model folder.</summary>
    public static Dictionary<string, string> TokenizerFiles(ITokenizer tok, string scratchDir)
    {
        var files = new Dictionary<string, string>();
        if (tok is CharTokenizerAdapter ct)
        {
            Directory.CreateDirectory(scratchDir);
            var p = Path.Combine(scratchDir, CharTokenizerAdapter.FileName);
            ct.Inner.Save(p);
            files[CharTokenizerAdapter.FileName] = p;
            return files;
        }
        var dir = Path.GetDirectoryName(tok.SourcePath);
        if (dir is null) return files;
        foreach (var f in new[] { "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" })
            if (File.Exists(Path.Combine(dir, f))) files[f] = Path.Combine(dir, f);
        return files;
    }
}
