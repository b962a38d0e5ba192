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
    /// <summary>The slot's whole buffers [1, n_kv, capacity, d] (contiguous) with room for one more position, and that position.</summary>
    (Tensor K, Tensor V, int Position) AppendOne(int slot, long kvHeads, long headDim, ScalarType dtype, Device device);
}

internal static unsafe class FastDecode
{
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("RECUR_FAST_DECODE") != "0";

    /// <summary>One block's tensors: projections whose outputs are concatenated (q|k|v, gate|up), norms.</summary>
    internal sealed record Block(Tensor[] Qkv, Tensor O, Tensor[] GateUp, Tensor Down, Tensor Norm1, Tensor Norm2);

    /// <summary>Dimensions and constants shared by every block.</summary>
    internal sealed record Shape(int Hidden, int Heads, int KvHeads, int HeadDim, int Intermediate, float Eps, float[] InvFreq, bool Bf16);

    public static bool Applies(Tensor ids, Tensor? keyPadding, IKvCache? cache, ScalarType dtype, BlockType type, Device device) =>
        Enabled && !is_grad_enabled() && keyPadding is null && cache is IRawKvCache && type == BlockType.Llama
        && device.type == DeviceType.CPU && (dtype == ScalarType.Float32 || dtype == ScalarType.BFloat16)
        && ids.dim() == 2 && ids.shape[0] == 1 && ids.shape[1] == 1;

    /// <summary>True when every tensor is contiguous and stored in <paramref name="dtype"/> (no per-call cast needed).</summary>
    public static bool WeightsReady(ScalarType dtype, IEnumerable<Tensor> weights) => weights.All(w => w.dtype == dtype && w.is_contiguous());

    public static Shape ShapeOf(ModelConfig c, Rope rope, ScalarType dtype) =>
        new(c.HiddenSize, c.NumAttentionHeads, c.KvHeads, c.HeadDimension, c.IntermediateSize, (float)c.RmsNormEps, rope.InverseFrequencies, dtype == ScalarType.BFloat16);

    /// <summary>The embedding row of the single token in <paramref name="ids"/> [1, 1], widened to fp32.</summary>
    public static float[] Embed(Tensor embedding, Tensor ids, double scale = 1.0)
    {
        long id = ids.item<long>();
        int h = (int)embedding.shape[1];
        if (id < 0 || id >= embedding.shape[0]) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} outside the vocabulary of {embedding.shape[0]}");
        var x = Read(embedding, id * h, h);
        if (scale != 1.0) for (int i = 0; i < h; i++) x[i] = (float)(x[i] * scale);
        return x;
    }

    /// <summary>x ← Block(x) for a Llama pre-norm block at the cache's next position, writing its K/V to <paramref name="slot"/>.</summary>
    public static void Step(float[] x, Block w, Shape s, IRawKvCache cache, int slot)
    {
        int nh = s.Heads, nkv = s.KvHeads, d = s.HeadDim;
        // Attention half.
        var xn = RmsNorm(x, w.Norm1, s.Eps);
        var qkv = Project(w.Qkv, xn, (nh + 2 * nkv) * d, s.Bf16);
        var (kBuf, vBuf, pos) = cache.AppendOne(slot, nkv, d, s.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32, CPU);
        int cap = (int)kBuf.shape[2];
        var q = qkv.AsSpan(0, nh * d);
        var k = qkv.AsSpan(nh * d, nkv * d);
        var v = qkv.AsSpan((nh + nkv) * d, nkv * d);
        Rotate(q, nh, d, pos, s.InvFreq);
        Rotate(k, nkv, d, pos, s.InvFreq);
        IntPtr kp = Gemv.Address(kBuf), vp = Gemv.Address(vBuf);
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
        for (int i = 0; i < a.Length; i++) { float g = gu[i]; a[i] = g / (1f + MathF.Exp(-g)) * gu[s.Intermediate + i]; }
        AddInto(x, Project([w.Down], a, s.Hidden, s.Bf16));
    }

    /// <summary>Logits [1, 1, V] (fp32) of the final-norm hidden state.</summary>
    public static Tensor Logits(float[] x, Tensor norm, Tensor head, float eps, bool bf16)
    {
        var xn = RmsNorm(x, norm, eps);
        var logits = empty([1, 1, head.shape[0]], ScalarType.Float32);
        Gemv.Product(Gemv.Matrix.Of(head), Gemv.Prepare(xn, bf16), MemoryMarshal.Cast<byte, float>(logits.bytes));
        return logits;
    }

    /// <summary>W·x for one weight, or the concatenation of several weights' outputs.</summary>
    public static float[] Project(Tensor[] weights, float[] x, int outputs, bool bf16)
    {
        var ms = weights.Select(Gemv.Matrix.Of).ToArray();
        if (ms.Sum(m => m.Rows) != outputs) throw new InvalidOperationException($"projections give {ms.Sum(m => m.Rows)} outputs, expected {outputs}");
        var y = new float[outputs];
        Gemv.ProductStacked(ms, Gemv.Prepare(x, bf16), y);
        return y;
    }

    /// <summary>RMSNorm in fp32 (METHOD §2.4): x·rsqrt(mean(x²) + ε)·w.</summary>
    public static float[] RmsNorm(float[] x, Tensor weight, float eps)
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
                for (int t = 0; t < len; t++) { scores[t] = MathF.Exp(scores[t] - max); sum += scores[t]; }
                float inv = (float)(1.0 / sum);
                for (int t = 0; t < len; t++) AddScaledRow(outH, scores[t] * inv, vp, baseAt + (long)t * d, d, bf16);
            }
        }
        // Long caches are worth the threads; short ones are not.
        if ((long)len * nh * d >= 1 << 16)
        {
            int parts = Math.Min(KernelThreads.Width, nh), per = (nh + parts - 1) / parts;
            KernelThreads.Run(parts, t => { for (int h = t * per; h < Math.Min(nh, (t + 1) * per); h++) Head(h); });
        }
        else for (int h = 0; h < nh; h++) Head(h);
        return o;
    }

    static void AddInto(float[] x, float[] y) { for (int i = 0; i < x.Length; i++) x[i] += y[i]; }

    /// <summary>Eight cached values from element <paramref name="at"/>, widened to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Load8(IntPtr buffer, long at, bool bf16) => bf16
        ? Vector256.ShiftLeft(Avx2.ConvertToVector256Int32((ushort*)buffer + at), 16).AsSingle()
        : Vector256.Load((float*)buffer + at);

    /// <summary>q · row for the cached row starting at element <paramref name="at"/>.</summary>
    static float DotRow(float* q, IntPtr buffer, long at, int d, bool bf16)
    {
        int i = 0;
        float s = 0;
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

    /// <summary><paramref name="count"/> values from element <paramref name="offset"/> of a contiguous fp32/bf16 tensor, as fp32.</summary>
    static float[] Read(Tensor t, long offset, int count)
    {
        var y = new float[count];
        IntPtr p = Gemv.Address(t);
        if (t.dtype == ScalarType.BFloat16) { ushort* b = (ushort*)p + offset; for (int i = 0; i < count; i++) y[i] = Gemv.Bf16ToFloat(b[i]); }
        else if (t.dtype == ScalarType.Float32) new ReadOnlySpan<float>((float*)p + offset, count).CopyTo(y);
        else throw new InvalidOperationException($"fast decode reads fp32 or bf16 tensors, not {t.dtype}");
        return y;
    }
}
