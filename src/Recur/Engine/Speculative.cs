// Self-speculative decoding for recurrent models (Geiping et al. 2025, the Huginn paper, §"Self-speculative decoding":
// a depth-recurrent model drafts with few iterations and verifies with many, no second model needed).
//
// One cycle, batch 1, greedy, after the last accepted token y (not yet in the cache, at position P):
//  1. draft: y, d₁, …, d_{K−1} go one at a time through the prelude, T_d iterations and the coda, each giving the
//     next draft token d_{i+1}; d_K then goes through the prelude and the T_d iterations only;
//  2. verify: the K + 1 rows (y, d₁ … d_K) run iterations T_d … T − 1 and the coda together, starting from the
//     states the draft left after its T_d iterations, and give the target's tokens g₀ … g_K;
//  3. keep the longest prefix with d_{i+1} = g_i (m tokens) and then g_m; roll every cache slot back to P + m + 1.
//
// The cache (METHOD §7.2, one slot per layer application) is shared between draft and target:
//  - the prelude does not depend on T, and iteration i < T_d of a T_d pass is iteration i of a T pass (iterations
//    run in order and each reads only its own slots), so what the draft writes there is what the target would write;
//    the verify does not recompute it;
//  - iterations ≥ T_d are written only by the verify;
//  - the coda depends on T: the draft's coda runs in the target's coda slots (earlier positions hold the target's
//    entries, which only makes the draft a little better) and those draft entries are rolled back before the verify.
// s_0 is drawn per position, in position order, from the recurrence's generator — a cycle's new positions in one
// [1, n, h] draw, which holds the values of the n one-position draws the fast decoder makes per token (libtorch fills a
// tensor element by element) — so every position sees the s_0 plain decoding gives it, whichever cycle reaches it.
//
// Exactness. The draft runs the fast decoder's own single-token block step (FastDecode.Step); the verify runs the
// same operations per row, in the same order, with the matrix products of all rows in one hand-off through GemvRows,
// which keeps the one-row kernel's reduction order for every row while loading each weight vector once for several
// rows (Model/FastRows.cs, which the prompt's prefill shares). So the verified logits, the cache and the greedy tokens
// are bit for bit those of plain decoding (tests/Recur.Tests/Model/SpeculativeTests.cs checks ids and caches,
// GemvRowsTests the products). That is why
// speculation needs the fast decode path: CPU, Llama or OLMo-2 blocks, fp32 or bf16 weights in the compute dtype, no
// q/k bias, no test-time noise, RECUR_FAST_DECODE not 0. (The fast path's batch tiles, Gemv.ProductRows, accumulate
// in another order and round differently from the one-row kernel, so the verify does not use them.)
using System.Diagnostics;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>
/// Self-speculative decoding (docs/speculative.md): draft <see cref="DraftTokens"/> tokens greedily at
/// <see cref="DraftRecurrences"/> iterations, verify them at the target T in one pass. Greedy, batch 1.
/// </summary>
public sealed record SpeculativeOptions(int DraftRecurrences, int DraftTokens)
{
    /// <summary>Parses <c>draft=T_d,k=K</c> (either order).</summary>
    public static SpeculativeOptions Parse(string text, string flag = "Speculate")
    {
        int? draft = null, k = null;
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = part.Split('=', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2 || !int.TryParse(kv[1], out int v))
                throw RecurUserException.About($"{flag}: '{part}' is not key=integer (expected draft=T_d,k=K, e.g. draft=2,k=4)", flag);
            switch (kv[0])
            {
                case "draft": draft = v; break;
                case "k": k = v; break;
                default: throw RecurUserException.About($"{flag}: unknown key '{kv[0]}' (expected draft=T_d,k=K, e.g. draft=2,k=4)", flag);
            }
        }
        if (draft is null || k is null) throw RecurUserException.About($"{flag}: give both draft=T_d and k=K (e.g. draft=2,k=4), got '{text}'", flag);
        return new SpeculativeOptions(draft.Value, k.Value).Validate(flag);
    }

    public SpeculativeOptions Validate(string flag = "Speculate")
    {
        if (DraftRecurrences < 1) throw RecurUserException.About($"{flag}: draft recurrences must be ≥ 1 (got {DraftRecurrences})", flag);
        if (DraftTokens < 1 || DraftTokens > MaxDraftTokens) throw RecurUserException.About($"{flag}: k must be between 1 and {MaxDraftTokens} (got {DraftTokens})", flag);
        return this;
    }

    /// <summary>Upper bound on K: a verify pass holds K + 1 rows.</summary>
    public const int MaxDraftTokens = 64;

    public override string ToString() => $"draft={DraftRecurrences},k={DraftTokens}";
}

/// <summary>Counters of a speculative generation (filled as it runs).</summary>
public sealed class SpeculativeStats
{
    /// <summary>Draft–verify cycles.</summary>
    public long Cycles { get; internal set; }
    /// <summary>Draft tokens proposed.</summary>
    public long Drafted { get; internal set; }
    /// <summary>Draft tokens the target agreed with.</summary>
    public long Accepted { get; internal set; }
    /// <summary>Tokens produced by cycles (accepted drafts plus one target token per cycle).</summary>
    public long Produced { get; internal set; }

    /// <summary>Rows the verify passes ran (K + 1 per cycle).</summary>
    public long VerifiedRows { get; internal set; }
    /// <summary>Wall time in draft passes (the draft's prelude, T_d iterations and coda), seconds.</summary>
    public double DraftSeconds { get; internal set; }
    /// <summary>Wall time in verify passes (iterations T_d … T − 1, the coda and the head for K + 1 rows), seconds.</summary>
    public double VerifySeconds { get; internal set; }

    /// <summary>Accepted ÷ drafted (0 before any draft).</summary>
    public double AcceptanceRate => Drafted == 0 ? 0 : (double)Accepted / Drafted;
    /// <summary>Tokens per cycle (1 means no draft was ever accepted).</summary>
    public double TokensPerCycle => Cycles == 0 ? 0 : (double)Produced / Cycles;
}

/// <summary>Greedy self-speculative generation for a recurrent model (see the file header).</summary>
public static class Speculative
{
    /// <summary>
    /// Like <see cref="Generation.Stream"/> for one prompt, greedy: the same token columns plain decoding yields, produced
    /// by draft-and-verify cycles. <paramref name="model"/> is a recurrent model (seen at the target T with
    /// <see cref="RecurrentModel.At"/>, whose generator also draws s_0).
    /// </summary>
    /// <exception cref="RecurUserException">Not a recurrent model, several prompts, sampling, T_d ≥ T, or a model the fast
    /// decode path does not handle.</exception>
    public static IEnumerable<TokenColumn> Stream(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, SpeculativeOptions speculate,
        SpeculativeStats? stats = null, CancellationToken cancel = default)
    {
        speculate.Validate();
        var (_, recurrence) = Check(model, speculate);
        if (!options.SamplingOrGreedy.Greedy)
            throw RecurUserException.About("Speculate: speculative decoding is greedy only: set Temperature to 0 or leave out speculation", "Speculate", "Temperature");
        if (prompts.Count == 0) return [];
        if (prompts.Count != 1)
            throw Error($"speculative decoding runs one prompt at a time (got {prompts.Count}); give one prompt or leave out speculation");
        var (_, maxLen, ids, _, _) = Generation.LeftPad(model, prompts, options);
        return Run(model, recurrence, maxLen, ids, options, speculate, stats ?? new SpeculativeStats(), cancel);
    }

    /// <summary><see cref="Stream"/> collected: the new tokens without the stop token.</summary>
    public static List<int>[] Generate(ICausalLM model, IReadOnlyList<int[]> prompts, GenerationOptions options, SpeculativeOptions speculate,
        SpeculativeStats? stats = null, Action<int, int>? onToken = null, CancellationToken cancel = default) =>
        Generation.Collect(prompts.Count, Stream(model, prompts, options, speculate, stats, cancel), onToken);

    /// <summary>Throws a <see cref="RecurUserException"/> saying why speculation cannot run on <paramref name="model"/> (seen at its target T), if it cannot.</summary>
    public static void EnsureSupported(ICausalLM model, SpeculativeOptions speculate) => Check(model, speculate.Validate());

    /// <summary>The recurrent model and target recurrence behind <paramref name="model"/>, or a clear error why speculation cannot run.</summary>
    internal static (RecurrentModel Model, Recurrence Recurrence) Check(ICausalLM model, SpeculativeOptions speculate)
    {
        var (m, r) = RecurrentModelAt.Unwrap(model) ?? throw Error("speculative decoding needs a recurrent model (it drafts at fewer recurrences); this is a plain decoder");
        var recurrence = r ?? Recurrence.Fixed(m.DefaultRecurrences);
        if (recurrence.WithGrad > 0) throw new ArgumentException("speculative decoding is inference only (the recurrence has grad iterations)", nameof(model));
        int t = recurrence.Iterations;
        if (speculate.DraftRecurrences >= t)
            throw Error($"the draft recurrences ({speculate.DraftRecurrences}) must be below the target T ({t})");
        var c = m.Config;
        string? why = !FastDecode.Enabled ? "RECUR_FAST_DECODE=0 turns the fast decode path off"
            : m.Device.type != TorchSharp.DeviceType.CPU ? $"the model is on {m.Device}, the fast decode path is CPU only"
            : c.BlockType is not (BlockType.Llama or BlockType.Olmo2) ? $"{c.BlockType} blocks are not on the fast decode path (Llama and OLMo-2 blocks only)"
            : m.ComputeDType is not (ScalarType.Float32 or ScalarType.BFloat16) ? $"compute dtype {m.ComputeDType} (fp32 or bf16 only)"
            : c.QkBias ? "the model has q/k biases"
            : c.TestTimeNoise != 0 ? $"the model's test_time_noise is {c.TestTimeNoise} (speculation needs the noise-free recurrence; s_0 is fine)"
            : null;
        if (why is not null) throw Error($"speculative decoding runs on the fast decode path and cannot here: {why}");
        return (m, recurrence);
    }

    /// <summary>A user error about the speculation setting, named as the API names it (the CLI shows its flag).</summary>
    internal static RecurUserException Error(string message) => RecurUserException.About($"Speculate: {message}", "Speculate");

    static IEnumerable<TokenColumn> Run(ICausalLM model, Recurrence recurrence, int maxLen, long[] ids, GenerationOptions options, SpeculativeOptions speculate,
        SpeculativeStats stats, CancellationToken cancel)
    {
        var stop = new HashSet<int>(options.StopIds ?? []);
        var done = new bool[1];
        int max = options.MaxNewTokens, step = 0;
        if (max < 1) yield break;
        using var decoder = new SpeculativeDecoder(model, speculate.DraftRecurrences, maxLen + max + speculate.DraftTokens + 1);
        cancel.ThrowIfCancellationRequested();
        var pending = new List<int> { decoder.Prefill(ids) };
        while (true)
        {
            foreach (int token in pending)
            {
                bool emitted = !stop.Contains(token);
                if (!emitted) done[0] = true;
                yield return new TokenColumn(step++, [token], [emitted], done);
                if (done[0] || step >= max) yield break;
            }
            cancel.ThrowIfCancellationRequested();
            // Never draft past the budget: the cycle's own target token is the (k + 1)-th.
            int k = Math.Min(speculate.DraftTokens, max - step - 1);
            double draftBefore = decoder.DraftSeconds, verifyBefore = decoder.VerifySeconds;
            var (tokens, accepted) = decoder.Cycle(pending[^1], k);
            stats.Cycles++;
            stats.Drafted += k;
            stats.Accepted += accepted;
            stats.Produced += tokens.Length;
            stats.VerifiedRows += k + 1;
            stats.DraftSeconds += decoder.DraftSeconds - draftBefore;
            stats.VerifySeconds += decoder.VerifySeconds - verifyBefore;
            pending = [.. tokens];
        }
    }
}

/// <summary>
/// The draft–verify machinery over one KV cache at the target T (see the file header); one generation, batch 1.
/// Tests drive it cycle by cycle to compare its cache with plain decoding's.
/// </summary>
internal sealed unsafe class SpeculativeDecoder : IDisposable
{
    sealed record Weights(FastDecode.Block[] Prelude, FastDecode.Block[] Core, FastDecode.Block[] Coda,
        Gemv.Matrix Embedding, Gemv.Matrix Adapter, Gemv.Matrix Norm, Gemv.Matrix Head);

    readonly ICausalLM _view;
    readonly RecurrentModel _m;
    readonly Recurrence _recurrence;
    readonly Weights _w;
    readonly FastDecode.Shape _shape;
    readonly FastDecode.Workspace _work;
    readonly int _t, _draft, _p, _r, _c, _codaSlot, _h;
    readonly List<float[]> _s0 = [];
    int _firstDecoded = -1;

    public SpeculativeDecoder(ICausalLM model, int draftRecurrences, int capacity)
    {
        (_m, _recurrence) = Speculative.Check(model, new SpeculativeOptions(draftRecurrences, 1));
        _view = model;
        var c = _m.Config;
        (_p, _r, _c) = c.Shape;
        _t = _recurrence.Iterations;
        _draft = draftRecurrences;
        _codaSlot = _p + _r * _t;
        _w = Plan(_m) ?? throw Speculative.Error($"speculative decoding runs on the fast decode path and cannot here: the weights are not contiguous {_m.ComputeDType} tensors (load the model in its compute dtype)");
        _shape = FastDecode.ShapeOf(c.ToBlockConfig(), _m.RopeFor(_m.Device), _m.ComputeDType);
        _work = new FastDecode.Workspace(1, _shape);
        _h = _shape.Hidden;
        // MatVec as plain decoding's cache: the prefill's last-row head product takes the same kernel.
        Cache = new KvCache(c.EffectiveDepth(_t), capacity) { MatVec = true };
    }

    public KvCache Cache { get; }

    /// <summary>Wall time so far in draft passes and in verify passes (a plain step, K = 0, counts as a verify of one row).</summary>
    public double DraftSeconds => Stopwatch.GetElapsedTime(0, _draftTicks).TotalSeconds;
    public double VerifySeconds => Stopwatch.GetElapsedTime(0, _verifyTicks).TotalSeconds;
    long _draftTicks, _verifyTicks;

    /// <summary>The fast decoder's view of the weights (the tensors FastDecoder reads, in the same roles).</summary>
    static Weights? Plan(RecurrentModel m)
    {
        var tf = m.transformer;
        var type = m.Config.BlockType;
        var blocks = tf.prelude.Concat(tf.core_block).Concat(tf.coda).ToArray();
        var perBlock = blocks.Select(k =>
        {
            Tensor[] ts = [k.attn.Wqkv.weight!, k.attn.proj.weight!, k.mlp.fc.weight!, k.mlp.proj.weight!, k.norm_1.weight, k.norm_2.weight];
            return type == BlockType.Olmo2 ? [.. ts, k.attn.q_norm!.weight, k.attn.k_norm!.weight] : ts;
        }).ToArray();
        var tensors = perBlock.SelectMany(x => x).Concat([tf.wte.weight!, tf.adapter.weight!, tf.ln_f.weight, m.lm_head.weight!]).ToArray();
        FastDecode.Plan<Weights>? plan = null;
        plan = FastDecode.Reuse(ref plan, tensors, m.ComputeDType, () =>
        {
            var all = perBlock.Select(ts =>
            {
                var t = ts.Select(FastDecode.M).ToArray();
                return type == BlockType.Olmo2 ? new FastDecode.Block(type, [t[0]], t[1], [t[2]], t[3], t[4], t[5], t[6], t[7])
                    : new FastDecode.Block(type, [t[0]], t[1], [t[2]], t[3], t[4], t[5]);
            }).ToArray();
            int pre = m.Config.NLayersInPrelude, rec = m.Config.NLayersInRecurrentBlock;
            return new Weights(all[..pre], all[pre..(pre + rec)], all[(pre + rec)..],
                FastDecode.M(tensors[^4]), FastDecode.M(tensors[^3]), FastDecode.M(tensors[^2]), FastDecode.M(tensors[^1]));
        });
        return plan?.Payload;
    }

    /// <summary>Step 0 of plain decoding, unchanged: the prompt [1, S] through the model at T; returns the first token.</summary>
    public int Prefill(long[] ids)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var input = tensor(ids, [1, ids.Length]);
        var logits = (FastDecoder.TryForward(_view, input, null, Cache) ?? _view.Forward(input, null, Cache, lastOnly: true)).squeeze(1);
        _firstDecoded = Cache.Length;
        return (int)logits.argmax(-1).item<long>();
    }

    /// <summary>
    /// One cycle from <paramref name="last"/> (the newest token, not yet in the cache) with <paramref name="k"/> drafts
    /// (0: one plain step at T). Returns the accepted drafts then the target's next token, and how many drafts were
    /// accepted; the cache then holds exactly the positions up to the last accepted one.
    /// </summary>
    public (int[] Tokens, int Accepted) Cycle(int last, int k)
    {
        if (_firstDecoded < 0) throw new InvalidOperationException("Prefill first");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int at = Cache.Length;
        long started = Stopwatch.GetTimestamp();
        if (k == 0)
        {
            var (_, s) = Front(last, at, _t, at);
            var plain = ArgMax(CodaLogits(s, 1, Positions(at, 1), new FastRows.Scratch(1, _shape)), 1)[0];
            _verifyTicks += Stopwatch.GetTimestamp() - started;
            return ([plain], 0);
        }
        var es = new float[k + 1][];
        var ss = new float[k + 1][];
        var tokens = new int[k + 1];
        tokens[0] = last;
        for (int i = 0; i <= k; i++)
        {
            (es[i], ss[i]) = Front(tokens[i], at + i, _draft, at + k);
            if (i == k) break;
            var x = (float[])ss[i].Clone();
            var rows = FastDecode.Rows.Of(1, null, at + i, _shape.InvFreq);
            for (int j = 0; j < _c; j++) FastDecode.Step(x, _w.Coda[j], _shape, Cache, _codaSlot + j, rows, _work);
            tokens[i + 1] = DraftArgMax(x);
        }
        long drafted = Stopwatch.GetTimestamp(), products = FastRows.ProductTicks;
        _draftTicks += drafted - started;
        // The draft's coda entries were made from s_{T_d}: forget them; the verify writes the target's.
        Cache.Truncate(at, _codaSlot, _c);
        int n = k + 1;
        var positions = Positions(at, n);
        var scratch = new FastRows.Scratch(n, _shape);
        // The rows' states and embeddings side by side, [n × h] each.
        var states = new float[n * _h];
        var embeddings = new float[n * _h];
        for (int r = 0; r < n; r++) { ss[r].CopyTo(states, r * _h); es[r].CopyTo(embeddings, r * _h); }
        for (int i = _draft; i < _t; i++)
        {
            FastRows.Adapter(_w.Adapter, states, embeddings, n, _h, scratch);
            for (int j = 0; j < _r; j++) StepRows(states, n, _w.Core[j], _p + i * _r + j, positions, scratch);
        }
        var target = ArgMax(CodaLogits(states, n, positions, scratch), n);
        int m = 0;
        while (m < k && tokens[m + 1] == target[m]) m++;
        Cache.Truncate(at + m + 1);
        _verifyTicks += Stopwatch.GetTimestamp() - drafted;
        ProductTicks += FastRows.ProductTicks - products;
        var result = new int[m + 1];
        Array.Copy(tokens, 1, result, 0, m);
        result[m] = target[m];
        return (result, m);
    }

    /// <summary>
    /// s_0 of <paramref name="position"/>, drawn in position order from the recurrence's generator: the positions up to
    /// <paramref name="through"/> not drawn yet in one [1, n, h] draw, which holds the values of n one-position draws
    /// (libtorch fills it element by element, as the prefill's draw; FastPrefillTests), so every position gets the s_0
    /// plain decoding's [1, 1, h] draw gives it, with one libtorch call per cycle instead of one per position.
    /// </summary>
    float[] InitialState(int position, int through)
    {
        int have = _firstDecoded + _s0.Count;
        if (have <= position)
        {
            int n = Math.Max(position, through) - have + 1;
            using var scope = NewDisposeScope();
            var all = _m.InitialState(zeros([1, n, _h], _m.ComputeDType), _recurrence.StateGenerator).to(ScalarType.Float32).reshape(-1).data<float>().ToArray();
            for (int i = 0; i < n; i++) _s0.Add(all[(i * _h)..((i + 1) * _h)]);
        }
        return (float[])_s0[position - _firstDecoded].Clone();
    }

    /// <summary>One token through the embedding, the prelude and <paramref name="iterations"/> iterations (FastDecoder's order): (e, s).</summary>
    (float[] E, float[] State) Front(int token, int position, int iterations, int through)
    {
        var rows = FastDecode.Rows.Of(1, null, position, _shape.InvFreq);
        var e = FastDecode.Embed(_w.Embedding, [(long)token], _m.Config.InitValues.EmbedScale);
        int slot = 0;
        foreach (var blk in _w.Prelude) FastDecode.Step(e, blk, _shape, Cache, slot++, rows, _work);
        var state = InitialState(position, through);
        var joined = new float[2 * _h];
        for (int i = 0; i < iterations; i++)
        {
            Array.Copy(state, 0, joined, 0, _h);
            Array.Copy(e, 0, joined, _h, _h);
            FastDecode.Project([_w.Adapter], joined, state, 1);
            foreach (var blk in _w.Core) FastDecode.Step(state, blk, _shape, Cache, slot++, rows, _work);
        }
        return (e, state);
    }

    /// <summary>The coda (target slots) and the head for the <paramref name="n"/> rows of <paramref name="states"/> [n × h], changed in place: logits [n × V].</summary>
    float[] CodaLogits(float[] states, int n, FastDecode.Rows[] positions, FastRows.Scratch sc)
    {
        for (int j = 0; j < _c; j++) StepRows(states, n, _w.Coda[j], _codaSlot + j, positions, sc);
        var logits = new float[n * _w.Head.Rows];
        fixed (float* x = states, norm = sc.Norm)
            for (int r = 0; r < n; r++) FastDecode.RmsNorm(x + r * _h, norm + r * _h, _h, _w.Norm, _shape.Eps);
        FastRows.Product([_w.Head], sc.Norm, n, logits);
        return logits;
    }

    FastDecode.Rows[] Positions(int first, int count) => FastRows.Positions(first, count, _shape.InvFreq);

    /// <summary>Greedy tokens as plain decoding picks them (Sampler.Next: Greedy.Argmax, libtorch's argmax rule) over fp32 logits [n × V].</summary>
    static int[] ArgMax(float[] logits, int n)
    {
        int v = logits.Length / n;
        var ids = new int[n];
        fixed (float* l = logits)
            for (int r = 0; r < n; r++) ids[r] = Greedy.Argmax(l + (long)r * v, v);
        return ids;
    }

    /// <summary>The draft's token: only ever compared with the target's, so any consistent argmax does.</summary>
    int DraftArgMax(float[] x)
    {
        var norm = new float[_h];
        var logits = new float[_w.Head.Rows];
        fixed (float* xp = x, np = norm) FastDecode.RmsNorm(xp, np, _h, _w.Norm, _shape.Eps);
        GemvRows.Product([_w.Head], norm, 1, logits);
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    void StepRows(float[] x, int n, FastDecode.Block w, int slot, FastDecode.Rows[] rows, FastRows.Scratch sc) =>
        FastRows.Step(x, n, w, _shape, Cache, slot, rows, sc, _work);

    /// <summary>Stopwatch ticks spent in the verify's multi-row products (bench: how much of a verify row they are); process-wide.</summary>
    internal static long ProductTicks;

    public void Dispose() => Cache.Dispose();
}
