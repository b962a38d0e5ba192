using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Evaluation;
using Recur.Model;
using Recur.Serving;
using Recur.Tasks;
using Recur.Tokenization;
using Recur.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur;

/// <summary>How <see cref="RecurModel.Load"/> opens a model.</summary>
public sealed record RecurLoadOptions
{
    /// <summary><c>cpu</c> (default) or <c>cuda[:N]</c>; CUDA needs a build with <c>-p:TorchBackend=cuda</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Parameter and compute dtype: <c>fp32</c> (default) or <c>bf16</c>. Training needs fp32.</summary>
    public string DType { get; init; } = "fp32";

    /// <summary>Tokenizer file or folder; null: the model folder's <c>tokenizer.json</c>/<c>tokenizer.model</c>, if any.</summary>
    public string? Tokenizer { get; init; }

    /// <summary>Test-time recurrence T of a recurrent model; null: the config's <c>mean_recurrence</c>.</summary>
    public int? Recurrences { get; init; }

    /// <summary>Chat format: <c>auto</c> (recognise the tokenizer's <c>chat_template</c>), plain, llama3, llama3.1, chatml, llama2, mistral or huginn.</summary>
    public string ChatTemplate { get; init; } = "auto";

    /// <summary>Receives notes about the files (e.g. a guessed setting); null discards them.</summary>
    public Action<string>? Notice { get; init; }
}

/// <summary>Settings of one <see cref="RecurModel.Generate(string, GenerateOptions?, CancellationToken)"/> call.</summary>
public sealed record GenerateOptions
{
    /// <summary>Most tokens to generate.</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>Test-time recurrence T for this call (recurrent models only); null: <see cref="RecurModel.Recurrences"/>.</summary>
    public int? Recurrences { get; init; }

    /// <summary>Sampling temperature; 0 (default) is greedy decoding.</summary>
    public double Temperature { get; init; }

    /// <summary>Keep the k most likely tokens before sampling; 0 turns it off.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling mass; 1 turns it off.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampler and of the recurrent initial state s_0; the same seed and T give the same text.</summary>
    public long? Seed { get; init; }

    /// <summary>Text that ends the reply; the returned text stops before it.</summary>
    public IReadOnlyList<string>? StopSequences { get; init; }

    /// <summary>Whether the tokenizer adds its special tokens (BOS) to the prompt.</summary>
    public bool AddSpecialTokens { get; init; } = true;

    /// <summary>
    /// Self-speculative decoding for recurrent models (greedy only): draft tokens at fewer recurrences, verify them at T
    /// in one pass; the same tokens as plain decoding (docs/speculative.md). Null (default): plain decoding.
    /// </summary>
    public SpeculativeOptions? Speculate { get; init; }

    internal SamplingOptions Sampling() => new SamplingOptions(Temperature, TopK, TopP, Seed).Validate();
}

/// <summary>How <see cref="RecurModel.Retrofit"/> cuts a plain model into prelude, recurrent block and coda (METHOD §2.8).</summary>
public sealed record RecurRetrofitOptions
{
    /// <summary>"p,r,c" (e.g. "4,8,4"); null: the paper's preset for the base model's size, or the shape of <see cref="Layers"/>.</summary>
    public string? Shape { get; init; }

    /// <summary>Explicit source layers, e.g. "prelude=0-3,core=10-17,coda=18-21"; null: the first p, then the last r + c.</summary>
    public string? Layers { get; init; }

    /// <summary>Adapter initialisation: PyTorch's Linear init as in the paper (default), or identity ([0 | I]).</summary>
    public AdapterInit AdapterInit { get; init; } = AdapterInit.Default;

    /// <summary>Seed of the adapter initialisation.</summary>
    public long Seed { get; init; }

    /// <summary>σ of the initial state s_0 (0: zeros).</summary>
    public double StateStd { get; init; } = InitValues.HuginnStd;

    /// <summary>Default test-time T of the new model (its config's <c>mean_recurrence</c>).</summary>
    public int MeanRecurrence { get; init; } = 32;
}

/// <summary>Settings of <see cref="RecurModel.Evaluate"/>; the defaults are <c>recur eval</c>'s.</summary>
public sealed record EvaluateOptions
{
    /// <summary>Exemplars before each GSM8K/MATH question (the paper uses 1).</summary>
    public int Shots { get; init; } = 1;

    /// <summary>Training jsonl the exemplars come from; null: <c>train.jsonl</c> beside the data file.</summary>
    public string? FewshotPath { get; init; }

    /// <summary>Evaluate only the first N examples.</summary>
    public int? Limit { get; init; }

    /// <summary>Skip malformed data lines instead of failing.</summary>
    public bool SkipBadLines { get; init; }

    /// <summary>Prompts or log-likelihood rows per forward pass.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>
    /// Generation budget for GSM8K/MATH; null: <see cref="DefaultMaxNewTokens"/> capped at a quarter of the model's
    /// context (<see cref="GenerationBudget.Fit"/>, the rule of <c>recur eval</c>), e.g. 64 tokens on a 256-token model.
    /// </summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>The generation budget on models whose context is at least four times as long (<c>recur eval</c>'s default).</summary>
    public const int DefaultMaxNewTokens = 256;

    /// <summary>Row length for val_loss; null: 1024 or the model's context if shorter.</summary>
    public int? SeqLen { get; init; }

    /// <summary>Seed of s_0, reset at the start of every T so each result can be reproduced alone.</summary>
    public long Seed { get; init; }

    /// <summary>Receives (done, total) as examples finish.</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }
}

/// <summary>One task at one test-time recurrence (<see cref="Recurrences"/> is null for a plain model).</summary>
public sealed record EvaluationRun(string Task, int? Recurrences, EvalResult Result, IReadOnlyList<IEvalSample> Samples,
    IReadOnlyList<string> Notes, TimeSpan Elapsed);

/// <summary>
/// How a <see cref="RecurModel.Train"/> call ended. <see cref="Completed"/> is false when it was cancelled (a checkpoint
/// was written; <c>Train(recipe, outDir, resume: true)</c> continues it). <see cref="ModelDir"/> is the exported final model.
/// </summary>
public sealed record TrainResult(bool Completed, string OutDir, string? ModelDir, string? LastCheckpoint, StepMetrics? LastStep);

/// <summary>
/// A language model with its tokenizer: the library's front door. Loads any model Recur reads (a Hugging Face
/// Llama/OLMo-2 folder, a recurrent folder in the paper's Raven format, a llama2.c <c>.bin</c>), retrofits
/// recurrence into a plain one, generates text at any test-time recurrence T, saves, trains and evaluates.
/// Calls on one instance run one at a time (they take a lock); the model's tensors are freed by <see cref="Dispose"/>.
/// </summary>
/// <example>
/// <code>
/// using Recur;
///
/// using var model = RecurModel.Load("runs/tinyllama-484", new RecurLoadOptions { DType = "bf16" });
/// string answer = model.Generate("Question: what is 17 + 25?\nAnswer:", new GenerateOptions { Recurrences = 8, MaxNewTokens = 32 });
/// await foreach (var piece in model.GenerateStreamingAsync("Once upon a time", new GenerateOptions { Recurrences = 4 }))
///     Console.Write(piece);
/// </code>
/// </example>
public sealed class RecurModel : IDisposable
{
    readonly object _gate = new();
    readonly ModelRunner? _runner;
    ChatTemplate? _template;
    readonly string _templateName;
    readonly Action<string>? _notice;
    bool _disposed;

    RecurModel(ICausalLM model, ITokenizer? tokenizer, string? path, string templateName, Action<string>? notice = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        Path = path;
        _templateName = templateName;
        _notice = notice;
        if (tokenizer is not null) _runner = new ModelRunner(model, tokenizer);
        _recurrences = (model as RecurrentModel)?.DefaultRecurrences ?? 0;
    }

    // The default T of this facade's calls; each call passes its T to the model, which keeps none.
    int _recurrences;

    /// <summary>The network (a <see cref="DecoderModel"/> or a <see cref="RecurrentModel"/>), for lower-level use.</summary>
    public ICausalLM Model { get; }

    /// <summary>The tokenizer, or null when the model was loaded without one (then only <see cref="GenerateTokens"/> works).</summary>
    public ITokenizer? Tokenizer { get; }

    /// <summary>Where the model was loaded from or last saved to; null for a model made in memory.</summary>
    public string? Path { get; private set; }

    /// <summary>Whether the model has a recurrent block (its depth is set at test time).</summary>
    public bool IsRecurrent => Model is RecurrentModel;

    /// <summary>Context length in tokens (prompt plus generated).</summary>
    public int ContextLength => Model.MaxPositions;

    /// <summary>Default test-time recurrence T of a recurrent model (null for plain decoders); ≥ 1.</summary>
    public int? Recurrences
    {
        get => Model is RecurrentModel ? _recurrences : null;
        set
        {
            if (Model is not RecurrentModel rm)
            {
                if (value is null) return;
                throw new RecurUserException("recurrences applies only to recurrent models; this model is a plain decoder");
            }
            int t = value ?? rm.DefaultRecurrences;
            // The KV cache holds p + r·T + c slots; the bound of every front end (WeightCheck.MaxRecurrence).
            if (t is < 1 or > WeightCheck.MaxRecurrence)
                throw RecurUserException.About($"Recurrences must be between 1 and {WeightCheck.MaxRecurrence} (got {t})", "Recurrences");
            lock (_gate)
            {
                _recurrences = t;
                if (_runner is not null) _runner.DefaultRecurrences = t;
            }
        }
    }

    /// <summary>The chat format of this model's tokenizer (recognised from its <c>chat_template</c>, or plain).</summary>
    public ChatTemplate ChatTemplate
    {
        get
        {
            var tok = RequireTokenizer("chat");
            lock (_gate) return _template ??= ChatTemplateFile.Resolve(_templateName, tok, _notice);
        }
    }

    /// <summary>
    /// Opens a model folder (Hugging Face or recurrent) or a llama2.c <c>.bin</c> file, with the tokenizer beside it
    /// when there is one (or <see cref="RecurLoadOptions.Tokenizer"/>).
    /// </summary>
    /// <exception cref="RecurUserException">The path is not a model, the tokenizer does not fit it, or an option is invalid.</exception>
    /// <example>
    /// <code>
    /// using var model = RecurModel.Load("models/TinyLlama-1.1B", new RecurLoadOptions { Device = "cpu", DType = "bf16" });
    /// Console.WriteLine(model.Generate("The capital of France is", new GenerateOptions { MaxNewTokens = 8 }));
    /// </code>
    /// </example>
    public static RecurModel Load(string path, RecurLoadOptions? options = null)
    {
        var o = options ?? new RecurLoadOptions();
        var device = Devices.Parse(o.Device, "RecurLoadOptions.Device");
        var dtype = HfCheckpoint.ParseDType(o.DType);
        path = Hub.HubCache.Resolve(path); // a folder or file, or a repository id in the Hugging Face cache
        ModelLoader.Detect(path);
        string? tokPath = TokenizerLoader.PathFor(path, o.Tokenizer);
        var tok = tokPath is null ? null : TokenizerLoader.Load(tokPath);
        ICausalLM? model = null;
        try
        {
            model = ModelLoader.Load(path, dtype, device, o.Notice);
            if (tok is not null) TokenizerLoader.CheckFitsModel(tok, model.VocabSize, tokPath!);
            var result = new RecurModel(model, tok, path, o.ChatTemplate, o.Notice);
            if (o.Recurrences is not null)
            {
                if (model is not RecurrentModel) o.Notice?.Invoke("RecurLoadOptions.Recurrences ignored: this is not a recurrent model");
                else
                    try { result.Recurrences = o.Recurrences; }
                    catch (RecurUserException e) when (e.Parameters.Contains("Recurrences"))
                    {
                        throw RecurUserException.About($"RecurLoadOptions.{e.Message}", "RecurLoadOptions.Recurrences");
                    }
            }
            return result;
        }
        catch
        {
            model?.Dispose();
            tok?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Wraps a model (and tokenizer) built in code. The new <see cref="RecurModel"/> owns both and disposes them.
    /// </summary>
    public static RecurModel FromModel(ICausalLM model, ITokenizer? tokenizer = null, string chatTemplate = "auto")
    {
        if (tokenizer is not null) TokenizerLoader.CheckFitsModel(tokenizer, model.VocabSize, tokenizer.SourcePath);
        return new RecurModel(model, tokenizer, null, chatTemplate);
    }

    /// <summary>
    /// Retrofits recurrence into this plain model (METHOD §2.8): copies the chosen layers into a prelude, a recurrent
    /// block and a coda, adds the adapter, and checks on the CPU that T = 1 with s_0 = 0 and an identity adapter reproduces
    /// the base model on the kept layers. Returns a new model (with its own copy of the tokenizer); this one is unchanged.
    /// </summary>
    /// <exception cref="RecurUserException">This model is already recurrent, or the shape/layers do not fit it.</exception>
    public RecurModel Retrofit(RecurRetrofitOptions? options = null)
    {
        var o = options ?? new RecurRetrofitOptions();
        if (Model is not DecoderModel b) throw new RecurUserException($"{Path ?? "model"}: is already a recurrent model; Retrofit needs a plain Llama/OLMo-2 model");
        if (o.StateStd < 0) throw new RecurUserException($"StateStd must be ≥ 0 (got {o.StateStd})");
        if (o.MeanRecurrence < 1) throw new RecurUserException($"MeanRecurrence must be ≥ 1 (got {o.MeanRecurrence})");
        lock (_gate)
        {
            ThrowIfDisposed();
            int L = b.Config.NumHiddenLayers;
            (int, int, int)? want = o.Shape is { } s ? Checkpoints.Retrofit.ParseShape(s) : null;
            LayerMap map;
            if (o.Layers is { } l) map = LayerMap.Parse(l, L, want);
            else
            {
                var (p, r, c) = want ?? Checkpoints.Retrofit.PresetShape(b.Config)
                    ?? throw new RecurUserException($"no preset shape for a {L}-layer model; set Shape = \"p,r,c\"");
                map = LayerMap.Default(L, p, r, c);
            }
            var ro = new RetrofitOptions { Layers = map, AdapterInit = o.AdapterInit, Seed = o.Seed, StateStd = o.StateStd, MeanRecurrence = o.MeanRecurrence };
            var m = Checkpoints.Retrofit.FromDecoder(b, ro);
            ITokenizer? tok = null;
            try
            {
                // The check builds its inputs on the CPU; fp32 keeps its 1e-4 bound meaningful (bf16 rounding alone exceeds it).
                if (b.Device.type == DeviceType.CPU && b.model.embed_tokens.weight!.dtype == ScalarType.Float32)
                {
                    double diff = Checkpoints.Retrofit.EquivalenceCheck(b, m, map);
                    if (diff > 1e-4) throw new InvalidOperationException($"equivalence check failed: max |Δlogit| = {diff:G3} > 1e-4 (METHOD §2.8)");
                }
                tok = Tokenizer is null ? null : CopyTokenizer(Tokenizer);
                return new RecurModel(m, tok, null, _templateName);
            }
            catch
            {
                m.Dispose();
                tok?.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// Generates a continuation of <paramref name="prompt"/> and returns its text (without the prompt). Greedy unless
    /// <see cref="GenerateOptions.Temperature"/> &gt; 0; stops at the model's and tokenizer's end-of-text tokens, at a
    /// stop sequence, or after <see cref="GenerateOptions.MaxNewTokens"/>.
    /// </summary>
    /// <exception cref="RecurUserException">No tokenizer, invalid options, or prompt plus budget exceed the context.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> was cancelled.</exception>
    /// <example>
    /// <code>
    /// using var model = RecurModel.Load("runs/tiny-recurrent");
    /// foreach (int t in new[] { 1, 4, 16 })
    ///     Console.WriteLine($"T={t}: " + model.Generate("Once upon a time", new GenerateOptions { Recurrences = t, MaxNewTokens = 24 }));
    /// </code>
    /// </example>
    public string Generate(string prompt, GenerateOptions? options = null, CancellationToken cancel = default) =>
        Run(Request(prompt, options), null, cancel).Text;

    /// <summary>
    /// Like <see cref="Generate(string, GenerateOptions?, CancellationToken)"/>, but yields the text as it is decoded
    /// (pieces never split a character and never run past a stop sequence). The model works on a background thread;
    /// leaving the loop early stops it.
    /// </summary>
    public async IAsyncEnumerable<string> GenerateStreamingAsync(string prompt, GenerateOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancel = default)
    {
        await foreach (var piece in StreamRequest(Request(prompt, options), cancel).ConfigureAwait(false))
            if (piece.Text is { Length: > 0 } t) yield return t;
    }

    /// <summary>
    /// Token ids in, token ids out, for models without a tokenizer (e.g. a random preset or a llama2.c file).
    /// Returns the new tokens, without the end-of-text token that stopped them.
    /// </summary>
    public int[] GenerateTokens(IReadOnlyList<int> promptIds, GenerateOptions? options = null, CancellationToken cancel = default)
    {
        var o = options ?? new GenerateOptions();
        if (o.MaxNewTokens < 1) throw new RecurUserException($"MaxNewTokens must be ≥ 1 (got {o.MaxNewTokens})");
        if (o.StopSequences is { Count: > 0 }) throw new RecurUserException("StopSequences need text: use Generate(string) with a tokenizer");
        long seed = o.Seed ?? Random.Shared.NextInt64(1, long.MaxValue);
        var sampling = o.Sampling() with { Seed = seed };
        lock (_gate)
        {
            ThrowIfDisposed();
            if (Model is not RecurrentModel && o.Recurrences is not null)
                throw new RecurUserException("recurrences applies only to recurrent models; this model is a plain decoder");
            using var gen = Model is RecurrentModel ? new Generator((ulong)seed) : null;
            var model = Model is RecurrentModel rm ? rm.At(Recurrence.Fixed(o.Recurrences ?? _recurrences, gen)) : Model;
            var stops = new HashSet<int>(Model.EosTokenIds);
            if (Tokenizer is not null) stops.UnionWith(Tokenizer.StopIds);
            return [.. Generation.Generate(model, [[.. promptIds]], new GenerationOptions(o.MaxNewTokens, sampling, stops) { Speculate = o.Speculate }, cancel: cancel)[0]];
        }
    }

    /// <summary>
    /// Saves the model with its tokenizer files: a plain model as a Hugging Face folder, a recurrent one in the paper's
    /// Raven format. The folder is written under a temporary name and renamed when complete.
    /// </summary>
    /// <param name="path">The model folder to write.</param>
    /// <param name="overwrite">Replace an existing folder (otherwise that is an error).</param>
    /// <param name="dtype">Stored dtype (<c>fp32</c>, <c>bf16</c>); null keeps the parameters' dtype.</param>
    public void Save(string path, bool overwrite = false, string? dtype = null)
    {
        var storeType = dtype is null ? (ScalarType?)null : HfCheckpoint.ParseDType(dtype);
        lock (_gate)
        {
            ThrowIfDisposed();
            string scratch = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"recur-save-{Guid.NewGuid():N}");
            try
            {
                var extra = Tokenizer is null ? new Dictionary<string, string>() : TrainRun.TokenizerFiles(Tokenizer, scratch);
                switch (Model)
                {
                    case RecurrentModel rm: RecurrentCheckpoint.Save(rm, path, storeType, overwrite, extraFiles: extra); break;
                    case DecoderModel dm: HfCheckpoint.Save(dm, path, storeType, force: overwrite, extraFiles: extra); break;
                    default: throw new NotSupportedException($"cannot save a {Model.GetType().Name}");
                }
                Path = path;
            }
            finally
            {
                if (Directory.Exists(scratch)) Directory.Delete(scratch, true);
            }
        }
    }

    /// <summary>
    /// Trains this model in place with <paramref name="recipe"/> (METHOD §3–5: Muon + AdamW, the depth curriculum,
    /// truncated backpropagation, phases), as <c>recur train</c> does but without console output. Metrics, checkpoints
    /// and the recipe go to <paramref name="outDir"/>; the final model is exported to <c>outDir/model</c>. The recipe's
    /// <c>model</c>, <c>tokenizer</c>, <c>retrofit</c> and <c>device</c> fields are not used: this model and its
    /// tokenizer train where they are (call <see cref="Retrofit"/> first to make it recurrent).
    /// </summary>
    /// <param name="progress">Receives every optimizer step's metrics.</param>
    /// <param name="cancel">Stops after the current step and writes a checkpoint (<see cref="TrainResult.Completed"/> is false).</param>
    /// <param name="overwrite">Replace a run folder that already holds a run (otherwise that is an error).</param>
    /// <param name="resume">
    /// Continue the run in <paramref name="outDir"/> from its newest checkpoint: this model's weights are replaced by
    /// the checkpoint's, and the optimizer, schedule and data position continue where they stopped. The recipe must be
    /// the run's own (<c>outDir/recipe.json</c>). A finished run returns at once with <see cref="TrainResult.Completed"/>
    /// true; a run stopped before its first checkpoint starts again.
    /// </param>
    /// <exception cref="RecurUserException">No tokenizer, parameters not fp32, an <paramref name="outDir"/> holding a run
    /// without <paramref name="overwrite"/> or <paramref name="resume"/>, a checkpoint of another model, or a bad recipe.</exception>
    public TrainResult Train(TrainRecipe recipe, string outDir, IProgress<StepMetrics>? progress = null, CancellationToken cancel = default,
        bool overwrite = false, bool resume = false)
    {
        var tok = RequireTokenizer("training");
        if (overwrite && resume) throw RecurUserException.About("overwrite: true and resume: true exclude each other", "overwrite: true", "resume: true");
        if (recipe.Recurrent && Model is not RecurrentModel)
            throw new RecurUserException("recipe: 'retrofit' asks for a recurrent model but this one is plain: call Retrofit() first, then Train()");
        var module = (nn.Module)Model;
        if (module.parameters().Any(p => p.dtype != ScalarType.Float32))
            throw new RecurUserException("training needs fp32 parameters (the recipe's dtype sets the compute dtype): load with DType = \"fp32\"");
        string recipeFile = System.IO.Path.Combine(outDir, TrainRun.RecipeFile);
        string? checkpoint = resume && Directory.Exists(outDir) ? RunCheckpoints.Latest(outDir) : null;
        TrainerState? state = null;
        if (checkpoint is not null)
        {
            var stored = File.Exists(recipeFile) ? TrainRecipe.Load(recipeFile) : throw new RecurUserException($"{outDir}: no {TrainRun.RecipeFile}; not a run folder");
            if (stored.ToJson() != recipe.ToJson())
                throw RecurUserException.About($"{outDir}: the recipe differs from the run's {TrainRun.RecipeFile}; resume: true continues a run with its own recipe (TrainRecipe.Load(\"{recipeFile}\"))", "resume: true");
            state = RunCheckpoints.ReadState(checkpoint);
            long lastPhaseSteps = stored.Phase(stored.PhaseCount - 1, recipeFile).Steps;
            if (state.Phase == stored.PhaseCount - 1 && state.Step >= lastPhaseSteps)
            {
                // A finished run: nothing to train; make sure its final model is there.
                string done = System.IO.Path.Combine(outDir, TrainRun.FinalModelDir);
                if (!Directory.Exists(done)) TrainRun.ExportModel(checkpoint, done);
                return new TrainResult(true, outDir, done, checkpoint, null);
            }
        }
        else if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !overwrite && !TrainRun.NothingToResume(outDir))
            throw RecurUserException.About($"{outDir}: run folder already exists and is not empty (pass resume: true to continue it, or overwrite: true to replace it)",
                "resume: true", "overwrite: true");
        lock (_gate)
        {
            ThrowIfDisposed();
            var savedCompute = Model.ComputeDType;
            string scratch = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"recur-tok-{Guid.NewGuid():N}");
            if (checkpoint is not null)
            {
                LoadWeights(checkpoint);
                foreach (var _ in TrainRun.CleanLeftovers(outDir)) { }
                TrainRun.TruncateMetrics(outDir, state!.GlobalStep);
            }
            else
            {
                // A fresh start (also over a run that stopped before its first checkpoint, or with overwrite: true).
                if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
                Directory.CreateDirectory(outDir);
                AtomicFile.WriteAllText(recipeFile, recipe.ToJson());
            }
            StepMetrics? last = null;
            bool finished;
            try
            {
                var hooks = new TrainerHooks
                {
                    Data = TrainRun.DataHooks(tok),
                    OnStep = m =>
                    {
                        TrainRun.AppendMetrics(outDir, m);
                        last = m;
                        progress?.Report(m);
                    },
                };
                finished = new Trainer(recipe, recipeFile, outDir, Model, hooks, state, TrainRun.TokenizerFiles(tok, scratch)).Run(cancel);
            }
            finally
            {
                // The trainer leaves the model in training mode with its own T and compute dtype; generation expects eval mode.
                module.eval();
                Model.ComputeDType = savedCompute;
                try { if (Directory.Exists(scratch)) Directory.Delete(scratch, true); } catch (IOException) { }
            }
            var latest = RunCheckpoints.Latest(outDir);
            string? final = null;
            if (finished && latest is not null)
            {
                final = System.IO.Path.Combine(outDir, TrainRun.FinalModelDir);
                TrainRun.ExportModel(latest, final);
            }
            return new TrainResult(finished, outDir, final, latest, last);
        }
    }

    /// <summary>Copies a run checkpoint's weights into this model, which must have the same parameters.</summary>
    void LoadWeights(string checkpoint)
    {
        var module = (nn.Module)Model;
        using var saved = ModelLoader.Load(checkpoint, ScalarType.Float32, CPU);
        var source = ((nn.Module)saved).named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        var target = module.named_parameters().ToList();
        if (source.Count != target.Count || target.Any(t => !source.TryGetValue(t.name, out var p) || !p.shape.SequenceEqual(t.parameter.shape)))
            throw new RecurUserException($"{checkpoint}: the checkpoint is not this model (its parameters differ); resume a run with the model it trained");
        using var _ = no_grad();
        foreach (var (name, p) in target) p.copy_(source[name]);
    }

    /// <summary>
    /// Scores the model on one task (<see cref="EvalTasks.Names"/>: lm-eval names such as gsm8k_cot_sean, minerva_math, hellaswag, lambada_openai; and val_loss)
    /// at each test-time recurrence in <paramref name="recurrences"/> (null: the model's current T; ignored for plain models),
    /// as <c>recur eval</c> does, without writing files.
    /// </summary>
    /// <param name="task">lm-eval task name, e.g. <c>gsm8k_cot_sean</c>, or <c>val_loss</c>.</param>
    /// <param name="dataPath">The task's data file (jsonl, or text for val_loss).</param>
    /// <exception cref="RecurUserException">Unknown task, unreadable data, or no tokenizer.</exception>
    public IReadOnlyList<EvaluationRun> Evaluate(string task, string dataPath, IReadOnlyList<int>? recurrences = null,
        EvaluateOptions? options = null, CancellationToken cancel = default)
    {
        var o = options ?? new EvaluateOptions();
        var tok = RequireTokenizer("evaluation");
        if (o.Shots < 0) throw new RecurUserException($"Shots must be ≥ 0 (got {o.Shots})");
        if (o.BatchSize < 1) throw new RecurUserException($"BatchSize must be ≥ 1 (got {o.BatchSize})");
        if (o.MaxNewTokens < 1) throw new RecurUserException($"MaxNewTokens must be ≥ 1 (got {o.MaxNewTokens})");
        if (o.Limit is < 1) throw new RecurUserException($"Limit must be ≥ 1 (got {o.Limit})");
        if (o.SeqLen is < 1) throw new RecurUserException($"SeqLen must be ≥ 1 (got {o.SeqLen})");
        if (recurrences is not null && recurrences.Any(t => t < 1)) throw new RecurUserException("recurrences must all be ≥ 1");
        var info = EvalTasks.Get(task);
        string? fewshot = o.FewshotPath;
        if (fewshot is null && o.Shots > 0 && info.Generative)
        {
            var beside = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(dataPath))!, "train.jsonl");
            fewshot = File.Exists(beside) && System.IO.Path.GetFullPath(dataPath) != beside ? beside
                : throw new RecurUserException($"{task}: Shots = {o.Shots} needs exemplars: set FewshotPath (a training jsonl such as gsm8k/train.jsonl), or Shots = 0");
        }
        lock (_gate)
        {
            ThrowIfDisposed();
            int maxNew = o.MaxNewTokens ?? GenerationBudget.Fit(EvaluateOptions.DefaultMaxNewTokens, Model.MaxPositions);
            var settings = new EvalSettings(o.Shots, fewshot, o.Limit, o.SkipBadLines, o.BatchSize, maxNew,
                o.SeqLen ?? Math.Min(1024, Model.MaxPositions));
            var lt = EvalTasks.Load(info, dataPath, settings, tok);
            var runs = new List<EvaluationRun>();
            foreach (var t in LoadedTask.Sweep(Model, recurrences?.Select(t => new RecurrenceSetting(t, null)).ToList(), _recurrences))
            {
                var sw = Stopwatch.StartNew();
                var outcome = lt.RunAt(Model, tok, t, o.Seed, o.Progress is { } p ? (done, total) => p.Report((done, total)) : null, cancel);
                runs.Add(new EvaluationRun(info.Name, t?.Fixed, outcome.Result, outcome.Samples, [.. lt.Warnings, .. outcome.Notes], sw.Elapsed));
            }
            return runs;
        }
    }

    /// <summary>Frees the model's tensors and the tokenizer.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Model.Dispose();
            Tokenizer?.Dispose();
        }
    }

    // ---- shared with RecurChatClient ----

    /// <summary>One streamed piece of a reply; the last one carries the result.</summary>
    internal readonly record struct Piece(string? Text, TextResult? Result);

    /// <summary>Runs one request synchronously; <paramref name="onText"/> sees the text as it becomes final.</summary>
    internal TextResult Run(TextRequest request, Action<string>? onText, CancellationToken cancel)
    {
        var runner = _runner ?? throw new RecurUserException("this model has no tokenizer: load it with a tokenizer, or use GenerateTokens");
        lock (_gate)
        {
            ThrowIfDisposed();
            return runner.Run([request], (_, text) => onText?.Invoke(text), cancel)[0];
        }
    }

    /// <summary>
    /// Runs <paramref name="request"/> on a background thread and yields its text as it is decoded, then the result.
    /// Leaving the enumeration early cancels the generation.
    /// </summary>
    internal async IAsyncEnumerable<Piece> StreamRequest(TextRequest request, [EnumeratorCancellation] CancellationToken cancel)
    {
        var channel = Channel.CreateUnbounded<Piece>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var work = Task.Run(() =>
        {
            try
            {
                var result = Run(request, text => channel.Writer.TryWrite(new Piece(text, null)), stop.Token);
                channel.Writer.TryWrite(new Piece(null, result));
                channel.Writer.Complete();
            }
            catch (Exception e) { channel.Writer.Complete(e); }
        }, CancellationToken.None);
        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
                yield return piece;
        }
        finally
        {
            stop.Cancel();
            try { await work.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
    }

    TextRequest Request(string prompt, GenerateOptions? options)
    {
        var o = options ?? new GenerateOptions();
        var tok = RequireTokenizer("text generation");
        if (o.MaxNewTokens < 1) throw new RecurUserException($"MaxNewTokens must be ≥ 1 (got {o.MaxNewTokens})");
        var ids = tok.Encode(prompt, o.AddSpecialTokens);
        if (ids.Length == 0 && tok.BosId is int bos) ids = [bos];
        return new TextRequest(ids, o.MaxNewTokens, o.Sampling(), o.Recurrences, o.StopSequences, Speculate: o.Speculate);
    }

    ITokenizer RequireTokenizer(string what) =>
        Tokenizer ?? throw RecurUserException.About($"{Path ?? "this model"}: no tokenizer; {what} needs one: set RecurLoadOptions.Tokenizer", "RecurLoadOptions.Tokenizer");

    /// <summary>The tokenizer, or the error that names the option to set; for front ends that need text (chat, serve, eval).</summary>
    public ITokenizer TokenizerFor(string what) => RequireTokenizer(what);

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    static ITokenizer CopyTokenizer(ITokenizer tok) => tok is CharTokenizerAdapter c
        ? new CharTokenizerAdapter(c.Inner, c.SourcePath)
        : TokenizerLoader.Load(tok.SourcePath);
}
