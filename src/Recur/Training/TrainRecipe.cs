using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Recur.Checkpoints;

namespace Recur.Training;

/// <summary>How to make the model a run trains (METHOD §2.2, §2.8).</summary>
public sealed record RetrofitSpec
{
    /// <summary>p,r,c, e.g. "4,8,4"; null keeps the model as it is (a recurrent folder, or a non-recurrent baseline).</summary>
    [JsonPropertyName("shape")] public string? Shape { get; init; }
    /// <summary>Explicit source layers, e.g. "prelude=0-3,core=10-17,coda=18-21".</summary>
    [JsonPropertyName("layers")] public string? Layers { get; init; }
    [JsonPropertyName("adapter_init"), JsonConverter(typeof(AdapterInitConverter))] public AdapterInit AdapterInit { get; init; } = AdapterInit.Default;
    [JsonPropertyName("state_std")] public double StateStd { get; init; } = Model.InitValues.HuginnStd;
    /// <summary>pretrained (copy the base weights) or random (the paper's initialisation ablation).</summary>
    [JsonPropertyName("init"), JsonConverter(typeof(RetrofitInitConverter))] public RetrofitInit Init { get; init; } = RetrofitInit.Pretrained;
}

/// <summary>Synthetic arithmetic data the run generates itself (for smoke tests and the demo).</summary>
public sealed record SynthDataSpec
{
    [JsonPropertyName("count")] public int Count { get; init; } = 2000;
    [JsonPropertyName("steps")] public string Steps { get; init; } = "1-4";
    [JsonPropertyName("max_value")] public int MaxValue { get; init; } = 99;
    [JsonPropertyName("direct")] public bool Direct { get; init; }
    [JsonPropertyName("seed")] public ulong Seed { get; init; } = 1;
}

/// <summary>
/// A training run as a file (STYLE §3). Defaults are the paper's (METHOD §3–4): 1-sqrt curriculum over 75 %,
/// backprop depth 8, Muon 1e-3 + AdamW 5e-5, WSD with warm-up 0.0025 and cool-down 0.6 to 0.001×, clip 1.0,
/// sequence length 1024, seed 74. Phases (the healing recipe, METHOD §5) override fields and restart the schedules.
/// </summary>
public sealed record TrainRecipe
{
    [JsonPropertyName("name")] public string? Name { get; init; }
    [JsonPropertyName("description")] public string? Description { get; init; }
    /// <summary>Base model folder (HF, recurrent or llama2.c), or "preset:NAME" for a random model of a named shape.</summary>
    [JsonPropertyName("model")] public string Model { get; init; } = "";
    /// <summary>Tokenizer path; "char" for the built-in character tokenizer; null: the model folder's.</summary>
    [JsonPropertyName("tokenizer")] public string? Tokenizer { get; init; }
    [JsonPropertyName("retrofit")] public RetrofitSpec? Retrofit { get; init; }

    /// <summary>Weighted sources (Recur.Data: text, JSONL, Parquet, gsm8k), tokenised once into <see cref="DataCache"/>.</summary>
    [JsonPropertyName("data")] public Recur.Data.DataSourceSpec[] Data { get; init; } = [];
    /// <summary>Folder of token caches; default $RECUR_DATA_CACHE or ~/.cache/recur/data.</summary>
    [JsonPropertyName("data_cache")] public string? DataCache { get; init; }
    [JsonPropertyName("synth_data")] public SynthDataSpec? SynthData { get; init; }
    [JsonPropertyName("val_fraction")] public double ValFraction { get; init; } = 0.01;

    [JsonPropertyName("steps")] public long Steps { get; init; } = 50_000;
    [JsonPropertyName("micro_batch")] public int MicroBatch { get; init; } = 8;
    [JsonPropertyName("accumulation")] public int Accumulation { get; init; } = 1;
    [JsonPropertyName("seq_len")] public int SeqLen { get; init; } = 1024;
    [JsonPropertyName("seed")] public long Seed { get; init; } = 74;

    /// <summary>R_max, the final mean of the depth curriculum (the "train recurrence").</summary>
    [JsonPropertyName("train_recurrence")] public int TrainRecurrence { get; init; } = 4;
    /// <summary>linear, 1-sqrt or constant (METHOD §3.3).</summary>
    [JsonPropertyName("curriculum"), JsonConverter(typeof(CurriculumKindConverter))] public CurriculumKind Curriculum { get; init; } = CurriculumKind.OneMinusSqrt;
    [JsonPropertyName("curriculum_fraction")] public double CurriculumFraction { get; init; } = 0.75;
    [JsonPropertyName("backprop_depth")] public int BackpropDepth { get; init; } = 8;
    /// <summary>"n,k": every micro-batch runs n no-grad then k grad iterations, instead of sampling.</summary>
    [JsonPropertyName("fixed_depth")] public FixedDepth? FixedDepth { get; init; }
    /// <summary>
    /// Activation checkpointing through the recurrence: grad iterations keep only their inputs and are recomputed in
    /// backward (same gradients, activation memory of one iteration instead of k, one extra core forward each).
    /// </summary>
    [JsonPropertyName("recompute_recurrence")] public bool RecomputeRecurrence { get; init; }

    /// <summary>muon (Muon + auxiliary AdamW, the paper's) or adamw (AdamW only, the ablation).</summary>
    [JsonPropertyName("optimizer"), JsonConverter(typeof(OptimizerKindConverter))] public OptimizerKind Optimizer { get; init; } = OptimizerKind.Muon;
    [JsonPropertyName("muon_lr")] public double MuonLr { get; init; } = 1e-3;
    [JsonPropertyName("adamw_lr")] public double AdamWLr { get; init; } = 5e-5;
    [JsonPropertyName("weight_decay")] public double WeightDecay { get; init; } = 1e-4;
    [JsonPropertyName("muon_momentum")] public double MuonMomentum { get; init; } = 0.95;
    [JsonPropertyName("adamw_eps")] public double AdamWEps { get; init; } = 1e-10;
    [JsonPropertyName("warmup")] public double Warmup { get; init; } = 0.0025;
    [JsonPropertyName("cooldown")] public double Cooldown { get; init; } = 0.6;
    [JsonPropertyName("min_lr_ratio")] public double MinLrRatio { get; init; } = 0.001;
    [JsonPropertyName("clip")] public double Clip { get; init; } = 1.0;

    /// <summary>auto (bf16 where the hardware supports it, else fp32), fp32 or bf16: the compute dtype; weights stay fp32.</summary>
    [JsonPropertyName("dtype")] public string DType { get; init; } = "auto";
    [JsonPropertyName("device")] public string Device { get; init; } = "cpu";
    [JsonPropertyName("threads")] public int Threads { get; init; }

    [JsonPropertyName("log_every")] public int LogEvery { get; init; } = 1;
    [JsonPropertyName("val_every")] public int ValEvery { get; init; } = 500;
    [JsonPropertyName("val_batches")] public int ValBatches { get; init; } = 8;
    [JsonPropertyName("val_recurrences")] public int[] ValRecurrences { get; init; } = [1, 4, 8];
    [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; } = 1000;
    [JsonPropertyName("keep_checkpoints")] public int KeepCheckpoints { get; init; } = 3;
    /// <summary>Peak FLOP/s for MFU; 0 measures a matmul at start-up.</summary>
    [JsonPropertyName("peak_flops")] public double PeakFlops { get; init; }

    /// <summary>Later phases: each object overrides fields of the recipe and restarts the LR schedule and curriculum.</summary>
    [JsonPropertyName("phases")] public JsonObject[]? Phases { get; init; }

    public bool Recurrent => Retrofit?.Shape is not null || Retrofit?.Layers is not null;

    /// <summary>The schedule of the mean recurrence over this recipe's steps (METHOD §3.3).</summary>
    public RecurrenceCurriculum MakeCurriculum() => new(Curriculum, TrainRecurrence, Steps, CurriculumFraction);

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Loads a recipe file and applies <c>key=value</c> overrides (dotted keys reach into objects, e.g. retrofit.shape=2,4,2).</summary>
    public static TrainRecipe Load(string path, IEnumerable<string>? sets = null)
    {
        if (!File.Exists(path)) throw new RecurUserException($"{path}: recipe not found");
        JsonObject obj;
        try { obj = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw new RecurUserException($"{path}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        foreach (var s in sets ?? []) ApplySet(obj, s);
        return FromJson(obj, path);
    }

    public static TrainRecipe FromJson(JsonObject obj, string source)
    {
        TrainRecipe r;
        try { r = obj.Deserialize<TrainRecipe>(Json) ?? throw new RecurUserException($"{source}: empty recipe"); }
        catch (RecipeValueException e) { throw new RecurUserException($"{source}: '{e.Path?.TrimStart('$', '.')}' {e.Expected}"); }
        catch (JsonException e)
        {
            string msg = e.Message.Split('\n')[0];
            if (msg.Contains("could not be mapped", StringComparison.Ordinal))
            {
                var m = System.Text.RegularExpressions.Regex.Match(msg, "'([^']+)'");
                throw new RecurUserException($"{source}: unknown key {(m.Success ? $"'{m.Groups[1].Value}'" : "")} at {e.Path}");
            }
            throw new RecurUserException($"{source}: key '{e.Path?.TrimStart('$', '.')}' has the wrong type ({msg})");
        }
        return r.Validate(source);
    }

    /// <summary>Applies one <c>key=value</c>; the value is parsed as JSON when it can be, else taken as a string.</summary>
    public static void ApplySet(JsonObject obj, string set)
    {
        int eq = set.IndexOf('=');
        if (eq <= 0) throw RecurUserException.About($"override '{set}' must be key=value", "override");
        var keys = set[..eq].Split('.');
        JsonNode? value;
        string raw = set[(eq + 1)..];
        try { value = JsonNode.Parse(raw); }
        catch (JsonException) { value = JsonValue.Create(raw); }
        var target = obj;
        foreach (var k in keys[..^1])
        {
            if (target[k] is not JsonObject next) { next = new JsonObject(); target[k] = next; }
            target = next;
        }
        target[keys[^1]] = value;
    }

    public TrainRecipe Validate(string source)
    {
        void Check(bool ok, string key, string expected) { if (!ok) throw new RecurUserException($"{source}: '{key}' {expected}"); }
        Check(!string.IsNullOrWhiteSpace(Model), "model", "must name a model folder or preset:NAME");
        Check(Data.Length > 0 || SynthData is not null, "data", "must list at least one source (or give synth_data)");
        foreach (var d in Data) { Check(!string.IsNullOrWhiteSpace(d.Path), "data[].path", "must be a file or folder path"); Check(d.Weight > 0, "data[].weight", "must be > 0"); }
        Check(Steps >= 1, "steps", "must be ≥ 1");
        Check(MicroBatch >= 1, "micro_batch", "must be ≥ 1");
        Check(Accumulation >= 1, "accumulation", "must be ≥ 1");
        Check(SeqLen >= 2, "seq_len", "must be ≥ 2");
        Check(TrainRecurrence >= 1, "train_recurrence", "must be ≥ 1");
        Check(CurriculumFraction is >= 0 and <= 1, "curriculum_fraction", "must be in [0, 1]");
        Check(BackpropDepth >= 1, "backprop_depth", "must be ≥ 1");
        Check(MuonLr > 0 && AdamWLr > 0, "muon_lr/adamw_lr", "must be > 0");
        Check(WeightDecay >= 0, "weight_decay", "must be ≥ 0");
        Check(Warmup >= 0 && Cooldown >= 0 && Warmup + Cooldown <= 1, "warmup/cooldown", "must be ≥ 0 and sum to at most 1");
        Check(MinLrRatio is >= 0 and <= 1, "min_lr_ratio", "must be in [0, 1]");
        Check(Clip > 0, "clip", "must be > 0");
        Check(DType is "auto" or "fp32" or "bf16", "dtype", "must be auto, fp32 or bf16");
        Check(ValFraction is >= 0 and < 1, "val_fraction", "must be in [0, 1)");
        Check(LogEvery >= 1 && ValEvery >= 0 && CheckpointEvery >= 0 && KeepCheckpoints >= 1, "log_every/val_every/checkpoint_every/keep_checkpoints", "must be ≥ 1, ≥ 0, ≥ 0, ≥ 1");
        Check(ValRecurrences.All(t => t >= 1), "val_recurrences", "must all be ≥ 1");
        if (SynthData is { } sd)
        {
            // The generator's own rules, named by the recipe's keys (its errors name SynthMathOptions properties).
            Check(SynthSteps(sd) is not null, "synth_data.steps", $"must be a range A-B of whole numbers with 1 ≤ A ≤ B ≤ {Recur.Data.SynthMathOptions.StepsLimit} (e.g. 1-4)");
            Check(sd.Count >= 1, "synth_data.count", "must be ≥ 1");
            Check(sd.MaxValue is >= Recur.Data.SynthMathOptions.SmallestMaxValue and <= Recur.Data.SynthMathOptions.LargestMaxValue, "synth_data.max_value",
                $"must be in {Recur.Data.SynthMathOptions.SmallestMaxValue}..{Recur.Data.SynthMathOptions.LargestMaxValue}");
        }
        if (Retrofit is { } rf)
        {
            Check(rf.StateStd >= 0, "retrofit.state_std", "must be ≥ 0");
            // The recipe's key, not the API's Shape or the CLI's --shape: the value came from this file.
            if (rf.Shape is { } shape)
                try { _ = Checkpoints.Retrofit.ParseShape(shape); }
                catch (RecurUserException) { Check(false, "retrofit.shape", $"must be three integers p,r,c with p ≥ 0, r ≥ 1, c ≥ 0 (e.g. 4,8,4; got '{shape}')"); }
        }
        // The lr schedule's own rule (whole warm-up and cool-down steps must fit in the phase), and every later phase
        // with its overrides: checked here, so that a recipe the trainer would refuse leaves no run folder behind.
        try { _ = new WsdSchedule(Steps, Warmup, Cooldown, MinLrRatio); }
        catch (RecurUserException e) { throw new RecurUserException($"{source}: 'steps/warmup/cooldown': {e.Message}"); }
        for (int i = 1; i < PhaseCount; i++) Phase(i, source);
        return this;
    }

    /// <summary>The recipe of phase <paramref name="i"/> (0 = the recipe itself): its overrides applied, phases removed.</summary>
    public TrainRecipe Phase(int i, string source)
    {
        if (i == 0) return this with { Phases = null };
        var baseObj = JsonSerializer.SerializeToNode(this with { Phases = null }, Json)!.AsObject();
        foreach (var (k, v) in Phases![i - 1]) baseObj[k] = v?.DeepClone();
        return FromJson(baseObj, $"{source} (phase {i + 1})");
    }

    public int PhaseCount => 1 + (Phases?.Length ?? 0);

    /// <summary>The problem lengths "A-B" of synthetic data as (A, B); null when the text is not such a range.</summary>
    public static (int Min, int Max)? SynthSteps(SynthDataSpec sd)
    {
        var parts = sd.Steps.Split('-', StringSplitOptions.TrimEntries);
        return parts.Length is 1 or 2 && int.TryParse(parts[0], out int lo) && int.TryParse(parts[^1], out int hi) && lo >= 1 && hi >= lo && hi <= Recur.Data.SynthMathOptions.StepsLimit ? (lo, hi) : null;
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);
}
