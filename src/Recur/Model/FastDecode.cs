// Batch-1 decoding of one token, outside libtorch's op dispatch.
//
// A decode step of a 12-layer model issues ~50 small libtorch ops per layer; each costs microseconds of dispatch
// and allocation, which at batch 1 is as long as reading the weights (bench/RESULTS.md). This path runs the
// same math directly on the tensors' memory: RMSNorm, the projections (Gemv.cs), RoPE (rotate-half, the model's
// own inverse frequencies incl. llama3 scaling), the KV-cache write, attention over the cache and SwiGLU.
// The residual stream and all intermediate values stay fp32 (bf16 weights and KV cache are widened on read),
// so in bf16 it is slightly more accurate than the op-by-op path, which rounds to bf16 after every op; in fp32
// the two agree to rounding (tests/Recur.Tests/Model/FastDecodeTests.cs).
//
// Taken only when it applies: no autograd, CPU, one sequence of one new token, no padding mask, a KvCache,
// Llama blocks (OLMo-2 goes op by op), weights already in the compute dtype (fp32 or bf16). RECUR_FAST_DECODE=0
// turns it off.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>A KV cache the fast path can write one position into directly (Engine.KvCache).</summary>
internal interface IRawKvCache : IKvCache
{
    /// <summary>
    /// Room for one more position in a slot: the addresses of the slot's whole K and V buffers [1, n_kv, capacity, d]
    /// (contiguous), their capacity, and the position to write.
    /// </summary>
    (IntPtr K, IntPtr V, int Capacity, int Position) AppendOne(int slot, long kvHeads, long headDim, ScalarType dtype, Device device);
}

internal static unsafe class FastDecode
{
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("RECUR_FAST_DECODE") != "0";

    /// <summary>One block's weights by address: projections whose outputs are concatenated (q|k|v, gate|up), norms (as 1-row matrices).</summary>
    internal sealed record Block(Gemv.Matrix[] Qkv, Gemv.Matrix O, Gemv.Matrix[] GateUp, Gemv.Matrix Down, Gemv.Matrix Norm1, Gemv.Matrix Norm2);

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
    internal sealed record Shape(int Hidden, int Heads, int KvHeads, int HeadDim, int Intermediate, float Eps, float[] InvFreq, bool Bf16);

    public static bool Applies(Tensor ids, Tensor? keyPadding, IKvCache? cache, ScalarType dtype, BlockType type, Device device) =>
        Enabled && !is_grad_enabled() && keyPadding is null && cache is IRawKvCache && type == BlockType.Llama
        && device.type == DeviceType.CPU && (dtype == ScalarType.Float32 || dtype == ScalarType.BFloat16)
        && ids.dim() == 2 && ids.shape[0] == 1 && ids.shape[1] == 1;

    public static Shape ShapeOf(ModelConfig c, Rope rope, ScalarType dtype) =>
        new(c.HiddenSize, c.NumAttentionHeads, c.KvHeads, c.HeadDimension, c.IntermediateSize, (float)c.RmsNormEps, rope.InverseFrequencies, dtype == ScalarType.BFloat16);

    /// <summary>The embedding row of the single token in <paramref name="ids"/> [1, 1], widened to fp32.</summary>
    public static float[] Embed(Gemv.Matrix embedding, Tensor ids, double scale = 1.0)
    {
        long id = ids.item<long>();
        if (id < 0 || id >= embedding.Rows) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} outside the vocabulary of {embedding.Rows}");
        var x = Read(embedding, id * embedding.Cols, embedding.Cols);
        if (scale != 1.0) for (int i = 0; i < x.Length; i++) x[i] = (float)(x[i] * scale);
        return x;
    }

    /// <summary>x ← Block(x) for a Llama pre-norm block at the cache's next position, writing its K/V to <paramref name="slot"/>.</summary>
    public static void Step(float[] x, Block w, Shape s, IRawKvCache cache, int slot)
    {
        int nh = s.Heads, nkv = s.KvHeads, d = s.HeadDim;
        // Attention half.
        var xn = RmsNorm(x, w.Norm1, s.Eps);
        var qkv = Project(w.Qkv, xn, (nh + 2 * nkv) * d, s.Bf16);
        var (kp, vp, cap, pos) = cache.AppendOne(slot, nkv, d, s.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32, CPU);
        var q = qkv.AsSpan(0, nh * d);
        var k = qkv.AsSpan(nh * d, nkv * d);
        var v = qkv.AsSpan((nh + nkv) * d, nkv * d);
        Rotate(q, nh, d, pos, s.InvFreq);
        Rotate(k, nkv, d, pos, s.InvFreq);
        for (int hk = 0; hk < nkv; hk++)
        {
            long at = ((long)hk * cap + pos) * d;
            Write(kp, at, k.Slice(hk * d, d), s.Bf16);
            Write(vp, at, v.Slice(hk * d, d), s.Bf16);
        }
        var o = Attend(qkv, nh, nkv, d, kp, vp, cap, pos + 1, s.Bf16);
        AddInto(x, Project([w.O], o, s.Hidden, s.Bf16));
        // MLP half.
        xn = RmsNorm(x, w.Norm2, s.Eps);
        var gu = Project(w.GateUp, xn, 2 * s.Intermediate, s.Bf16);
        var a = new float[s.Intermediate];
        SwiGlu(gu, a);
        AddInto(x, Project([w.Down], a, s.Hidden, s.Bf16));
    }

    /// <summary>Logits [1, 1, V] (fp32) of the final-norm hidden state.</summary>
    public static Tensor Logits(float[] x, Gemv.Matrix norm, Gemv.Matrix head, float eps, bool bf16)
    {
        var xn = RmsNorm(x, norm, eps);
        var logits = empty([1, 1, head.Rows], ScalarType.Float32);
        Gemv.Product(head, Gemv.Prepare(xn, bf16), new Span<float>((float*)Gemv.Address(logits), head.Rows));
        return logits;
    }

    /// <summary>W·x for one weight, or the concatenation of several weights' outputs.</summary>
    public static float[] Project(Gemv.Matrix[] ms, float[] x, int outputs, bool bf16)
    {
        int rows = 0;
        foreach (var m in ms) rows += m.Rows;
        if (rows != outputs) throw new InvalidOperationException($"projections give {rows} outputs, expected {outputs}");
        var y = new float[outputs];
        Gemv.ProductStacked(ms, Gemv.Prepare(x, bf16), y);
        return y;
    }

    /// <summary>RMSNorm in fp32 (METHOD §2.4): x·rsqrt(mean(x²) + ε)·w.</summary>
    public static float[] RmsNorm(float[] x, Gemv.Matrix weight, float eps)
    {
        double ss = 0;
        for (int i = 0; i < x.Length; i++) ss += x[i] * x[i];
        float r = 1f / MathF.Sqrt((float)(ss / x.Length) + eps);
        var w = Read(weight, 0, x.Length);
        var y = new float[x.Length];
        for (int i = 0; i < y.Length; i++) y[i] = x[i] * r * w[i];
        return y;
    }

    /// <summary>HF rotate-half RoPE at one position, in place on [heads × d].</summary>
    static void Rotate(Span<float> x, int heads, int d, int pos, float[] invFreq)
    {
        int half = d / 2;
        Span<float> cos = stackalloc float[half], sin = stackalloc float[half];
        for (int i = 0; i < half; i++) { float a = pos * invFreq[i]; cos[i] = MathF.Cos(a); sin[i] = MathF.Sin(a); }
        for (int h = 0; h < heads; h++)
        {
            var v = x.Slice(h * d, d);
            for (int i = 0; i < half; i++)
            {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * cos[i] - x2 * sin[i];
                v[i + half] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }

    /// <summary>Softmax attention of each query head over the first <paramref name="len"/> cached positions of its K/V head.</summary>
    static float[] Attend(float[] qkv, int nh, int nkv, int d, IntPtr kp, IntPtr vp, int cap, int len, bool bf16)
    {
        var o = new float[nh * d];
        int g = nh / nkv;
        float scale = 1f / MathF.Sqrt(d);
        void Head(int h)
        {
            int hk = h / g;
            var scores = new float[len];
            float max = float.NegativeInfinity;
            long baseAt = (long)hk * cap * d;
            fixed (float* q = &qkv[h * d], outH = &o[h * d])
            {
                for (int t = 0; t < len; t++)
                {
                    scores[t] = DotRow(q, kp, baseAt + (long)t * d, d, bf16) * scale;
                    if (scores[t] > max) max = scores[t];
                }
                double sum = 0;
                int t0 = 0;
                fixed (float* sc = scores)
                    if (Vector256.IsHardwareAccelerated)
                        for (; t0 + 8 <= len; t0 += 8) Vector256.Exp(Vector256.Load(sc + t0) - Vector256.Create(max)).Store(sc + t0);
                for (int t = t0; t < len; t++) scores[t] = MathF.Exp(scores[t] - max);
                for (int t = 0; t < len; t++) sum += scores[t];
                float inv = (float)(1.0 / sum);
                for (int t = 0; t < len; t++) AddScaledRow(outH, scores[t] * inv, vp, baseAt + (long)t * d, d, bf16);
            }
        }
        // Long caches are worth the threads; short ones are not.
        if ((long)len * nh * d >= 1 << 14)
        {
            int parts = Math.Min(KernelThreads.Width, nh), per = (nh + parts - 1) / parts;
            KernelThreads.Run(parts, t => { for (int h = t * per; h < Math.Min(nh, (t + 1) * per); h++) Head(h); });
        }
        else for (int h = 0; h < nh; h++) Head(h);
        return o;
    }

    static void AddInto(float[] x, float[] y) { for (int i = 0; i < x.Length; i++) x[i] += y[i]; }

    /// <summary>a = SiLU(gate) ⊙ up for gu = [gate | up].</summary>
    static void SwiGlu(float[] gu, float[] a)
    {
        int n = a.Length, i = 0;
        fixed (float* g = gu, o = a)
        {
            if (Vector256.IsHardwareAccelerated)
                for (; i + 8 <= n; i += 8)
                {
                    var gv = Vector256.Load(g + i);
                    (gv / (Vector256<float>.One + Vector256.Exp(-gv)) * Vector256.Load(g + n + i)).Store(o + i);
                }
            for (; i < n; i++) o[i] = g[i] / (1f + MathF.Exp(-g[i])) * g[n + i];
        }
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

    static void Write(IntPtr buffer, long at, ReadOnlySpan<float> values, bool bf16)
    {
        if (bf16) { ushort* p = (ushort*)buffer + at; for (int i = 0; i < values.Length; i++) p[i] = Gemv.FloatToBf16(values[i]); }
        else values.CopyTo(new Span<float>((float*)buffer + at, values.Length));
    }

    /// <summary><paramref name="count"/> values from element <paramref name="offset"/> of a matrix's memory, as fp32.</summary>
    static float[] Read(Gemv.Matrix t, long offset, int count)
    {
        var y = new float[count];
        if (t.Bf16) { ushort* b = (ushort*)t.Address + offset; for (int i = 0; i < count; i++) y[i] = Gemv.Bf16ToFloat(b[i]); }
        else new ReadOnlySpan<float>((float*)t.Address + offset, count).CopyTo(y);
        return y;
    }
}
