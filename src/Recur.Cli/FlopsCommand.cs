using System.CommandLine;
using System.Globalization;
using Recur.Model;
using Recur.Training;

namespace Recur.Cli;

/// <summary>
/// What <c>recur flops</c> prices: a base model, a (p, r, c) shape (null for the non-recurrent baseline), the
/// curriculum on the mean recurrence, and the run length. Built from flags today; a training recipe will produce
/// the same record (STYLE §3), so the computation and the printout do not depend on where the values came from.
/// </summary>
sealed record FlopsRequest(string BaseName, ModelConfig Base, (int P, int R, int C)? Shape, RecurrenceCurriculum? Curriculum, long Steps, long TokensPerStep, int BackpropDepth)
{
    public bool NonRecurrent => Shape is null;
}

/// <summary><c>recur flops</c>: training FLOPs of a retrofitted-recurrence run or its non-recurrent baseline (METHOD §6).</summary>
static class FlopsCommand
{
    /// <summary>The paper's shapes (METHOD §2.2).</summary>
    static (int P, int R, int C)? DefaultShape(string baseName) => baseName.ToLowerInvariant() switch
    {
        "tinyllama-1.1b" => (4, 8, 4),
        "llama-3.2-1b" or "olmo-2-1b" => (4, 6, 4),
        _ => null,
    };

    public static Command Create()
    {
        var baseModel = new Option<string?>("--base") { Description = "Base model: tinyllama-1.1b, llama-3.2-1b or olmo-2-1b (per-layer counts of METHOD §2.6)" };
        var recipe = new Option<string?>("--recipe") { Description = "Price a training recipe (every phase); flags below are then not used" };
        var sets = new Option<string[]>("--set") { Description = "Override a recipe field: key=value (repeatable)" };
        var shape = new Option<string?>("--shape") { Description = "Layers in prelude, recurrent block and coda, p,r,c [default: the paper's 4,8,4 for TinyLlama, 4,6,4 otherwise]" };
        var trainRecurrence = new Option<int?>("--train-recurrence") { Description = "R_max, the mean recurrence the curriculum reaches (required unless --non-recurrent)" };
        var steps = new Option<long>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 50_000 };
        var tokensPerStep = new Option<string>("--tokens-per-step") { Description = "Tokens per optimizer step, an integer or 2^k", DefaultValueFactory = _ => "1048576" };
        var curriculum = new Option<string>("--curriculum") { Description = "Curriculum on the mean recurrence: linear, 1-sqrt or constant", DefaultValueFactory = _ => "1-sqrt" };
        var fraction = new Option<double>("--curriculum-fraction") { Description = "Fraction of the steps the curriculum warms up over", DefaultValueFactory = _ => RecurrenceCurriculum.DefaultWarmupFraction };
        var backprop = new Option<int>("--backprop-depth") { Description = "Recurrences that carry gradients (k); the rest are forward only", DefaultValueFactory = _ => Flops.DefaultBackpropCap };
        var nonRecurrent = new Option<bool>("--non-recurrent") { Description = "Price the non-recurrent baseline: all of the base model's layers, 6·L·N_layer per token" };
        var cmd = new Command("flops", "Training FLOPs of a recurrent run (6·N1 + 2·N2 per token, METHOD §6) or of the non-recurrent baseline; the last line is the total")
        {
            baseModel, recipe, sets, shape, trainRecurrence, steps, tokensPerStep, curriculum, fraction, backprop, nonRecurrent,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            bool Given(Option o) => parse.GetResult(o) is { Implicit: false };
            if (parse.GetValue(recipe) is { } recipePath)
            {
                var used = new Option[] { shape, trainRecurrence, steps, tokensPerStep, curriculum, fraction, backprop, nonRecurrent }.Where(Given).Select(o => o.Name).ToList();
                if (used.Count > 0) throw new RecurUserException($"--recipe takes its values from the recipe; use --set instead of {string.Join(", ", used)}");
                var requests = FromRecipe(TrainRecipe.Load(recipePath, parse.GetValue(sets) ?? []), recipePath, parse.GetValue(baseModel));
                Int128 total = 0;
                for (int i = 0; i < requests.Count; i++)
                {
                    if (requests.Count > 1) Console.WriteLine($"— phase {i + 1}");
                    var e = Compute(requests[i]);
                    var sw = new StringWriter();
                    Print(requests[i], e, sw);
                    var lines = sw.ToString().TrimEnd('\n').Split('\n');
                    foreach (var l in lines[..^1]) Console.WriteLine(l);
                    total += e.Total;
                }
                if (requests.Count > 1) Console.WriteLine($"total         {Sci((double)total)} FLOPs (all phases)");
                Console.WriteLine(Sci((double)total));
                return 0;
            }
            string baseName = parse.GetValue(baseModel) ?? throw new RecurUserException("give --base NAME (or --recipe FILE)");
            var config = Presets.Get(baseName);
            long s = parse.GetValue(steps);
            if (s < 1) throw new RecurUserException($"--steps must be ≥ 1 (got {s})");
            long tokens = ParseTokens(parse.GetValue(tokensPerStep)!);

            FlopsRequest request;
            if (parse.GetValue(nonRecurrent))
            {
                var conflicting = new Option[] { shape, trainRecurrence, curriculum, fraction, backprop }.Where(Given).Select(o => o.Name).ToList();
                if (conflicting.Count > 0) throw new RecurUserException($"--non-recurrent prices the unmodified base model; {string.Join(", ", conflicting)} do not apply");
                request = new FlopsRequest(baseName, config, null, null, s, tokens, 0);
            }
            else
            {
                int rMax = parse.GetValue(trainRecurrence) ?? throw new RecurUserException("--train-recurrence is required (or pass --non-recurrent for the baseline)");
                if (rMax < 1) throw new RecurUserException($"--train-recurrence must be ≥ 1 (got {rMax})");
                int k = parse.GetValue(backprop);
                if (k < 1) throw new RecurUserException($"--backprop-depth must be ≥ 1 (got {k})");
                string? shapeText = parse.GetValue(shape);
                var pqc = shapeText is null
                    ? DefaultShape(baseName) ?? throw new RecurUserException($"--shape is required for base '{baseName}' (the paper's shapes are known for tinyllama-1.1b, llama-3.2-1b and olmo-2-1b)")
                    : Recur.Checkpoints.Retrofit.ParseShape(shapeText);
                if (pqc.P + pqc.R + pqc.C > config.NumHiddenLayers)
                    throw new RecurUserException($"--shape {pqc.P},{pqc.R},{pqc.C} needs {pqc.P + pqc.R + pqc.C} layers, but {baseName} has {config.NumHiddenLayers}");
                var kind = RecurrenceCurriculum.ParseKind(parse.GetValue(curriculum)!, "--curriculum");
                double f = parse.GetValue(fraction);
                if (!(f >= 0 && f <= 1)) throw new RecurUserException($"--curriculum-fraction must be in [0, 1] (got {f})");
                if (kind == CurriculumKind.Constant && Given(fraction)) throw new RecurUserException("--curriculum-fraction does not apply to --curriculum constant");
                request = new FlopsRequest(baseName, config, pqc, new RecurrenceCurriculum(kind, rMax, s, f), s, tokens, k);
            }
            Print(request, Compute(request), Console.Out);
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// One request per phase of a recipe. The base model's shape comes from the recipe's model (a preset, or a
    /// folder's config.json), or from --base when the model is not on this machine.
    /// </summary>
    public static List<FlopsRequest> FromRecipe(TrainRecipe recipe, string source, string? baseOverride)
    {
        string name;
        ModelConfig config;
        if (baseOverride is not null) { name = baseOverride; config = Presets.Get(baseOverride); }
        else if (recipe.Model.StartsWith("preset:", StringComparison.Ordinal)) { name = recipe.Model[7..]; config = Presets.Get(name); }
        else if (File.Exists(Path.Combine(recipe.Model, "config.json")) && !RecurConfig.IsRecurrentFolder(recipe.Model)) { name = recipe.Model; config = ModelConfig.Load(Path.Combine(recipe.Model, "config.json")); }
        else if (RecurConfig.IsRecurrentFolder(recipe.Model))
        {
            var rc = RecurConfig.Load(Path.Combine(recipe.Model, "config.json"));
            name = recipe.Model;
            config = rc.ToBlockConfig() with { NumHiddenLayers = rc.NLayers };
            recipe = recipe with { Retrofit = new RetrofitSpec { Shape = $"{rc.NLayersInPrelude},{rc.NLayersInRecurrentBlock},{rc.NLayersInCoda}" } };
        }
        else throw new RecurUserException($"{source}: model '{recipe.Model}' is not on this machine; give --base tinyllama-1.1b|llama-3.2-1b|olmo-2-1b to price it");
        var list = new List<FlopsRequest>();
        for (int i = 0; i < recipe.PhaseCount; i++)
        {
            var r = recipe.Phase(i, source);
            long tokens = (long)r.MicroBatch * r.Accumulation * r.SeqLen;
            if (!r.Recurrent) { list.Add(new FlopsRequest(name, config, null, null, r.Steps, tokens, 0)); continue; }
            var shape = r.Retrofit!.Shape is { } sh ? Recur.Checkpoints.Retrofit.ParseShape(sh)
                : Recur.Checkpoints.LayerMap.Parse(r.Retrofit.Layers!, config.NumHiddenLayers).Shape;
            list.Add(new FlopsRequest(name, config, shape, r.MakeCurriculum(), r.Steps, tokens, r.BackpropDepth));
        }
        return list;
    }

    public static FlopsEstimate Compute(FlopsRequest r) => r.Shape is { } shape
        ? Flops.Estimate(r.Base.ParamsPerLayer, shape, r.Curriculum!, r.TokensPerStep, r.BackpropDepth)
        : Flops.EstimateNonRecurrent(r.Base.ParamsPerLayer, r.Base.NumHiddenLayers, r.Steps, r.TokensPerStep);

    public static void Print(FlopsRequest r, FlopsEstimate e, TextWriter o)
    {
        long perLayer = r.Base.ParamsPerLayer;
        o.WriteLine($"base          {r.BaseName}: {r.Base.NumHiddenLayers} layers, {perLayer:N0} parameters per layer");
        o.WriteLine($"tokens        {r.TokensPerStep:N0} per step × {r.Steps:N0} steps = {Sci((double)r.TokensPerStep * r.Steps)}");
        if (r.Shape is { } s && r.Curriculum is { } c)
        {
            var (n1, n2) = Flops.Params(perLayer, s, c.MaxRecurrence, r.BackpropDepth);
            o.WriteLine($"shape         ({s.P},{s.R},{s.C}), train recurrence {c.MaxRecurrence}, backprop depth {r.BackpropDepth}");
            o.WriteLine($"curriculum    {c}");
            o.WriteLine($"per token     {Sci(e.PerTokenFinal)} FLOPs at mean recurrence {c.MaxRecurrence} (6·N1 + 2·N2; N1 = {n1:N0}, N2 = {n2:N0})");
            o.WriteLine($"total direct  {Sci((double)e.TotalDirect)} FLOPs (each step at its scheduled mean)");
            o.WriteLine($"total         {Sci((double)e.Total)} FLOPs (RR's histogram counting, as in the paper's plots)");
        }
        else
        {
            o.WriteLine($"per token     {Sci(e.PerTokenFinal)} FLOPs (non-recurrent: 6 × {r.Base.NumHiddenLayers} layers × {perLayer:N0})");
            o.WriteLine($"total         {Sci((double)e.Total)} FLOPs");
        }
        o.WriteLine(Sci((double)e.Total));
    }

    static string Sci(double v) => v.ToString("0.000e+00", CultureInfo.InvariantCulture);

    static long ParseTokens(string text)
    {
        text = text.Trim();
        long value;
        if (text.StartsWith("2^", StringComparison.Ordinal) && int.TryParse(text.AsSpan(2), NumberStyles.None, CultureInfo.InvariantCulture, out int k) && k is >= 0 and <= 62)
            value = 1L << k;
        else if (!long.TryParse(text, NumberStyles.AllowThousands, CultureInfo.InvariantCulture, out value))
            throw new RecurUserException($"--tokens-per-step '{text}' must be a positive integer or 2^k (e.g. 1048576 or 2^20)");
        if (value < 1) throw new RecurUserException($"--tokens-per-step must be ≥ 1 (got {text})");
        return value;
    }
}
