// Muon's Newton–Schulz products (METHOD §4.4) in bf16 on CPUs where libtorch has no fast bf16 GEMM.
//
// Without AVX-512 (BW/VL/DQ) or AMX, libtorch 2.10 does not route a bf16 `mm` to oneDNN but to its portable
// reference kernels (pytorch/pytorch:aten/src/ATen/native/cpu/BlasKernel.cpp, gemm_core_), which compute every
// output as an fp32 sum of products, round it once to bf16, and run at well under 1 GFLOP/s. At the demo's sizes
// those products, not the model, were most of a training step (bench/RESULTS.md, "Demo time budget (issue 13)").
//
// This computes the same bits faster. A product of two bf16 values is exact in fp32 (8 + 8 significant bits), so an
// output depends only on the order of the fp32 additions, and that order is kept exactly. It depends on the operands'
// layout, because addmm_impl_cpu_ (aten/src/ATen/native/LinearAlgebra.cpp) computes the row-major result as a
// column-major Cᵀ = bᵀ·aᵀ and picks the gemm variant from the strides:
//   a row-major, b row-major       → gemm_notrans_  : `sum`, four interleaved partial sums   (Order.Interleaved4)
//   a column-major, b column-major → gemm_transab_  : the same `sum`                          (Order.Interleaved4)
//   a row-major, b column-major    → gemm_transa_   : a vectorised fp32 dot product           (Order.Blocked64)
//   a column-major, b row-major    → gemm_transb_   : an fp32 accumulator per output, l = 0 … k−1 in turn (Order.Sequential)
// (Blocked64 is ReducedPrecisionFloatGemvFastPathKernel.cpp's dot_with_fp32_arith with 8-lane AVX2 vectors.) The
// kernels below keep each order lane by lane while computing 8 or 16 outputs at once. Whether this machine's libtorch
// really computes that way is not assumed: the first product of every shape and layout is computed both ways and
// compared bit for bit, and only a shape that matched ever uses these kernels; any other keeps libtorch's `mm` (so on
// an AVX-512 machine, where oneDNN sums in its own order, the numbers stay libtorch's).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>
/// a·b for 2-D bf16 CPU tensors, bit for bit what libtorch's own <c>mm</c> returns, computed by vectorised kernels
/// once that equality has been checked for the product's shape and layout (see the file header).
/// One instance per optimizer: it remembers which shapes were checked.
/// </summary>
public sealed class ExactBf16MatMul
{
    /// <summary>The order in which libtorch's reference kernels add an output's products (file header).</summary>
    public enum Order { Interleaved4, Sequential, Blocked64 }

    readonly record struct Shape(long M, long K, long N, bool AColumnMajor, bool BColumnMajor);

    readonly Dictionary<Shape, bool> _matches = new();

    /// <summary>Products computed by the kernels (after their shape matched libtorch); for tests and benchmarks.</summary>
    public long KernelProducts { get; private set; }

    /// <summary>Shapes whose first product differed from libtorch's, and which therefore stay on libtorch's <c>mm</c>.</summary>
    public int MismatchedShapes => _matches.Values.Count(ok => !ok);

    /// <summary>Whether the kernels can run here at all (8-lane fp32 vectors in hardware).</summary>
    public static bool Supported => Vector256.IsHardwareAccelerated;

    /// <summary>The order libtorch's reference kernel adds in, for operands of these layouts.</summary>
    public static Order OrderFor(bool aColumnMajor, bool bColumnMajor) => (aColumnMajor, bColumnMajor) switch
    {
        (false, true) => Order.Blocked64,
        (true, false) => Order.Sequential,
        _ => Order.Interleaved4,
    };

    /// <summary>a [m, k] · b [k, n], as a new bf16 tensor equal to <c>a.mm(b)</c>.</summary>
    public Tensor MatMul(Tensor a, Tensor b)
    {
        if (!Supported || a.dtype != ScalarType.BFloat16 || b.dtype != ScalarType.BFloat16 || a.dim() != 2 || b.dim() != 2
            || a.device_type != TorchSharp.DeviceType.CPU || b.device_type != TorchSharp.DeviceType.CPU
            || a.requires_grad || b.requires_grad || a.shape[1] != b.shape[0] || a.numel() == 0 || b.numel() == 0)
            return a.mm(b);
        var shape = new Shape(a.shape[0], a.shape[1], b.shape[1], ColumnMajor(a), ColumnMajor(b));
        if (_matches.TryGetValue(shape, out bool ok))
        {
            if (!ok) return a.mm(b);
            KernelProducts++;
            return Kernel(a, b, shape);
        }
        var reference = a.mm(b);
        using (var mine = Kernel(a, b, shape)) _matches[shape] = SameBits(reference, mine);
        return reference;
    }

    /// <summary>Bit for bit (so −0 ≠ +0 and NaN payloads count), unlike <c>torch.equal</c>; both bf16.</summary>
    public static bool SameBits(Tensor x, Tensor y)
    {
        if (x.dtype != ScalarType.BFloat16 || y.dtype != ScalarType.BFloat16) throw new ArgumentException("SameBits compares bf16 tensors");
        if (!x.shape.SequenceEqual(y.shape)) return false;
        using var scope = NewDisposeScope();
        return Halves(x.contiguous()).SequenceEqual(Halves(y.contiguous()));
    }

    // Column-major: stored transposed (a transposed view of a contiguous matrix), as libtorch's stride checks see it.
    static bool ColumnMajor(Tensor t) => t.shape[1] > 1 && t.stride(0) == 1;

    static Tensor Kernel(Tensor a, Tensor b, Shape shape)
    {
        int m = checked((int)shape.M), k = checked((int)shape.K), n = checked((int)shape.N);
        var order = OrderFor(shape.AColumnMajor, shape.BColumnMajor);
        using var scope = NewDisposeScope();
        // Blocked64 reads b by columns: take bᵀ row-major (a copy-free view when b is column-major).
        float[] av = Floats(a.contiguous()), bv = Floats((order == Order.Blocked64 ? b.t() : b).contiguous()), c = new float[m * n];
        Multiply(order, av, bv, c, m, k, n, Math.Min(Environment.ProcessorCount, get_num_threads()));
        var y = empty([m, n], ScalarType.BFloat16);
        var yh = MemoryMarshal.Cast<byte, ushort>(y.bytes);
        for (int i = 0; i < c.Length; i++) yh[i] = RoundToBf16(c[i]);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>The bits of a contiguous bf16 CPU tensor, in place (no copy).</summary>
    static ReadOnlySpan<ushort> Halves(Tensor t) => MemoryMarshal.Cast<byte, ushort>(t.bytes);

    /// <summary>A contiguous bf16 matrix as row-major fp32 (exact: a bf16 value is the top half of an fp32 one).</summary>
    static float[] Floats(Tensor t)
    {
        var h = Halves(t);
        var f = new float[h.Length];
        for (int i = 0; i < f.Length; i++) f[i] = BitConverter.Int32BitsToSingle(h[i] << 16);
        return f;
    }

    /// <summary>fp32 → bf16 bits, round to nearest even, NaN → 0x7FC0: c10::BFloat16's conversion, which the reference gemm's store uses.</summary>
    internal static ushort RoundToBf16(float v)
    {
        if (float.IsNaN(v)) return 0x7FC0;
        uint u = BitConverter.SingleToUInt32Bits(v);
        return (ushort)((u + ((u >> 16) & 1) + 0x7FFF) >> 16);
    }

    /// <summary>
    /// c [m, n] = a [m, k] · b, all fp32 and row-major, each output summed in <paramref name="order"/>; b is [k, n],
    /// or bᵀ [n, k] for <see cref="Order.Blocked64"/>. Internal for the tests that pin each order against
    /// <see cref="Dot"/>, a scalar transcription of it.
    /// </summary>
    internal static void Multiply(Order order, float[] a, float[] b, float[] c, int m, int k, int n, int threads = 1)
    {
        if (a.Length < m * k || b.Length < k * n || c.Length < m * n) throw new ArgumentException("matrix buffers are smaller than their shapes");
        void Rows(int first, int end)
        {
            for (int i = first; i < end; i++)
                switch (order)
                {
                    case Order.Interleaved4: Interleaved4Row(a, b, c, i, k, n); break;
                    case Order.Sequential: SequentialRow(a, b, c, i, k, n); break;
                    default:
                        for (int j = 0; j < n; j++) c[i * n + j] = Blocked64(a.AsSpan(i * k, k), b.AsSpan(j * k, k));
                        break;
                }
        }
        // Rows are independent, so splitting them among threads changes no output.
        int parts = Math.Clamp(threads, 1, m);
        if (parts == 1 || (long)m * n * k < ParallelWork) { Rows(0, m); return; }
        Parallel.For(0, parts, part => Rows(part * m / parts, (part + 1) * m / parts));
    }

    /// <summary>Multiply–adds below which one thread is faster than handing half the rows to another (measured at the demo's sizes).</summary>
    const long ParallelWork = 1L << 20;

    /// <summary>
    /// Row i in BlasKernel.cpp's `sum` order: s_r = Σ a_il·b_lj over l ≡ r (mod 4) below 4⌊k/4⌋, in order of l; the
    /// last k mod 4 products into s0; then ((s0 + s1) + s2) + s3. Sixteen columns at a time, one lane per column.
    /// </summary>
    static void Interleaved4Row(float[] a, float[] b, float[] c, int i, int k, int n)
    {
        int k4 = k & ~3;
        ref float ai = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(a), i * k);
        ref float b0 = ref MemoryMarshal.GetArrayDataReference(b);
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            // s0..s3 for columns j … j+7 (p) and j+8 … j+15 (q).
            Vector256<float> p0 = default, p1 = default, p2 = default, p3 = default;
            Vector256<float> q0 = default, q1 = default, q2 = default, q3 = default;
            ref float bj = ref Unsafe.Add(ref b0, j);
            int l = 0;
            for (; l < k4; l += 4)
            {
                var x0 = Vector256.Create(Unsafe.Add(ref ai, l));
                var x1 = Vector256.Create(Unsafe.Add(ref ai, l + 1));
                var x2 = Vector256.Create(Unsafe.Add(ref ai, l + 2));
                var x3 = Vector256.Create(Unsafe.Add(ref ai, l + 3));
                ref float r0 = ref Unsafe.Add(ref bj, l * n);
                ref float r1 = ref Unsafe.Add(ref r0, n);
                ref float r2 = ref Unsafe.Add(ref r1, n);
                ref float r3 = ref Unsafe.Add(ref r2, n);
                p0 += x0 * Vector256.LoadUnsafe(ref r0); q0 += x0 * Vector256.LoadUnsafe(ref r0, 8);
                p1 += x1 * Vector256.LoadUnsafe(ref r1); q1 += x1 * Vector256.LoadUnsafe(ref r1, 8);
                p2 += x2 * Vector256.LoadUnsafe(ref r2); q2 += x2 * Vector256.LoadUnsafe(ref r2, 8);
                p3 += x3 * Vector256.LoadUnsafe(ref r3); q3 += x3 * Vector256.LoadUnsafe(ref r3, 8);
            }
            for (; l < k; l++)
            {
                var x = Vector256.Create(Unsafe.Add(ref ai, l));
                ref float r = ref Unsafe.Add(ref bj, l * n);
                p0 += x * Vector256.LoadUnsafe(ref r); q0 += x * Vector256.LoadUnsafe(ref r, 8);
            }
            p0 += p1; p0 += p2; p0 += p3;
            q0 += q1; q0 += q2; q0 += q3;
            p0.CopyTo(c, i * n + j);
            q0.CopyTo(c, i * n + j + 8);
        }
        for (; j < n; j++) c[i * n + j] = Dot(Order.Interleaved4, a, b, i, j, k, n);
    }

    /// <summary>Row i with one fp32 accumulator per output, adding l = 0 … k−1 in turn (gemm_transb_); 16 columns at a time.</summary>
    static void SequentialRow(float[] a, float[] b, float[] c, int i, int k, int n)
    {
        ref float ai = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(a), i * k);
        ref float b0 = ref MemoryMarshal.GetArrayDataReference(b);
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            Vector256<float> p = default, q = default;
            ref float bj = ref Unsafe.Add(ref b0, j);
            for (int l = 0; l < k; l++)
            {
                var x = Vector256.Create(Unsafe.Add(ref ai, l));
                ref float r = ref Unsafe.Add(ref bj, l * n);
                p += x * Vector256.LoadUnsafe(ref r); q += x * Vector256.LoadUnsafe(ref r, 8);
            }
            p.CopyTo(c, i * n + j);
            q.CopyTo(c, i * n + j + 8);
        }
        for (; j < n; j++) c[i * n + j] = Dot(Order.Sequential, a, b, i, j, k, n);
    }

    /// <summary>
    /// dot_with_fp32_arith with AVX2's 8 lanes: eight vector accumulators over blocks of 64 (accumulator 2r takes
    /// elements 16r … 16r+7 of a block, 2r+1 the next 8), folded x[i] += x[i+4], x[i] += x[i+2], x[0] += x[1] and reduced
    /// across lanes as ((v0+v4) + (v2+v6)) + ((v1+v5) + (v3+v7)); then the 16-element blocks left, into one more
    /// accumulator (low 8 first, then high 8), reduced the same way and added; then the last k mod 16 products one by one.
    /// </summary>
    static float Blocked64(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        int k = x.Length, k64 = k & ~63, k16 = k & ~15;
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float yr = ref MemoryMarshal.GetReference(y);
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        for (int j = 0; j < k64; j += 64)
        {
            s0 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)j), Vector256.LoadUnsafe(ref yr, (nuint)j), s0);
            s1 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 8)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 8)), s1);
            s2 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 16)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 16)), s2);
            s3 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 24)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 24)), s3);
            s4 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 32)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 32)), s4);
            s5 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 40)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 40)), s5);
            s6 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 48)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 48)), s6);
            s7 = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 56)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 56)), s7);
        }
        s0 += s4; s1 += s5; s2 += s6; s3 += s7;
        s0 += s2; s1 += s3;
        s0 += s1;
        float sum = AcrossLanes(s0);
        Vector256<float> tail = default;
        for (int j = k64; j < k16; j += 16)
        {
            tail = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)j), Vector256.LoadUnsafe(ref yr, (nuint)j), tail);
            tail = MulAdd(Vector256.LoadUnsafe(ref xr, (nuint)(j + 8)), Vector256.LoadUnsafe(ref yr, (nuint)(j + 8)), tail);
        }
        sum += AcrossLanes(tail);
        for (int j = k16; j < k; j++) sum += x[j] * y[j];
        return sum;
    }

    /// <summary>
    /// x·y + acc: fused, as libtorch's vec::fmadd is in this order's kernel. (A product of two bf16 values is exact in fp32
    /// unless it underflows, so fused and separate multiply–adds agree on every value NS5 produces.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> MulAdd(Vector256<float> x, Vector256<float> y, Vector256<float> acc) =>
        Fma.IsSupported ? Fma.MultiplyAdd(x, y, acc) : x * y + acc;

    /// <summary>vec_reduce_all's AVX2 shuffles: halves (lane i + lane i+4), then pairs, then neighbours.</summary>
    static float AcrossLanes(Vector256<float> v)
    {
        float w0 = v[0] + v[4], w1 = v[1] + v[5], w2 = v[2] + v[6], w3 = v[3] + v[7];
        return (w0 + w2) + (w1 + w3);
    }

    /// <summary>
    /// One output in <paramref name="order"/>, written out scalar (b as in <see cref="Multiply"/>): the kernels'
    /// leftover columns, and the tests' transcription of BlasKernel.cpp.
    /// </summary>
    internal static float Dot(Order order, float[] a, float[] b, int i, int j, int k, int n)
    {
        switch (order)
        {
            case Order.Sequential:
            {
                float s = 0;
                for (int l = 0; l < k; l++) s += a[i * k + l] * b[l * n + j];
                return s;
            }
            case Order.Blocked64:
            {
                var acc = new float[8, 8];
                int k64 = k & ~63, k16 = k & ~15;
                for (int blk = 0; blk < k64; blk += 64)
                    for (int r = 0; r < 8; r++)
                        for (int lane = 0; lane < 8; lane++)
                            acc[r, lane] += a[i * k + blk + 8 * r + lane] * b[j * k + blk + 8 * r + lane];
                for (int off = 4; off >= 1; off /= 2)
                    for (int r = 0; r < off; r++)
                        for (int lane = 0; lane < 8; lane++) acc[r, lane] += acc[r + off, lane];
                float Lanes(Func<int, float> v) => ((v(0) + v(4)) + (v(2) + v(6))) + ((v(1) + v(5)) + (v(3) + v(7)));
                float sum = Lanes(lane => acc[0, lane]);
                var tail = new float[8];
                for (int blk = k64; blk < k16; blk += 16)
                    for (int half = 0; half < 2; half++)
                        for (int lane = 0; lane < 8; lane++) tail[lane] += a[i * k + blk + 8 * half + lane] * b[j * k + blk + 8 * half + lane];
                sum += Lanes(lane => tail[lane]);
                for (int l = k16; l < k; l++) sum += a[i * k + l] * b[j * k + l];
                return sum;
            }
            default:
            {
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                int l = 0;
                for (; l + 4 <= k; l += 4)
                {
                    s0 += a[i * k + l] * b[l * n + j];
                    s1 += a[i * k + l + 1] * b[(l + 1) * n + j];
                    s2 += a[i * k + l + 2] * b[(l + 2) * n + j];
                    s3 += a[i * k + l + 3] * b[(l + 3) * n + j];
                }
                for (; l < k; l++) s0 += a[i * k + l] * b[l * n + j];
                s0 += s1; s0 += s2; s0 += s3;
                return s0;
            }
        }
    }
}
