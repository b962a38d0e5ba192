// Several consecutive positions of one sequence through the fast decode path, as rows of one pass per block: the
// prompt's prefill (Engine/FastDecoder.cs) and the verify of self-speculative decoding (Engine/Speculative.cs).
//
// Each row runs the operations FastDecode.Step runs for one token at its position, in the same order, with the same
// helpers (RMSNorm, q/k norm, RoPE, the cache write, attention over the cache, SwiGLU, the residual). The rows' keys and
// values are all written before any row attends, and row i attends over the positions up to its own, so it sees exactly
// what a one-token step at its position sees. Only the matrix products of all rows go out together, through GemvRows,
// which gives every row the one-row kernel's outputs bit for bit while loading each weight vector once for several rows
// (GemvRows.cs). So n rows through here leave the same hidden states and the same cache bits as n one-token steps — the
// property tests/Recur.Tests/Model/FastPrefillTests.cs and SpeculativeTests.cs check. (Gemv.ProductRows, the batch
// tiles of a left-padded batch step, accumulates in another order, so it is not used here.)
//
// No TorchSharp tensor in or out: weights by address (Gemv.Matrix), activations in fp32 arrays, the cache through
// IRawKvCache, so a libtorch-free caller can use it as it uses FastDecode.Step.
using System.Diagnostics;
using static TorchSharp.torch;

namespace Recur.Model;

internal static unsafe class FastRows
{
    /// <summary>
    /// Rows per pass of a prefill: bounds the activation buffers at this many rows of the widest activation. Where a
    /// prompt is cut changes no bit (a later chunk's rows read the earlier ones through the cache, as a step would).
    /// </summary>
    public const int Chunk = 64;

    /// <summary>Activation buffers of one multi-row pass, [n × width] each (FastDecode.Workspace's, without its batch semantics).</summary>
    internal sealed class Scratch(int n, FastDecode.Shape s)
    {
        public int Rows { get; } = n;
        public readonly float[] Norm = new float[n * s.Hidden], Out = new float[n * s.Hidden], Qkv = new float[n * s.QkvWidth],
            Attn = new float[n * s.Heads * s.HeadDim], GateUp = new float[n * 2 * s.Intermediate], Act = new float[n * s.Intermediate],
            Joined = new float[n * 2 * s.Hidden];
    }

    /// <summary>The rotary angles of <paramref name="count"/> consecutive positions from <paramref name="first"/>, one row each (the same for every layer).</summary>
    public static FastDecode.Rows[] Positions(int first, int count, float[] invFreq)
    {
        var rows = new FastDecode.Rows[count];
        for (int r = 0; r < count; r++) rows[r] = FastDecode.Rows.Of(1, null, first + r, invFreq);
        return rows;
    }

    /// <summary>
    /// FastDecode.Step of one row, for the <paramref name="n"/> consecutive positions of <paramref name="rows"/> (batch 1),
    /// in one pass over the block: x [n × h] is changed in place and each row's K/V written to <paramref name="slot"/>
    /// (see the file header for why every bit is a one-token step's).
    /// </summary>
    public static void Step(float[] x, int n, FastDecode.Block w, FastDecode.Shape s, IRawKvCache cache, int slot, FastDecode.Rows[] rows, Scratch sc,
        FastDecode.Workspace ws)
    {
        int h = s.Hidden, nh = s.Heads, nkv = s.KvHeads, d = s.HeadDim, width = s.QkvWidth, inter = s.Intermediate;
        bool llama = w.Type == BlockType.Llama;
        // Reserve every row's position first: a later reservation may move the buffers.
        int first = 0, cap = 0;
        IntPtr kp = 0, vp = 0;
        for (int r = 0; r < n; r++)
        {
            var a = cache.AppendColumn(slot, 1, nkv, d, s.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32);
            if (r == 0) first = a.Position;
            (kp, vp, cap) = (a.K, a.V, a.Capacity);
        }
        if (rows.Length < n || rows[0].Length != first + 1) throw new InvalidOperationException($"KV cache slot {slot} is at position {first}, the rows at {rows[0].Length - 1}");
        fixed (float* xp = x, norm = sc.Norm, qkv = sc.Qkv, attn = sc.Attn)
        {
            // Attention half: Llama normalises its input, OLMo-2 its output.
            if (llama) for (int r = 0; r < n; r++) FastDecode.RmsNorm(xp + r * h, norm + r * h, h, w.Norm1, s.Eps);
            Product(w.Qkv, llama ? sc.Norm : x, n, sc.Qkv);
            for (int r = 0; r < n; r++)
            {
                float* q = qkv + r * width, k = q + nh * d, v = k + nkv * d;
                if (w.QNorm is { } qn) { FastDecode.RmsNorm(q, q, nh * d, qn, s.Eps); FastDecode.RmsNorm(k, k, nkv * d, w.KNorm!.Value, s.Eps); }
                FastDecode.Rotate(q, nh, d, rows[r], 0);
                FastDecode.Rotate(k, nkv, d, rows[r], 0);
                for (int hk = 0; hk < nkv; hk++)
                {
                    long at = ((long)hk * cap + first + r) * d;
                    FastDecode.Write(kp, at, k + hk * d, d, s.Bf16);
                    FastDecode.Write(vp, at, v + hk * d, d, s.Bf16);
                }
            }
            for (int r = 0; r < n; r++) FastDecode.Attend(qkv + r * width, width, attn + r * nh * d, nh, nkv, d, kp, vp, cap, rows[r], s.Bf16, ws);
        }
        Product([w.O], sc.Attn, n, sc.Out);
        fixed (float* xp = x, output = sc.Out) FastDecode.Residual(xp, output, n, h, llama ? null : w.Norm1, s.Eps);
        // MLP half.
        fixed (float* xp = x, norm = sc.Norm)
            if (llama) for (int r = 0; r < n; r++) FastDecode.RmsNorm(xp + r * h, norm + r * h, h, w.Norm2, s.Eps);
        Product(w.GateUp, llama ? sc.Norm : x, n, sc.GateUp);
        fixed (float* gu = sc.GateUp, act = sc.Act)
            for (int r = 0; r < n; r++) FastDecode.SwiGlu(gu + r * 2 * inter, act + r * inter, inter);
        Product([w.Down], sc.Act, n, sc.Out);
        fixed (float* xp = x, output = sc.Out) FastDecode.Residual(xp, output, n, h, llama ? null : w.Norm2, s.Eps);
    }

    /// <summary>The adapter on concat[s, e] per row, state first (METHOD §2.1); the states [n × h] are replaced.</summary>
    public static void Adapter(Gemv.Matrix adapter, float[] states, float[] embeddings, int n, int h, Scratch sc)
    {
        var joined = sc.Joined;
        for (int r = 0; r < n; r++)
        {
            Array.Copy(states, r * h, joined, r * 2 * h, h);
            Array.Copy(embeddings, r * h, joined, r * 2 * h + h, h);
        }
        Product([adapter], joined, n, states);
    }

    /// <summary>Stopwatch ticks spent in multi-row products (n > 1) so far, process-wide (bench: their share of a verify).</summary>
    internal static long ProductTicks;

    /// <summary>
    /// The one-row product of the fast path for the <paramref name="n"/> rows of x: y_r = [W₁; W₂; …]·x_r, each y_r bit
    /// for bit the one-row product's (GemvRows), the weight rows split over the kernel threads once for all rows.
    /// </summary>
    public static void Product(Gemv.Matrix[] ms, float[] x, int n, float[] y)
    {
        long started = Stopwatch.GetTimestamp();
        GemvRows.Product(ms, x, n, y);
        if (n > 1) Interlocked.Add(ref ProductTicks, Stopwatch.GetTimestamp() - started);
    }

    /// <summary>
    /// The prompt <paramref name="ids"/> of one sequence through a plain decoder's blocks at the cache's next positions
    /// (slot i = block i): the last position's hidden state [h] before the final norm, as the last of as many one-token
    /// steps would leave it, and every position's K/V in the cache.
    /// </summary>
    public static float[] Decoder(FastDecode.Block[] blocks, Gemv.Matrix embedding, FastDecode.Shape s, IRawKvCache cache, ReadOnlySpan<long> ids,
        FastDecode.Workspace ws)
    {
        int h = s.Hidden;
        var sc = new Scratch(Math.Min(Chunk, ids.Length), s);
        float[] x = [];
        int n = 0;
        for (int c0 = 0; c0 < ids.Length; c0 += Chunk)
        {
            n = Math.Min(Chunk, ids.Length - c0);
            var rows = Positions(cache.Length, n, s.InvFreq);
            x = FastDecode.Embed(embedding, ids.Slice(c0, n));
            for (int i = 0; i < blocks.Length; i++) Step(x, n, blocks[i], s, cache, i, rows, sc, ws);
        }
        return x[((n - 1) * h)..(n * h)];
    }

    /// <summary>
    /// The prompt <paramref name="ids"/> of one sequence through a recurrent model at the cache's next positions: the
    /// prelude (slots 0 … p − 1), <paramref name="iterations"/> times the adapter and the core (iteration i in slots
    /// p + i·r …), the coda (from p + r·T), as one-token steps run them (FastDecoder.TryRecurrent). <paramref name="s0"/>
    /// is every position's initial state [S × h] (fp32 values of the compute dtype). Returns the last position's hidden
    /// state [h] before the final norm.
    /// </summary>
    public static float[] Recurrent(FastDecode.Block[] prelude, FastDecode.Block[] core, FastDecode.Block[] coda, Gemv.Matrix embedding, Gemv.Matrix adapter,
        double embedScale, int iterations, FastDecode.Shape s, IRawKvCache cache, ReadOnlySpan<long> ids, ReadOnlySpan<float> s0, FastDecode.Workspace ws)
    {
        int h = s.Hidden, p = prelude.Length, r = core.Length;
        if (s0.Length != ids.Length * h) throw new ArgumentException($"s_0 holds {s0.Length} values, {ids.Length} positions × {h} need {ids.Length * h}", nameof(s0));
        var sc = new Scratch(Math.Min(Chunk, ids.Length), s);
        float[] state = [];
        int n = 0;
        for (int c0 = 0; c0 < ids.Length; c0 += Chunk)
        {
            n = Math.Min(Chunk, ids.Length - c0);
            var rows = Positions(cache.Length, n, s.InvFreq);
            var e = FastDecode.Embed(embedding, ids.Slice(c0, n), embedScale);
            for (int j = 0; j < p; j++) Step(e, n, prelude[j], s, cache, j, rows, sc, ws);
            state = s0.Slice(c0 * h, n * h).ToArray();
            for (int i = 0; i < iterations; i++)
            {
                Adapter(adapter, state, e, n, h, sc);
                for (int j = 0; j < r; j++) Step(state, n, core[j], s, cache, p + i * r + j, rows, sc, ws);
            }
            for (int j = 0; j < coda.Length; j++) Step(state, n, coda[j], s, cache, p + r * iterations + j, rows, sc, ws);
        }
        return state[((n - 1) * h)..(n * h)];
    }
}
