using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>Iterations spent by an adaptive generation. Decoded tokens only: the prompt always runs the maximum.</summary>
public sealed class AdaptiveStats
{
    /// <summary>Tokens that went through the adaptive loop (rows still generating).</summary>
    public long Tokens { get; private set; }
    /// <summary>Sum of their iteration counts.</summary>
    public long Iterations { get; private set; }
    /// <summary>Coda + head evaluations spent only on deciding exits (distribution criteria), over all rows.</summary>
    public long Probes { get; private set; }
    /// <summary>Prompt tokens (real, not padding), each run at the maximum T.</summary>
    public long PromptTokens { get; private set; }
    /// <summary>Tokens by depth: <c>Histogram[d]</c> tokens ran d iterations.</summary>
    public long[] Histogram { get; private set; } = [];

    public double MeanIterations => Tokens == 0 ? double.NaN : (double)Iterations / Tokens;

    internal void AddToken(int depth)
    {
        Tokens++;
        Iterations += depth;
        if (Histogram.Length <= depth) { var h = Histogram; Array.Resize(ref h, depth + 1); Histogram = h; }
        Histogram[depth]++;
    }

    internal void AddProbes(long n) => Probes += n;
    internal void AddPrompt(long n) => PromptTokens += n;
}

/// <summary>
/// Generation with adaptive test-time recurrence per token (experimental, METHOD §7.3). Each decode step runs the
/// prelude once for the batch, then iterates the recurrent block only on the rows whose exit criterion has not fired;
/// a row leaves the loop at its own iteration and its final state goes through the coda. The per-token depth goes
/// into an <see cref="AdaptiveKvCache"/>, whose last-available rule lets deeper queries of later tokens attend to it.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>The prompt runs all <see cref="AdaptiveOptions.MaxIterations"/> iterations for all its tokens, with one s_0 draw
/// [B, S, h] as in §7.2: every later token then finds the prompt's K/V at every depth it may reach, and the prefill is
/// exactly the fixed-T prefill at T = max. Per-position exit inside the prompt would need a criterion per prompt
/// position and would leave the first generated token's logits depending on the exit of positions it never predicts.</item>
/// <item>Distribution criteria (kl, entropy, argmax) run the coda and the head on every active row at every iteration:
/// per probe, c layers plus a V×h matmul, roughly (c + head) / r of an iteration's cost on top of it. The probe at the
/// exit iteration is the token's real output, so it is not wasted. The latent criterion needs no probe.</item>
/// <item>s_0 is drawn for the whole batch every step even when <see cref="AdaptiveOptions.Warm"/> replaces it, so the
/// noise stream is the one <see cref="Generation.Generate"/> draws: with no criterion and max = T the logits match the
/// fixed-T path.</item>
/// <item>Rows that have finished still receive tokens (the batch stays rectangular) but run one iteration and are not
/// counted in <see cref="AdaptiveStats"/>.</item>
/// </list>
/// </remarks>
public static class AdaptiveGeneration
{
    // The latent criterion's denominator floor, held for the process (Model/Scalars.cs).
    static readonly TorchSharp.Scalar Tiny = 1e-12;

    /// <summary>
    /// Like <see cref="Generation.Generate"/>, with per-token depth from <paramref name="adaptive"/>; see <see cref="Stream"/>.
    /// </summary>
    public static List<int>[] Generate(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, AdaptiveOptions adaptive,
        AdaptiveStats? stats = null, Action<int, int>? onToken = null, CancellationToken cancel = default,
        Action<int, Tensor>? onLogits = null, Func<int, int, int>? depthOverride = null) =>
        Generation.Collect(prompts.Count, Stream(model, prompts, options, adaptive, stats, cancel, onLogits, depthOverride), onToken);

    /// <summary>
    /// Like <see cref="Generation.Stream"/>, with per-token depth from <paramref name="adaptive"/>: the same stepper, with the
    /// adaptive per-step forward. <paramref name="stats"/> accumulates iterations; <paramref name="onLogits"/> sees
    /// (step, logits [B, V]) before sampling (valid during the call only); <paramref name="depthOverride"/> (tests,
    /// experiments) fixes (step, row) → depth, replacing the criterion. <paramref name="model"/> is a
    /// <see cref="RecurrentModel"/> or one seen at a recurrence (<see cref="RecurrentModel.At"/>), whose generator then
    /// draws s_0 and test-time noise; its fixed T is replaced by the adaptive maximum.
    /// </summary>
    public static IEnumerable<TokenColumn> Stream(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, AdaptiveOptions adaptive,
        AdaptiveStats? stats = null, CancellationToken cancel = default, Action<int, Tensor>? onLogits = null, Func<int, int, int>? depthOverride = null)
    {
        var (rm, recurrence) = RecurrentModelAt.Unwrap(model) ?? throw new RecurUserException("adaptive recurrence needs a recurrent model");
        adaptive.Validate();
        var columns = Generation.Steps(rm, prompts, options,
            (b, capacity) => adaptive.Criterion == ExitCriterion.KlOfficial && depthOverride is null
                ? new OfficialAdaptiveForward(rm, recurrence?.StateGenerator, adaptive, b, capacity, stats, onLogits)
                : new AdaptiveForward(rm, recurrence?.StateGenerator, adaptive, b, capacity, stats, onLogits, depthOverride), cancel);
        if (prompts.Count > 0) stats?.AddPrompt(prompts.Sum(p => (long)p.Length));
        return columns;
    }

    /// <summary>The adaptive per-step forward: the prompt at the maximum depth, then <see cref="DecodeStep"/> per token.</summary>
    sealed class AdaptiveForward(RecurrentModel model, Generator? generator, AdaptiveOptions adaptive, int batch, int capacity,
        AdaptiveStats? stats, Action<int, Tensor>? onLogits, Func<int, int, int>? depthOverride) : IStepForward
    {
        readonly AdaptiveKvCache _cache = new(model.Config, adaptive.MaxIterations, batch, capacity, adaptive.Cache) { MatVec = true };
        Tensor? _lastState; // [B, 1, h]: each row's final state of its previous token (continuous compute)

        public Tensor Forward(Tensor input, Tensor? keyPadding, int step, IReadOnlyList<bool> finished)
        {
            int max = adaptive.MaxIterations;
            var (pre, rec, _) = model.Config.Shape;
            Tensor logits;
            if (step == 0)
            {
                int len = (int)input.shape[1];
                using var ctx = model.Context(input, keyPadding, _cache, generator);
                var e = model.Prelude(input, ctx);
                var state = model.InitialState(e, generator);
                for (int i = 0; i < max; i++) state = model.Iterate(state, e, ctx, pre + i * rec);
                var h = model.Coda(state, ctx, pre + rec * max);
                logits = model.Logits(h.narrow(1, len - 1, 1), ctx).squeeze(1);
                _cache.Commit(len, Enumerable.Repeat(max, batch).ToArray());
                SetLast(ref _lastState, state.narrow(1, len - 1, 1));
            }
            else
            {
                var done = finished.ToArray();
                var (l, final, depths) = DecodeStep(model, generator, input, keyPadding, _cache, adaptive, _lastState, done, step, depthOverride, stats);
                logits = l;
                _cache.Commit(1, depths);
                SetLast(ref _lastState, final);
                if (stats is not null)
                    for (int r = 0; r < batch; r++) if (!done[r]) stats.AddToken(depths[r]);
            }
            onLogits?.Invoke(step, logits);
            return logits;
        }

        public void Dispose()
        {
            _lastState?.Dispose();
            _cache.Dispose();
        }
    }

    static void SetLast(ref Tensor? last, Tensor value)
    {
        var copy = value.detach().clone().DetachFromDisposeScope();
        last?.Dispose();
        last = copy;
    }

    /// <summary>One decoded token per row: returns its logits [B, V], each row's final state [B, 1, h] and depth.</summary>
    static (Tensor Logits, Tensor Final, int[] Depths) DecodeStep(RecurrentModel model, Generator? generator, Tensor input, Tensor? keyPadding, AdaptiveKvCache cache,
        AdaptiveOptions o, Tensor? lastState, bool[] done, int step, Func<int, int, int>? depthOverride, AdaptiveStats? stats)
    {
        int b = (int)input.shape[0], max = o.MaxIterations;
        var (pre, rec, _) = model.Config.Shape;
        int codaSlot = pre + rec * max;
        double threshold = o.EffectiveThreshold;
        var device = input.device;

        using var ctx = model.Context(input, keyPadding, cache, generator);
        var e = model.Prelude(input, ctx);
        // Always drawn, so the s_0 stream stays aligned with the fixed-T path even when warm start replaces it.
        var s0 = model.InitialState(e, generator);
        var state = o.Warm && lastState is not null ? lastState.to(s0.dtype) : s0;

        var depths = new int[b];
        var logits = zeros([b, model.VocabSize], ScalarType.Float32, device);
        Tensor? prevLogp = null;          // [B, V] log p_{i−1} of every row (rows not yet probed hold garbage)
        var stable = new int[b];          // argmax: iterations in a row with an unchanged argmax
        var prevArgmax = new long[b];
        var active = Enumerable.Range(0, b).ToList();

        for (int i = 0; i < max && active.Count > 0; i++)
        {
            bool all = active.Count == b;
            var rows = all ? null : tensor(active.Select(x => (long)x).ToArray(), ScalarType.Int64).to(device);
            var sub = all ? ctx : Subset(ctx, rows!, model.ComputeDType);
            cache.ActiveRows = rows;
            var sA = all ? state : state.index_select(0, rows!);
            var eA = all ? e : e.index_select(0, rows!);
            var nA = model.Iterate(sA, eA, sub, pre + i * rec);
            int iter = i + 1;

            // Which active rows stop after this iteration.
            var exit = new bool[active.Count];
            for (int a = 0; a < active.Count; a++)
            {
                int r = active[a];
                exit[a] = iter == max || done[r] && iter >= 1 || depthOverride is not null && iter >= depthOverride(step, r);
            }
            Tensor? probe = null;
            if (depthOverride is null && o.Criterion == ExitCriterion.Latent)
            {
                var ratio = ((nA - sA).to(ScalarType.Float32).flatten(1).norm(1) / nA.to(ScalarType.Float32).flatten(1).norm(1).clamp_min(Tiny))
                    .cpu().data<float>().ToArray();
                for (int a = 0; a < active.Count; a++) exit[a] |= ratio[a] < threshold;
            }
            else if (depthOverride is null && o.NeedsDistribution)
            {
                probe = model.Logits(model.Coda(nA, sub, codaSlot), sub).squeeze(1);
                stats?.AddProbes(active.Count);
                var logp = probe.log_softmax(-1);
                if (i > 0)
                {
                    var prev = all ? prevLogp! : prevLogp!.index_select(0, rows!);
                    float[] score = o.Criterion switch
                    {
                        ExitCriterion.Kl => (logp.exp() * (logp - prev)).sum(-1).cpu().data<float>().ToArray(),
                        ExitCriterion.Entropy => (Entropy(logp) - Entropy(prev)).abs().cpu().data<float>().ToArray(),
                        _ => [],
                    };
                    if (o.Criterion == ExitCriterion.Argmax)
                    {
                        var am = logp.argmax(-1).cpu().data<long>().ToArray();
                        for (int a = 0; a < active.Count; a++)
                        {
                            int r = active[a];
                            stable[r] = am[a] == prevArgmax[r] ? stable[r] + 1 : 0;
                            prevArgmax[r] = am[a];
                            exit[a] |= stable[r] >= threshold;
                        }
                    }
                    else
                        for (int a = 0; a < active.Count; a++) exit[a] |= score[a] < threshold;
                }
                else if (o.Criterion == ExitCriterion.Argmax)
                {
                    var am = logp.argmax(-1).cpu().data<long>().ToArray();
                    for (int a = 0; a < active.Count; a++) prevArgmax[active[a]] = am[a];
                }
                if (all) { prevLogp?.Dispose(); prevLogp = logp; }
                else prevLogp!.index_copy_(0, rows!, logp);
            }

            if (all) state = nA;
            else state = state.index_copy(0, rows!, nA);

            var leaving = Enumerable.Range(0, active.Count).Where(a => exit[a]).ToArray();
            if (leaving.Length > 0)
            {
                Tensor outLogits;
                var leaveIdx = tensor(leaving.Select(a => (long)a).ToArray(), ScalarType.Int64).to(device);
                if (probe is not null)
                    outLogits = leaving.Length == active.Count ? probe : probe.index_select(0, leaveIdx);
                else
                {
                    // The coda runs once per token, on its final state, and writes the coda slots (§7.2).
                    bool allLeave = leaving.Length == b;
                    var leaveRows = tensor(leaving.Select(a => (long)active[a]).ToArray(), ScalarType.Int64).to(device);
                    var subLeave = allLeave ? ctx : Subset(ctx, leaveRows, model.ComputeDType);
                    cache.ActiveRows = allLeave ? null : leaveRows;
                    var sLeave = allLeave ? state : state.index_select(0, leaveRows);
                    outLogits = model.Logits(model.Coda(sLeave, subLeave, codaSlot), subLeave).squeeze(1);
                }
                var globalRows = tensor(leaving.Select(a => (long)active[a]).ToArray(), ScalarType.Int64).to(device);
                logits = leaving.Length == b ? outLogits : logits.index_copy(0, globalRows, outLogits);
                foreach (var a in leaving) depths[active[a]] = iter;
                active = active.Where((_, a) => !exit[a]).ToList();
            }
        }
        cache.ActiveRows = null;
        return (logits, state, depths);
    }

    static Tensor Entropy(Tensor logp) => -(logp.exp() * logp).sum(-1);

    /// <summary>The forward context restricted to some batch rows (rotary tables and mask rows); shares the weight casts.</summary>
    static ForwardContext Subset(ForwardContext ctx, Tensor rows, ScalarType dtype)
    {
        var a = ctx.Attention;
        Tensor Pick(Tensor t) => t.shape[0] == 1 ? t : t.index_select(0, rows);
        var sub = new AttentionContext
        {
            Cos = Pick(a.Cos), Sin = Pick(a.Sin), Mask = a.Mask is null ? null : Pick(a.Mask), Causal = a.Causal, Cache = a.Cache, Weights = a.Weights,
        };
        // Its own (empty) WeightCast: disposing the subset must not free the casts the parent context owns.
        return new ForwardContext(sub, new WeightCast(dtype), ctx.StateGenerator);
    }
}
