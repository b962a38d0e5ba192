using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>
/// Huginn's own adaptive exit (<c>adaptive:kl-official</c>), reproducing seal-rg/recurrent-pretraining
/// <c>recpre/raven_modeling_minimal.py</c> (<c>generate_with_adaptive_compute</c> with <c>criterion="kl"</c>,
/// <c>KLExitEvaluator</c>, <c>HuginnDynamicCache</c> with the default <c>lookup_strategy="full"</c>) token for token.
/// Recur's own rules (<see cref="AdaptiveGeneration"/>, docs/adaptive.md) differ in four ways that this path undoes:
/// <list type="bullet">
/// <item>the criterion is KL(p_{i−1} ‖ p_i) of the last position's next-token distribution, p_0 uniform over the
/// vocabulary, so a token may exit after iteration 1;</item>
/// <item>the prompt exits too, decided on its last position, and every prompt position gets that depth;</item>
/// <item>the batch iterates in lockstep until every unfinished row has exited (a row's logits are those of the probe
/// at its exit iteration, compute_step + 1), so every row writes the cache to the deepest row's iteration;</item>
/// <item>a core slot holds entries only for the positions whose step reached it; attention there sees only those
/// (an earlier token that exited sooner drops out of attention at deeper iterations) instead of lending its last
/// iteration.</item>
/// </list>
/// The official cache drops absent entries from the key list; here they stay in the buffer and are masked, which is
/// the same attention. The coda is probed at every iteration and its cache entries are overwritten each time, so the
/// last probe's remain, as in the official cache (coda entries are keyed by position).
/// </summary>
sealed class OfficialAdaptiveForward : IStepForward
{
    readonly RecurrentModel _model;
    readonly Generator? _generator;
    readonly AdaptiveOptions _options;
    readonly AdaptiveStats? _stats;
    readonly Action<int, Tensor>? _onLogits;
    readonly PositionCache _cache;
    readonly int[] _stepDepth; // per position: iterations its step ran (the deepest row of that step)

    public OfficialAdaptiveForward(RecurrentModel model, Generator? generator, AdaptiveOptions options, int batch, int capacity,
        AdaptiveStats? stats, Action<int, Tensor>? onLogits)
    {
        _model = model; _generator = generator; _options = options; _stats = stats; _onLogits = onLogits;
        var (p, r, c) = model.Config.Shape;
        _cache = new PositionCache(p + r * options.MaxIterations + c, capacity);
        _stepDepth = new int[capacity];
    }

    public Tensor Forward(Tensor input, Tensor? keyPadding, int step, IReadOnlyList<bool> finished)
    {
        int b = (int)input.shape[0], s = (int)input.shape[1], max = _options.MaxIterations, past = _cache.Length;
        var (pre, rec, _) = _model.Config.Shape;
        int codaSlot = pre + rec * max;
        float threshold = (float)_options.EffectiveThreshold;
        var device = input.device;

        using var ctx = _model.Context(input, keyPadding, _cache, _generator);
        var e = _model.Prelude(input, ctx);
        var state = _model.InitialState(e, _generator);
        // log p_0: uniform over the vocabulary (KLExitEvaluator.init).
        using TorchSharp.Scalar logUniform = -Math.Log(_model.VocabSize); // held across the call (Model/Scalars.cs)
        var prev = full([b, _model.VocabSize], logUniform, ScalarType.Float32, device);
        var exited = new bool[b];
        var depths = Enumerable.Repeat(max, b).ToArray();
        var logits = zeros([b, _model.VocabSize], ScalarType.Float32, device);
        int ran = 0;
        for (int i = 0; i < max; i++)
        {
            using var core = CoreContext(ctx, past, s, i, device);
            state = _model.Iterate(state, e, core ?? ctx, pre + i * rec);
            ran = i + 1;
            var probe = _model.Logits(_model.Coda(state, ctx, codaSlot).narrow(1, s - 1, 1)).squeeze(1);
            _stats?.AddProbes(b);
            var logp = probe.log_softmax(-1);
            // F.kl_div(log p_i, log p_{i−1}, log_target=True).sum(-1) = Σ p_{i−1} (log p_{i−1} − log p_i).
            var kl = (prev.exp() * (prev - logp)).sum(-1).cpu().data<float>().ToArray();
            prev = logp;
            var leaving = new List<long>();
            for (int r = 0; r < b; r++)
                if (!exited[r] && !finished[r] && kl[r] < threshold) { exited[r] = true; depths[r] = ran; leaving.Add(r); }
            if (leaving.Count > 0)
            {
                var rows = tensor(leaving.ToArray(), ScalarType.Int64).to(device);
                logits = logits.index_copy(0, rows, probe.index_select(0, rows));
            }
            bool allOut = Enumerable.Range(0, b).All(r => exited[r] || finished[r]);
            if (allOut) break;
            if (i == max - 1)
            {
                // Rows that never exited (and finished rows) take the last probe.
                var rest = Enumerable.Range(0, b).Where(r => !exited[r]).Select(r => (long)r).ToArray();
                var rows = tensor(rest, ScalarType.Int64).to(device);
                logits = logits.index_copy(0, rows, probe.index_select(0, rows));
            }
        }
        for (int t = past; t < past + s; t++) _stepDepth[t] = ran;
        _cache.Commit(s);
        if (_stats is not null && step > 0)
            for (int r = 0; r < b; r++) if (!finished[r]) _stats.AddToken(depths[r]);
        _onLogits?.Invoke(step, logits);
        return logits;
    }

    /// <summary>
    /// The context for core iteration <paramref name="i"/> (0-based) of a step of <paramref name="s"/> tokens after
    /// <paramref name="past"/>: earlier positions whose step ran no more than i iterations are masked out. Null when none is.
    /// </summary>
    ForwardContext? CoreContext(ForwardContext ctx, int past, int s, int i, Device device)
    {
        var absent = Enumerable.Range(0, past).Where(t => _stepDepth[t] <= i).ToArray();
        if (absent.Length == 0) return null;
        // A prompt is one step, so only single-token steps come after earlier positions.
        if (s != 1) throw new InvalidOperationException("kl-official: a multi-token step after earlier positions");
        var present = ones([1, 1, 1, past + 1], ScalarType.Bool, device);
        present.index_fill_(3, tensor(absent.Select(t => (long)t).ToArray(), ScalarType.Int64).to(device), Scalars.False);
        // With left padding the context's mask [B, 1, 1, K] already keeps pads out; without it there is none for one query.
        var mask = ctx.Attention.Mask is { } m ? m.logical_and(present) : present;
        var a = ctx.Attention;
        var sub = new AttentionContext { Cos = a.Cos, Sin = a.Sin, Mask = mask, Causal = false, Cache = a.Cache, Weights = a.Weights };
        // Its own (empty) WeightCast: disposing it must not free the casts the parent context owns.
        return new ForwardContext(sub, new WeightCast(_model.ComputeDType), ctx.StateGenerator);
    }

    public void Dispose() => _cache.Dispose();

    /// <summary>
    /// K/V per slot and position: writes go to positions [Length, Length + S) and a repeated write in the same step
    /// overwrites (the coda, probed at every iteration); <see cref="Commit"/> ends the step. A slot a step never reached
    /// keeps zeros there, which the caller masks.
    /// </summary>
    sealed class PositionCache(int slots, int capacity) : IKvCache, IDisposable
    {
        readonly Tensor?[] _k = new Tensor?[slots], _v = new Tensor?[slots];
        public int Length { get; private set; }
        public int Slots => slots;

        public (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v)
        {
            int s = (int)k.shape[2];
            if (Length + s > capacity) throw new InvalidOperationException($"kl-official cache holds {capacity} tokens; {Length} + {s} do not fit");
            _k[slot] ??= zeros([k.shape[0], k.shape[1], capacity, k.shape[3]], k.dtype, k.device).DetachFromDisposeScope();
            _v[slot] ??= zeros([v.shape[0], v.shape[1], capacity, v.shape[3]], v.dtype, v.device).DetachFromDisposeScope();
            _k[slot]!.narrow(2, Length, s).copy_(k);
            _v[slot]!.narrow(2, Length, s).copy_(v);
            return (_k[slot]!.narrow(2, 0, Length + s), _v[slot]!.narrow(2, 0, Length + s));
        }

        public void Commit(int tokens) => Length += tokens;

        public void Dispose()
        {
            foreach (var t in _k.Concat(_v)) t?.Dispose();
        }
    }
}
