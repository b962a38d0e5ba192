using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>What to generate: length bound, stop tokens and sampling.</summary>
/// <param name="StopWhen">Called with (row, tokens so far) after each new token; true ends that row (e.g. a stop string appeared).</param>
public sealed record GenerationOptions(int MaxNewTokens = 128, SamplingOptions? Sampling = null, IReadOnlyCollection<int>? StopIds = null,
    Func<int, IReadOnlyList<int>, bool>? StopWhen = null)
{
    public SamplingOptions SamplingOrGreedy => Sampling ?? new SamplingOptions();
}

/// <summary>
/// Batched, KV-cached generation for any <see cref="ICausalLM"/>. Prompts of different lengths are
/// left-padded; the padding mask keeps pads out of attention and positions start at each row's first
/// real token. One dispose scope per step keeps native memory flat.
/// </summary>
public static class Generation
{
    /// <summary>
    /// Generates continuations of <paramref name="prompts"/> (token ids). <paramref name="onToken"/> sees
    /// (row, token) as each token is produced. Returns the new tokens of each row, without the stop token.
    /// <paramref name="rowFinished"/>, asked after each token a row produces, ends that row early when it
    /// returns true (the token stays in the output): callers use it for stop strings and per-row length limits
    /// when requests of different lengths share one batch.
    /// </summary>
    public static List<int>[] Generate(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, Action<int, int>? onToken = null,
        CancellationToken cancel = default, Func<int, bool>? rowFinished = null)
    {
        if (prompts.Count == 0) return [];
        var (b, maxLen, ids, real, padded) = LeftPad(model, prompts, options);
        var stop = new HashSet<int>(options.StopIds ?? []);
        var outputs = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var done = new bool[b];

        using var noGrad = no_grad();
        using var cache = new KvCache(model.CacheSlots, maxLen + options.MaxNewTokens);
        using var sampler = new Sampler(options.SamplingOrGreedy);
        var device = model.Device;
        using var padding = padded ? tensor(real, [b, maxLen]).to(device).DetachFromDisposeScope() : null;
        Tensor? keyPadding = padding?.alias().DetachFromDisposeScope();
        var next = new long[b];
        try
        {
            for (int step = 0; step < options.MaxNewTokens; step++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                Tensor input = step == 0 ? tensor(ids, [b, maxLen]).to(device) : tensor(next, [b, 1]).to(device);
                if (keyPadding is not null && step > 0)
                {
                    var grown = cat([keyPadding, ones([b, 1], ScalarType.Bool, device)], 1).DetachFromDisposeScope();
                    keyPadding.Dispose();
                    keyPadding = grown;
                }
                var logits = (FastDecoder.TryForward(model, input, keyPadding, cache) ?? model.Forward(input, keyPadding, cache, lastOnly: true)).squeeze(1);
                var tok = sampler.Sample(logits).data<long>().ToArray();
                Accept(tok, next, done, stop, outputs, options, onToken, rowFinished);
                if (done.All(x => x)) break;
            }
        }
        finally { keyPadding?.Dispose(); }
        return outputs;
    }

    /// <summary>
    /// Checks prompts against the model (non-empty, ids in the vocabulary, prompt + new tokens within the context)
    /// and lays them out left-padded: ids [B·maxLen] and a real-token mask of the same shape, row-major.
    /// </summary>
    internal static (int Batch, int MaxLen, long[] Ids, bool[] Real, bool Padded) LeftPad(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        if (prompts.Any(p => p.Length == 0)) throw new RecurUserException("a prompt is empty: give at least one token (e.g. BOS)");
        foreach (var p in prompts)
            foreach (var id in p)
                if (id < 0 || id >= model.VocabSize) throw new RecurUserException($"prompt token id {id} is outside the model's vocabulary (0..{model.VocabSize - 1})");
        int b = prompts.Count, maxLen = prompts.Max(p => p.Length);
        if ((long)maxLen + options.MaxNewTokens > model.MaxPositions) // 64-bit: a huge limit must not wrap negative
            throw new RecurUserException($"prompt ({maxLen} tokens) plus --max-new-tokens {options.MaxNewTokens} exceeds the model's context of {model.MaxPositions} positions");
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

    /// <summary>
    /// Takes one sampled token per row: remembers it as the next input, and for rows still running either ends the
    /// row at a stop id (not kept) or appends it, reports it, and ends the row when a stop predicate says so.
    /// </summary>
    internal static void Accept(long[] tok, long[] next, bool[] done, HashSet<int> stop, List<int>[] outputs, GenerationOptions options,
        Action<int, int>? onToken, Func<int, bool>? rowFinished)
    {
        for (int r = 0; r < tok.Length; r++)
        {
            next[r] = tok[r];
            if (done[r]) continue;
            if (stop.Contains((int)tok[r])) { done[r] = true; continue; }
            outputs[r].Add((int)tok[r]);
            onToken?.Invoke(r, (int)tok[r]);
            if (options.StopWhen?.Invoke(r, outputs[r]) == true || rowFinished?.Invoke(r) == true) done[r] = true;
        }
    }
}
