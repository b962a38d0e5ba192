// Decoding one token per sequence outside libtorch's op dispatch, for one sequence or a left-padded batch.
//
// A decode step of a 12-layer model issues ~50 small libtorch ops per layer; each costs microseconds of dispatch
// and allocation, which at batch 1 is as long as reading the weights (bench/RESULTS.md). This path runs the
// same math directly on the tensors' memory: RMSNorm, the projections (Gemv.cs: a streaming matrix–vector kernel
// for one row, a register-tiled one for several), RoPE (rotate-half, the model's own inverse frequencies incl.
// llama3 scaling), the KV-cache write, attention over the cache and SwiGLU, for Llama blocks (pre-norm) and OLMo-2
// blocks (norm on each sub-layer's output, q/k RMSNorm over the full projected vectors before RoPE; METHOD §2.3).
// Rows of a batch carry their own positions and key mask, read from the generation's padding mask exactly as
// Ops.Layout builds them: a left-padded row's positions start at its first real token and its pads are never
// attended to. The residual stream and all intermediate values stay fp32 (bf16 weights and KV cache are widened
// on read), so in bf16 it is slightly more accurate than the op-by-op path, which rounds to bf16 after every op;
// in fp32 the two agree to rounding (tests/Recur.Tests/Model/FastDecodeTests.cs).
//
// The per-token helpers (norms, RoPE, attention, SwiGLU) are compiled fully optimised on their first call
// (AggressiveOptimization, as the Gemv kernels): with tiered compilation a short run, e.g. a `recur generate` of a
// hundred tokens on a small model, otherwise spends its first tokens in unoptimised code that calls the vector
// intrinsics as functions.
//
// Taken only when it applies: no autograd, CPU, one new token per row (or one sequence's whole prompt, which runs as
// rows through each block: FastRows.cs), a KvCache, Llama or OLMo-2 blocks, weights already in the compute dtype
// (fp32 or bf16). RECUR_FAST_DECODE=0 turns it off.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>A KV cache the fast path can write one position per row into directly (Engine.KvCache).</summary>
internal interface IRawKvCache : IKvCache
{
    /// <summary>
    /// Room for one more position in a slot, for every row of a batch of <paramref name="batch"/>: the addresses of the
    /// slot's whole K and V buffers [batch, n_kv, capacity, d] (contiguous, in CPU memory), their capacity, and the
    /// position to write. No device argument: this path runs on the CPU only, and naming libtorch's CPU device would
    /// load libtorch, which the libtorch-free generation path (Engine/MappedDecoder.cs) must not.
    /// </summary>
    (IntPtr K, IntPtr V, int Capacity, int Position) AppendColumn(int slot, long batch, long kvHeads, long headDim, ScalarType dtype);
}

internal static unsafe class FastDecode
{
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("RECUR_FAST_DECODE") != "0";

    /// <summary>
    /// One block's weights by address: projections whose outputs are concatenated (q|k|v, gate|up) and norms (as 1-row
    /// matrices). Llama: Norm1/Norm2 are the input and post-attention norms. OLMo-2: they are the norms on the attention
    /// and MLP outputs, and QNorm/KNorm are the q/k norms.
    /// </summary>
    internal sealed record Block(BlockType Type, Gemv.Matrix[] Qkv, Gemv.Matrix O, Gemv.Matrix[] GateUp, Gemv.Matrix Down,
        Gemv.Matrix Norm1, Gemv.Matrix Norm2, Gemv.Matrix? QNorm = null, Gemv.Matrix? KNorm = null);

    /// <summary>
    /// A model's weights by address, built once and reused while the model holds the same tensor objects (checked
    /// per token by reference, no native calls). In-place updates (an optimizer step) keep addresses, so they are
    /// seen; replaced tensors (<c>to()</c>, loading) rebuild the plan.
    /// </summary>
    internal sealed class Plan<T>(Tensor[] sources, ScalarType dtype, T payload)
    {
        public T Payload { get; } = payload;
        public bool Matches(Tensor[] current, ScalarType computeDType)
        {
            if (computeDType != dtype || current.Length != sources.Length) return false;
            for (int i = 0; i < current.Length; i++) if (!ReferenceEquals(current[i], sources[i])) return false;
            return true;
        }
    }

    /// <summary>
    /// The cached plan when the tensors are the same objects, else a new one from <paramref name="build"/>, or null when
    /// a tensor is not contiguous or not in <paramref name="dtype"/> (the op path casts; this path reads memory as is).
    /// </summary>
    public static Plan<T>? Reuse<T>(ref Plan<T>? cached, Tensor[] tensors, ScalarType dtype, Func<T> build)
    {
        if (cached is not null && cached.Matches(tensors, dtype)) return cached;
        cached = tensors.All(w => w.dtype == dtype && w.is_contiguous()) ? new Plan<T>(tensors, dtype, build()) : null;
        return cached;
    }

    public static Gemv.Matrix M(Tensor t) => t.dim() == 1 ? new(Gemv.Address(t), 1, (int)t.shape[0], t.dtype == ScalarType.BFloat16) : Gemv.Matrix.Of(t);

    /// <summary>Dimensions and constants shared by every block.</summary>
    internal sealed record Shape(int Hidden, int Heads, int KvHeads, int HeadDim, int Intermediate, float Eps, float[] InvFreq, bool Bf16)
    {
        public int QkvWidth => (Heads + 2 * KvHeads) * HeadDim;
    }

    /// <summary>
    /// Prompts of one sequence (ids [1, S], no padding mask) run as rows through each block (FastRows.cs), bit for bit
    /// as S one-token steps; off, they go op by op through the model's Forward (bench: before/after in one process).
    /// </summary>
    public static bool MultiRowPrefill { get; set; } = true;

    /// <summary>
    /// Whether a forward of <paramref name="ids"/> [B, 1] with <paramref name="keyPadding"/> (null, or [B, past + 1] over
    /// the cache's past positions and the new one), or of one sequence's prompt [1, S] without a mask
    /// (<see cref="MultiRowPrefill"/>), can run here.
    /// </summary>
    public static bool Applies(Tensor ids, Tensor? keyPadding, IKvCache? cache, ScalarType dtype, BlockType type, Device device) =>
        Enabled && !is_grad_enabled() && cache is IRawKvCache && (type == BlockType.Llama || type == BlockType.Olmo2)
        && device.type == DeviceType.CPU && (dtype == ScalarType.Float32 || dtype == ScalarType.BFloat16)
        && ids.dim() == 2 && ids.shape[0] >= 1 && (ids.shape[1] == 1 || (MultiRowPrefill && ids.shape[0] == 1 && ids.shape[1] > 1 && keyPadding is null))
        && (keyPadding is null || (keyPadding.dim() == 2 && keyPadding.shape[0] == ids.shape[0] && keyPadding.shape[1] == cache.Length + 1
                                   && keyPadding.device_type == DeviceType.CPU));

    public static Shape ShapeOf(ModelConfig c, Rope rope, ScalarType dtype) =>
        new(c.HiddenSize, c.NumAttentionHeads, c.KvHeads, c.HeadDimension, c.IntermediateSize, (float)c.RmsNormEps, rope.InverseFrequencies, dtype == ScalarType.BFloat16);

    /// <summary>
    /// The rows of one step: each row's position and rotary angles, and which cached positions it may attend to
    /// (null: all), as Ops.Layout derives them from the padding mask (HF position ids: cumsum − 1, pads at 1; a pad
    /// query sees itself).
    /// </summary>
    internal sealed class Rows
    {
        public int Count { get; private init; }
        /// <summary>Positions 0 … Length − 1 of the slot after this step's write.</summary>
        public int Length { get; private init; }
        public bool[]? Allowed { get; private init; } // [Count · Length]
        public float[] Cos { get; private init; } = []; // [Count · d/2]
        public float[] Sin { get; private init; } = [];

        public static Rows Of(long batch, Tensor? keyPadding, int past, float[] invFreq)
        {
            int b = (int)batch, len = past + 1, half = invFreq.Length;
            var pos = new int[b];
            bool[]? allowed = null;
            if (keyPadding is null) Array.Fill(pos, past);
            else
            {
                using var scope = NewDisposeScope();
                var real = keyPadding.to(ScalarType.Bool).contiguous().data<bool>().ToArray();
                allowed = new bool[b * len];
                for (int r = 0; r < b; r++)
                {
                    int count = 0;
                    for (int t = 0; t < len; t++)
                    {
                        bool isReal = real[r * len + t];
                        if (isReal) count++;
                        allowed[r * len + t] = isReal || t == past;
                    }
                    pos[r] = real[r * len + past] ? count - 1 : 1;
                }
            }
            var cos = new float[b * half];
            var sin = new float[b * half];
            for (int r = 0; r < b; r++)
                for (int i = 0; i < half; i++)
                {
                    float a = pos[r] * invFreq[i];
                    cos[r * half + i] = MathF.Cos(a);
                    sin[r * half + i] = MathF.Sin(a);
                }
            return new Rows { Count = b, Length = len, Allowed = allowed, Cos = cos, Sin = sin };
        }
    }

    /// <summary>Activation buffers of one generation, [B × width] each, reused by every step and block.</summary>
    internal sealed class Workspace(int batch, Shape s)
    {
        public int Batch { get; } = batch;
        public readonly float[] Norm = new float[batch * s.Hidden], Out = new float[batch * s.Hidden], Qkv = new float[batch * s.QkvWidth],
            Attn = new float[batch * s.Heads * s.HeadDim], GateUp = new float[batch * 2 * s.Intermediate], Act = new float[batch * s.Intermediate],
            Joined = new float[batch * 2 * s.Hidden];
        readonly float[][] _scores = new float[KernelThreads.Width][];

        /// <summary>Attention scores of one head for the part of the work running on thread <paramref name="part"/>.</summary>
        public float[] Scores(int part, int length)
        {
            var a = _scores[part];
            if (a is null || a.Length < length) _scores[part] = a = new float[Math.Max(length, 2 * (a?.Length ?? 64))];
            return a;
        }
    }

    /// <summary>The embedding rows of the tokens in <paramref name="ids"/> [B, 1], widened to fp32, [B × h].</summary>
    public static float[] Embed(Gemv.Matrix embedding, Tensor ids, double scale = 1.0) =>
        Embed(embedding, ids.shape[0] == 1 ? new[] { ids.item<long>() } : ids.contiguous().data<long>().ToArray(), scale);

    /// <summary>The embedding rows of <paramref name="tokens"/>, widened to fp32 and scaled, [n × h].</summary>
    public static float[] Embed(Gemv.Matrix embedding, ReadOnlySpan<long> tokens, double scale = 1.0)
    {
        int h = embedding.Cols;
        var x = new float[tokens.Length * h];
        for (int r = 0; r < tokens.Length; r++)
        {
            long id = tokens[r];
            if (id < 0 || id >= embedding.Rows) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} outside the vocabulary of {embedding.Rows}");
            Read(embedding, id * h, x.AsSpan(r * h, h));
        }
        if (scale != 1.0) for (int i = 0; i < x.Length; i++) x[i] = (float)(x[i] * scale);
        return x;
    }

    /// <summary>x ← Block(x) for every row [B × h] at the cache's next position, writing its K/V to <paramref name="slot"/>.</summary>
    public static void Step(float[] x, Block w, Shape s, IRawKvCache cache, int slot, Rows rows, Workspace ws)
    {
        int b = rows.Count, h = s.Hidden, nh = s.Heads, nkv = s.KvHeads, d = s.HeadDim, width = s.QkvWidth, inter = s.Intermediate;
        bool llama = w.Type == BlockType.Llama;
        var (kp, vp, cap, pos) = cache.AppendColumn(slot, b, nkv, d, s.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32);
        if (pos != rows.Length - 1) throw new InvalidOperationException($"KV cache slot {slot} is at position {pos}, the step's rows at {rows.Length - 1}");
        fixed (float* xp = x, norm = ws.Norm, qkv = ws.Qkv, attn = ws.Attn, output = ws.Out, gu = ws.GateUp, act = ws.Act)
        {
            // Attention half: Llama normalises its input, OLMo-2 its output.
            float* input = xp;
            if (llama) { for (int r = 0; r < b; r++) RmsNorm(xp + r * h, norm + r * h, h, w.Norm1, s.Eps); input = norm; }
            Gemv.ProductRows(w.Qkv, input, b, qkv);
            for (int r = 0; r < b; r++)
            {
                float* q = qkv + r * width, k = q + nh * d, v = k + nkv * d;
                if (w.QNorm is { } qn) { RmsNorm(q, q, nh * d, qn, s.Eps); RmsNorm(k, k, nkv * d, w.KNorm!.Value, s.Eps); }
                Rotate(q, nh, d, rows, r);
                Rotate(k, nkv, d, rows, r);
                for (int hk = 0; hk < nkv; hk++)
                {
                    long at = (((long)r * nkv + hk) * cap + pos) * d;
                    Write(kp, at, k + hk * d, d, s.Bf16);
                    Write(vp, at, v + hk * d, d, s.Bf16);
                }
            }
            Attend(qkv, width, attn, nh, nkv, d, kp, vp, cap, rows, s.Bf16, ws);
            Gemv.ProductRows([w.O], attn, b, output);
            Residual(xp, output, b, h, llama ? null : w.Norm1, s.Eps);
            // MLP half.
            input = xp;
            if (llama) { for (int r = 0; r < b; r++) RmsNorm(xp + r * h, norm + r * h, h, w.Norm2, s.Eps); input = norm; }
            Gemv.ProductRows(w.GateUp, input, b, gu);
            for (int r = 0; r < b; r++) SwiGlu(gu + r * 2 * inter, act + r * inter, inter);
            Gemv.ProductRows([w.Down], act, b, output);
            Residual(xp, output, b, h, llama ? null : w.Norm2, s.Eps);
        }
    }

    /// <summary>y = W·x for every row: [B × in] → [B × out] (the matrices' outputs concatenated).</summary>
    public static void Project(Gemv.Matrix[] ms, float[] x, float[] y, int batch)
    {
        fixed (float* xp = x, yp = y) Gemv.ProductRows(ms, xp, batch, yp);
    }

    /// <summary>Logits [B, 1, V] (fp32) of the final-norm hidden states of every row.</summary>
    public static Tensor Logits(float[] x, Gemv.Matrix norm, Gemv.Matrix head, float eps, Workspace ws)
    {
        int b = ws.Batch, h = norm.Cols;
        var logits = empty([b, 1, head.Rows], ScalarType.Float32);
        fixed (float* xp = x, n = ws.Norm)
        {
            for (int r = 0; r < b; r++) RmsNorm(xp + r * h, n + r * h, h, norm, eps);
            Gemv.ProductRows([head], n, b, (float*)Gemv.Address(logits));
        }
        return logits;
    }

    /// <summary>x += y, or x += RMSNorm(y) (OLMo-2), row by row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Residual(float* x, float* y, int batch, int h, Gemv.Matrix? norm, float eps)
    {
        for (int r = 0; r < batch; r++)
        {
            if (norm is { } n) RmsNorm(y + r * h, y + r * h, h, n, eps);
            for (int i = 0; i < h; i++) x[r * h + i] += y[r * h + i];
        }
    }

    /// <summary>RMSNorm in fp32 (METHOD §2.4): y = x·rsqrt(mean(x²) + ε)·w; y may be x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void RmsNorm(float* x, float* y, int n, Gemv.Matrix weight, float eps)
    {
        double ss = 0;
        for (int i = 0; i < n; i++) ss += x[i] * x[i];
        float r = 1f / MathF.Sqrt((float)(ss / n) + eps);
        if (weight.Bf16) { ushort* w = (ushort*)weight.Address; for (int i = 0; i < n; i++) y[i] = x[i] * r * Gemv.Bf16ToFloat(w[i]); }
        else { float* w = (float*)weight.Address; for (int i = 0; i < n; i++) y[i] = x[i] * r * w[i]; }
    }

    /// <summary>HF rotate-half RoPE at row <paramref name="row"/>'s position, in place on [heads × d].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Rotate(float* x, int heads, int d, Rows rows, int row)
    {
        int half = d / 2;
        fixed (float* cos = &rows.Cos[row * half], sin = &rows.Sin[row * half])
            for (int h = 0; h < heads; h++)
            {
                float* v = x + h * d;
                for (int i = 0; i < half; i++)
                {
                    float x1 = v[i], x2 = v[i + half];
                    v[i] = x1 * cos[i] - x2 * sin[i];
                    v[i + half] = x2 * cos[i] + x1 * sin[i];
                }
            }
    }

    /// <summary>
    /// Softmax attention of each row's query heads over the positions of its K/V head it may attend to; the row's
    /// buffer is [n_kv, capacity, d] at row·n_kv·capacity·d.
    /// </summary>
    internal static void Attend(float* qkv, int width, float* o, int nh, int nkv, int d, IntPtr kp, IntPtr vp, int cap, Rows rows, bool bf16, Workspace ws)
    {
        int g = nh / nkv, len = rows.Length, heads = rows.Count * nh;
        float scale = 1f / MathF.Sqrt(d);
        var allowed = rows.Allowed;
        var (qAddr, oAddr) = ((IntPtr)qkv, (IntPtr)o);
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Head(int part, int rh)
        {
            int r = rh / nh, h = rh % nh, hk = h / g;
            float* q = (float*)qAddr + (long)r * width + h * d, outH = (float*)oAddr + (long)rh * d;
            long baseAt = ((long)r * nkv + hk) * cap * d;
            var scores = ws.Scores(part, len);
            int maskAt = r * len;
            float max = float.NegativeInfinity;
            fixed (float* sc = scores)
            {
                for (int t = 0; t < len; t++)
                {
                    if (allowed is not null && !allowed[maskAt + t]) { sc[t] = float.NegativeInfinity; continue; }
                    sc[t] = DotRow(q, kp, baseAt + (long)t * d, d, bf16) * scale;
                    if (sc[t] > max) max = sc[t];
                }
                int t0 = 0;
                if (Vector256.IsHardwareAccelerated)
                    for (; t0 + 8 <= len; t0 += 8) Vector256.Exp(Vector256.Load(sc + t0) - Vector256.Create(max)).Store(sc + t0);
                for (int t = t0; t < len; t++) sc[t] = MathF.Exp(sc[t] - max);
                double sum = 0;
                for (int t = 0; t < len; t++)
                {
                    if (allowed is not null && !allowed[maskAt + t]) sc[t] = 0; // exactly zero, whatever exp(−∞) gave
                    sum += sc[t];
                }
                float inv = (float)(1.0 / sum);
                new Span<float>(outH, d).Clear();
                for (int t = 0; t < len; t++) if (sc[t] != 0) AddScaledRow(outH, sc[t] * inv, vp, baseAt + (long)t * d, d, bf16);
            }
        }
        // Long caches are worth the threads; short ones are not.
        if ((long)len * heads * d >= 1 << 14)
        {
            int parts = Math.Min(KernelThreads.Width, heads), per = (heads + parts - 1) / parts;
            KernelThreads.Run(parts, t => { for (int rh = t * per; rh < Math.Min(heads, (t + 1) * per); rh++) Head(t, rh); });
        }
        else for (int rh = 0; rh < heads; rh++) Head(0, rh);
    }

    /// <summary>a = SiLU(gate) ⊙ up for gu = [gate | up] of one row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SwiGlu(float* g, float* o, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
            {
                var gv = Vector256.Load(g + i);
                (gv / (Vector256<float>.One + Vector256.Exp(-gv)) * Vector256.Load(g + n + i)).Store(o + i);
            }
        for (; i < n; i++) o[i] = g[i] / (1f + MathF.Exp(-g[i])) * g[n + i];
    }

    /// <summary>Eight cached values from element <paramref name="at"/>, widened to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Load8(IntPtr buffer, long at, bool bf16) => bf16
        ? Vector256.ShiftLeft(Avx2.ConvertToVector256Int32((ushort*)buffer + at), 16).AsSingle()
        : Vector256.Load((float*)buffer + at);

    /// <summary>Sixteen cached values from element <paramref name="at"/>, widened to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Load16(IntPtr buffer, long at, bool bf16) => bf16
        ? Vector512.ShiftLeft(Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)buffer + at)), 16).AsSingle()
        : Vector512.Load((float*)buffer + at);

    /// <summary>q · row for the cached row starting at element <paramref name="at"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float DotRow(float* q, IntPtr buffer, long at, int d, bool bf16)
    {
        int i = 0;
        float s = 0;
        if (Avx512F.IsSupported && d % 16 == 0)
        {
            var acc = Vector512<float>.Zero;
            for (; i < d; i += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), Load16(buffer, at + i, bf16), acc);
            return Vector512.Sum(acc);
        }
        if (Avx2.IsSupported)
        {
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= d; i += 8) acc = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), Load8(buffer, at + i, bf16), acc);
            s = Vector256.Sum(acc);
        }
        for (; i < d; i++) s += q[i] * (bf16 ? Gemv.Bf16ToFloat(((ushort*)buffer)[at + i]) : ((float*)buffer)[at + i]);
        return s;
    }

    /// <summary>o += p · row for the cached row starting at element <paramref name="at"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AddScaledRow(float* o, float p, IntPtr buffer, long at, int d, bool bf16)
    {
        int i = 0;
        if (Avx512F.IsSupported && d % 16 == 0)
        {
            var pv = Vector512.Create(p);
            for (; i < d; i += 16) Vector512.FusedMultiplyAdd(pv, Load16(buffer, at + i, bf16), Vector512.Load(o + i)).Store(o + i);
            return;
        }
        if (Avx2.IsSupported)
        {
            var pv = Vector256.Create(p);
            for (; i + 8 <= d; i += 8) Vector256.FusedMultiplyAdd(pv, Load8(buffer, at + i, bf16), Vector256.Load(o + i)).Store(o + i);
        }
        for (; i < d; i++) o[i] += p * (bf16 ? Gemv.Bf16ToFloat(((ushort*)buffer)[at + i]) : ((float*)buffer)[at + i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Write(IntPtr buffer, long at, float* values, int n, bool bf16)
    {
        if (bf16) { ushort* p = (ushort*)buffer + at; for (int i = 0; i < n; i++) p[i] = Gemv.FloatToBf16(values[i]); }
        else new ReadOnlySpan<float>(values, n).CopyTo(new Span<float>((float*)buffer + at, n));
    }

    /// <summary>Values from element <paramref name="offset"/> of a matrix's memory, as fp32.</summary>
    static void Read(Gemv.Matrix t, long offset, Span<float> y)
    {
        if (t.Bf16) { ushort* b = (ushort*)t.Address + offset; for (int i = 0; i < y.Length; i++) y[i] = Gemv.Bf16ToFloat(b[i]); }
        else new ReadOnlySpan<float>((float*)t.Address + offset, y.Length).CopyTo(y);
    }
}
