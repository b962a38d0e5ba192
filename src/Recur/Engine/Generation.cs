using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>What to generate: length bound, stop tokens and sampling.</summary>
/// <remarks>Stop strings and per-row limits are the caller's: it reads each <see cref="TokenColumn"/> and ends a row
/// with <see cref="TokenColumn.Finish"/> (one stop mechanism for every caller).</remarks>
public sealed record GenerationOptions(int MaxNewTokens = 128, SamplingOptions? Sampling = null, IReadOnlyCollection<int>? StopIds = null)
{
    public SamplingOptions SamplingOrGreedy => Sampling ?? new SamplingOptions();

    /// <summary>Self-speculative decoding (recurrent models, greedy, one prompt; <see cref="Speculative"/>); null: plain decoding.</summary>
    public SpeculativeOptions? Speculate { get; init; }
}

/// <summary>
/// One step of a generation: the token every row sampled. Rows that have ended still receive tokens (the batch stays
/// rectangular), so <see cref="Emitted"/> says whether a row's token belongs to its output.
/// </summary>
public sealed class TokenColumn
{
    readonly long[] _tokens;
    readonly bool[] _emitted, _done;

    internal TokenColumn(int step, long[] tokens, bool[] emitted, bool[] done)
    {
        Step = step;
        _tokens = tokens;
        _emitted = emitted;
        _done = done;
    }

    /// <summary>0 for the token after the prompt.</summary>
    public int Step { get; }

    public int Batch => _tokens.Length;

    /// <summary>The token row <paramref name="row"/> sampled at this step.</summary>
    public int Token(int row) => (int)_tokens[row];

    /// <summary>True when the row was running and its token is not a stop id: the token is part of its output.</summary>
    public bool Emitted(int row) => _emitted[row];

    /// <summary>
    /// Ends <paramref name="row"/> after this column (a stop string appeared, its own length limit was reached); an emitted
    /// token stays in the output. Generation ends when every row has ended.
    /// </summary>
    public void Finish(int row) => _done[row] = true;
}

/// <summary>
/// The per-step forward of one generation, with the cache it fills: the only thing fixed and adaptive depth differ in.
/// Step 0 gets the left-padded prompts [B, S]; every later step the previous column [B, 1].
/// </summary>
public interface IStepForward : IDisposable
{
    /// <summary>Logits [B, V] (fp32) of each row's last position. <paramref name="finished"/>: rows that ended before this step.</summary>
    Tensor Forward(Tensor input, Tensor? keyPadding, int step, IReadOnlyList<bool> finished);
}

/// <summary>
/// Batched, KV-cached generation for any <see cref="ICausalLM"/>, as one stepper that yields token columns
/// (karpathy/nanochat:nanochat/engine.py, <c>Engine.generate</c>): prefill, then per step one forward, sample, yield.
/// Prompts of different lengths are left-padded; the padding mask keeps pads out of attention and positions start at
/// each row's first real token. One dispose scope per step keeps native memory flat.
/// </summary>
public static class Generation
{
    /// <summary>
    /// Generates continuations of <paramref name="prompts"/> (token ids) at the model's fixed depth (a recurrent model at
    /// its default T, or one seen at a recurrence with <see cref="RecurrentModel.At"/>), one <see cref="TokenColumn"/> per step.
    /// A row ends at a stop id (not emitted), when the caller finishes it, or after <see cref="GenerationOptions.MaxNewTokens"/>.
    /// Leaving the enumeration early ends the generation and frees its cache.
    /// </summary>
    public static IEnumerable<TokenColumn> Stream(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, CancellationToken cancel = default) =>
        options.Speculate is { } speculate ? Speculative.Stream(model, prompts, options, speculate, cancel: cancel)
        : Steps(model, prompts, options, (_, capacity) => new FixedDepthForward(model, capacity), cancel);

    /// <summary>
    /// <see cref="Stream"/> collected: the new tokens of each row, without the stop token. <paramref name="onToken"/> sees
    /// (row, token) as each token is produced.
    /// </summary>
    public static List<int>[] Generate(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, Action<int, int>? onToken = null,
        CancellationToken cancel = default) =>
        Collect(prompts.Count, Stream(model, prompts, options, cancel), onToken);

    /// <summary>The emitted tokens of every row of a stream.</summary>
    public static List<int>[] Collect(int batch, IEnumerable<TokenColumn> columns, Action<int, int>? onToken = null)
    {
        var outputs = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        foreach (var col in columns)
            for (int r = 0; r < col.Batch; r++)
                if (col.Emitted(r))
                {
                    outputs[r].Add(col.Token(r));
                    onToken?.Invoke(r, col.Token(r));
                }
        return outputs;
    }

    /// <summary>
    /// The stepper. <paramref name="begin"/> makes the per-step forward for (batch, cache capacity); the stepper owns it.
    /// Nothing is held across a yield (no dispose scope, no no-grad guard), so the caller may do anything between columns.
    /// </summary>
    public static IEnumerable<TokenColumn> Steps(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options,
        Func<int, int, IStepForward> begin, CancellationToken cancel = default)
    {
        // Checked before the first MoveNext, so bad prompts throw at the call as before.
        if (options.Speculate is not null)
            throw Speculative.Error("speculative decoding does not combine with a custom per-step forward (log-probabilities, adaptive depth)");
        if (prompts.Count == 0) return [];
        var layout = LeftPad(model, prompts, options);
        return Run(model.Device, layout, options, begin, cancel);
    }

    static IEnumerable<TokenColumn> Run(Device device, (int Batch, int MaxLen, long[] Ids, bool[] Real, bool Padded) layout, GenerationOptions options,
        Func<int, int, IStepForward> begin, CancellationToken cancel)
    {
        var (b, maxLen, ids, real, padded) = layout;
        var stop = new HashSet<int>(options.StopIds ?? []);
        var done = new bool[b];
        using var forward = begin(b, maxLen + options.MaxNewTokens);
        using var sampler = new Sampler(options.SamplingOrGreedy);
        Tensor? keyPadding = null;
        if (padded)
            using (NewDisposeScope()) // holds the CPU mask while to() reads it (Model/Scalars.cs)
                keyPadding = tensor(real, [b, maxLen]).to(device).DetachFromDisposeScope();
        var next = new long[b];
        try
        {
            for (int step = 0; step < options.MaxNewTokens; step++)
            {
                cancel.ThrowIfCancellationRequested();
                var emitted = new bool[b];
                using (var scope = NewDisposeScope())
                using (no_grad())
                {
                    Tensor input = step == 0 ? tensor(ids, [b, maxLen]).to(device) : tensor(next, [b, 1]).to(device);
                    if (keyPadding is not null && step > 0)
                    {
                        var grown = cat([keyPadding, ones([b, 1], ScalarType.Bool, device)], 1).DetachFromDisposeScope();
                        keyPadding.Dispose();
                        keyPadding = grown;
                    }
                    var logits = forward.Forward(input, keyPadding, step, done);
                    next = sampler.Next(logits);
                }
                for (int r = 0; r < b; r++)
                {
                    if (done[r]) continue;
                    if (stop.Contains((int)next[r])) done[r] = true;
                    else emitted[r] = true;
                }
                yield return new TokenColumn(step, next, emitted, done);
                if (done.All(x => x)) break;
            }
        }
        finally { keyPadding?.Dispose(); }
    }

    /// <summary>
    /// Checks prompts against the model (non-empty, ids in the vocabulary, prompt + new tokens within the context)
    /// and lays them out left-padded: ids [B·maxLen] and a real-token mask of the same shape, row-major.
    /// </summary>
    internal static (int Batch, int MaxLen, long[] Ids, bool[] Real, bool Padded) LeftPad(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        CheckPrompts(prompts, model.VocabSize, model.MaxPositions, options.MaxNewTokens);
        int b = prompts.Count, maxLen = prompts.Max(p => p.Length);
        var ids = new long[b * maxLen];
        var real = new bool[b * maxLen];
        for (int r = 0; r < b; r++)
            for (int j = 0; j < prompts[r].Length; j++)
            {
                int col = maxLen - prompts[r].Length + j;
                ids[r * maxLen + col] = prompts[r][j];
                real[r * maxLen + col] = true;
            }
        return (b, maxLen, ids, real, prompts.Any(p => p.Length != maxLen));
    }

    /// <summary>Prompts a model can continue: non-empty, ids in the vocabulary, prompt + new tokens within the context (also MappedDecoder's checks).</summary>
    internal static void CheckPrompts(IReadOnlyList<int[]> prompts, int vocabSize, int maxPositions, int maxNewTokens)
    {
        if (prompts.Any(p => p.Length == 0)) throw new RecurUserException("a prompt is empty: give at least one token (e.g. BOS)");
        foreach (var p in prompts)
            foreach (var id in p)
                if (id < 0 || id >= vocabSize) throw new RecurUserException($"prompt token id {id} is outside the model's vocabulary (0..{vocabSize - 1})");
        int maxLen = prompts.Max(p => p.Length);
        if ((long)maxLen + maxNewTokens > maxPositions) // 64-bit: a huge limit must not wrap negative
            throw RecurUserException.About($"prompt ({maxLen} tokens) plus MaxNewTokens {maxNewTokens} exceeds the model's context of {maxPositions} positions", "MaxNewTokens");
    }

    /// <summary>Fixed depth: the fast batch-1 decoder when it applies (<see cref="FastDecoder"/>), else the model's reference Forward.</summary>
    sealed class FixedDepthForward(ICausalLM model, int capacity) : IStepForward
    {
        // The decode cache opts in to the GEMV kernel for single-row products the reference forward still does.
        readonly KvCache _cache = new(model.CacheSlots, capacity) { MatVec = true };

        public Tensor Forward(Tensor input, Tensor? keyPadding, int step, IReadOnlyList<bool> finished) =>
            (FastDecoder.TryForward(model, input, keyPadding, _cache) ?? model.Forward(input, keyPadding, _cache, lastOnly: true)).squeeze(1);

        public void Dispose() => _cache.Dispose();
    }
}
