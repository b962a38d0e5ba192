// Several input rows through the one-row kernel's arithmetic, each weight row read once for all of them.
//
// Gemv's one-row kernel (Gemv.DotF32, Gemv.DotBf16) is what plain batch-1 decoding uses; its multi-row tiles
// (Gemv.ProductRows for batches) accumulate in another order and so round differently. Self-speculative decoding
// (Engine/Speculative.cs) must reproduce plain decoding bit for bit while verifying K + 1 rows, so it needs the
// one-row kernel's results for several rows. A dot product's rounding depends only on its own reduction order — the
// SIMD lane split, how many partial accumulators there are and the order each one is updated in, how they are
// combined and summed horizontally, the scalar tail, and FMA versus multiply-then-add — not on what other dot products
// run beside it. The tiles here keep all of that exactly as the one-row kernel has it (per input row: the same
// accumulators, updated in the same order by the same fused multiply-adds, combined and summed by the same calls,
// then the same scalar tail), and only interleave several such dot products so that one load of a weight vector
// feeds every input row of the tile. Each output is therefore bit for bit the one-row kernel's, and the loads per
// FMA drop from 2 (weight + input) towards 1 + 1/R, while the 2·R independent accumulator chains also hide the FMA
// latency that leaves the one-row kernel's two chains half idle on a cache-resident model.
//
// Shared loads on the paths this project's test machine can check: AVX2 (Vector256) fp32 and managed bf16. Where the
// one-row kernel takes another path (AVX-512, the native AVX-512 BF16 kernel, no SIMD, bf16 rows at odd addresses),
// every row calls the one-row routine itself: exact by construction, without the shared loads.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Recur.Model;

internal static unsafe class GemvRows
{
    static readonly int MaxThreads = int.TryParse(Environment.GetEnvironmentVariable("RECUR_GEMV_THREADS"), out int n) ? n : 0;

    /// <summary>Off switch for comparisons (bench: the verify with every row through the one-row routine); on by default.</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Whether the shared-load tiles run on this machine (else every row goes through the one-row routine).</summary>
    public static bool SharesLoads(bool bf16) =>
        !Vector512.IsHardwareAccelerated && Vector256.IsHardwareAccelerated && !(bf16 && Gemv.NativeBf16.Available);

    /// <summary><see cref="Product(Gemv.Matrix[], float*, int, float*)"/> over spans: x is [count × cols], y [count × Σ rows].</summary>
    public static void Product(Gemv.Matrix[] ws, ReadOnlySpan<float> x, int count, Span<float> y)
    {
        long cols = ws[0].Cols, rows = ws.Sum(w => (long)w.Rows);
        if (x.Length < count * cols || y.Length < count * rows)
            throw new ArgumentException($"GemvRows: {count} rows need {count * cols} inputs and {count * rows} outputs, got {x.Length} and {y.Length}");
        fixed (float* xp = x, yp = y) Product(ws, xp, count, yp);
    }

    /// <summary>
    /// y_i = [W₁; W₂; …]·x_i for the <paramref name="count"/> rows of x ([count × cols], fp32, plain layout); y is
    /// [count × Σ rows] (each row the matrices' outputs concatenated). Every y_i is bit for bit what the one-row product
    /// of plain decoding (<c>Gemv.ProductRows(ws, x_i, 1, y_i)</c>) gives. The rows of the stack are split over the
    /// kernel threads as for one row (a split never changes a single dot product).
    /// </summary>
    public static void Product(Gemv.Matrix[] ws, float* x, int count, float* y)
    {
        int rows = 0, cols = ws[0].Cols;
        bool bf16 = ws[0].Bf16;
        foreach (var w in ws)
        {
            if (w.Cols != cols || w.Bf16 != bf16) throw new ArgumentException("GemvRows: stacked matrices need one column count and one dtype");
            rows += w.Rows;
        }
        if (count < 1) return;
        // bf16: x in the layout the one-row bf16 kernel reads (Gemv.Prepare), one copy per row.
        Gemv.Input[]? prepared = null;
        float[]? deinterleaved = null;
        if (bf16)
        {
            prepared = new Gemv.Input[count];
            for (int i = 0; i < count; i++) prepared[i] = Gemv.Prepare(new ReadOnlySpan<float>(x + (long)i * cols, cols), true);
            if (prepared[0].Floats is not null)
            {
                deinterleaved = new float[(long)count * cols];
                for (int i = 0; i < count; i++) prepared[i].Floats!.CopyTo(deinterleaved, (long)i * cols);
            }
        }
        // One row gains nothing from shared loads, and two weight rows streamed side by side read slower than one
        // from memory (Gemv.cs header): one row goes through the one-row routine.
        bool shared = Enabled && count > 1 && SharesLoads(bf16);
        int threads = Math.Max(1, Math.Min(MaxThreads > 0 ? MaxThreads : KernelThreads.Width, rows / 64));
        int per = (rows + threads - 1) / threads;
        per += per & 1; // whole pairs of weight rows per thread
        fixed (float* xd = deinterleaved)
        {
            var (xAddr, yAddr) = ((IntPtr)(bf16 ? xd : x), (IntPtr)y);
            KernelThreads.Run(threads, t =>
            {
                int lo = t * per, hi = Math.Min(rows, lo + per), start = 0;
                foreach (var w in ws)
                {
                    int a = Math.Max(lo, start) - start, b = Math.Min(hi, start + w.Rows) - start;
                    float* yw = (float*)yAddr + start;
                    if (a < b)
                    {
                        if (!shared) OneByOne(w, prepared, (float*)xAddr, count, yw, rows, a, b);
                        else if (bf16) Bf16Rows(w, (float*)xAddr, count, yw, rows, a, b);
                        else F32Rows(w, (float*)xAddr, count, yw, rows, a, b);
                    }
                    start += w.Rows;
                }
            });
        }
    }

    /// <summary>The one-row routine for every input row (the paths without shared loads).</summary>
    static void OneByOne(Gemv.Matrix w, Gemv.Input[]? prepared, float* x, int count, float* y, int ldy, int r0, int r1)
    {
        for (int i = 0; i < count; i++)
        {
            if (prepared is null) for (int r = r0; r < r1; r++) y[(long)i * ldy + r] = Gemv.DotF32(x + (long)i * w.Cols, (float*)w.Address + (long)r * w.Cols, w.Cols);
            else Gemv.Rows(prepared[i], w.Address, y + (long)i * ldy, r0, r1, w.Cols, true);
        }
    }

    // ---- fp32: Gemv.DotF32's Vector256 branch, two weight rows × up to three input rows per tile ----

    static void F32Rows(Gemv.Matrix w, float* x, int count, float* y, int ldy, int r0, int r1)
    {
        int n = w.Cols;
        float* wp = (float*)w.Address;
        int r = r0;
        for (; r + 2 <= r1; r += 2)
            for (int i = 0; i < count;)
            {
                int g = Math.Min(3, count - i);
                float* xi = x + (long)i * n, yi = y + (long)i * ldy + r;
                if (g == 3) TileF32<Two, Three>(wp + (long)r * n, n, xi, yi, ldy);
                else if (g == 2) TileF32<Two, Two>(wp + (long)r * n, n, xi, yi, ldy);
                else TileF32<Two, One>(wp + (long)r * n, n, xi, yi, ldy);
                i += g;
            }
        for (; r < r1; r++)
            for (int i = 0; i < count;)
            {
                int g = Math.Min(3, count - i);
                float* xi = x + (long)i * n, yi = y + (long)i * ldy + r;
                if (g == 3) TileF32<One, Three>(wp + (long)r * n, n, xi, yi, ldy);
                else if (g == 2) TileF32<One, Two>(wp + (long)r * n, n, xi, yi, ldy);
                else TileF32<One, One>(wp + (long)r * n, n, xi, yi, ldy);
                i += g;
            }
    }

    /// <summary>
    /// W-rows w, w + n (<typeparamref name="TW"/> of them) against X-rows x, x + n, x + 2n (<typeparamref name="TX"/>):
    /// y[i·ldy + j] = W[j]·x[i], each exactly as Gemv.DotF32 computes it with Vector256: accumulators a (elements
    /// k … k + 7 of every 16) and b (k + 8 … k + 15), FMA(w, x, acc) in order of k, Sum(a + b), then the scalar tail.
    /// The counts are type parameters so that the JIT compiles each tile with its accumulators in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void TileF32<TW, TX>(float* w0, int n, float* x0, float* y, int ldy) where TW : struct, ICount where TX : struct, ICount
    {
        float* w1 = w0 + n, x1 = x0 + n, x2 = x1 + n;
        Vector256<float> a00 = default, b00 = default, a01 = default, b01 = default, a02 = default, b02 = default;
        Vector256<float> a10 = default, b10 = default, a11 = default, b11 = default, a12 = default, b12 = default;
        int k = 0;
        for (; k + 16 <= n; k += 16)
        {
            var u = Vector256.Load(w0 + k);
            var v = TW.Value > 1 ? Vector256.Load(w1 + k) : default;
            var p = Vector256.Load(x0 + k);
            a00 = Vector256.FusedMultiplyAdd(u, p, a00);
            if (TW.Value > 1) a10 = Vector256.FusedMultiplyAdd(v, p, a10);
            if (TX.Value > 1)
            {
                p = Vector256.Load(x1 + k);
                a01 = Vector256.FusedMultiplyAdd(u, p, a01);
                if (TW.Value > 1) a11 = Vector256.FusedMultiplyAdd(v, p, a11);
            }
            if (TX.Value > 2)
            {
                p = Vector256.Load(x2 + k);
                a02 = Vector256.FusedMultiplyAdd(u, p, a02);
                if (TW.Value > 1) a12 = Vector256.FusedMultiplyAdd(v, p, a12);
            }
            u = Vector256.Load(w0 + k + 8);
            if (TW.Value > 1) v = Vector256.Load(w1 + k + 8);
            p = Vector256.Load(x0 + k + 8);
            b00 = Vector256.FusedMultiplyAdd(u, p, b00);
            if (TW.Value > 1) b10 = Vector256.FusedMultiplyAdd(v, p, b10);
            if (TX.Value > 1)
            {
                p = Vector256.Load(x1 + k + 8);
                b01 = Vector256.FusedMultiplyAdd(u, p, b01);
                if (TW.Value > 1) b11 = Vector256.FusedMultiplyAdd(v, p, b11);
            }
            if (TX.Value > 2)
            {
                p = Vector256.Load(x2 + k + 8);
                b02 = Vector256.FusedMultiplyAdd(u, p, b02);
                if (TW.Value > 1) b12 = Vector256.FusedMultiplyAdd(v, p, b12);
            }
        }
        y[0] = FinishF32(a00, b00, w0, x0, k, n);
        if (TW.Value > 1) y[1] = FinishF32(a10, b10, w1, x0, k, n);
        if (TX.Value > 1)
        {
            y[ldy] = FinishF32(a01, b01, w0, x1, k, n);
            if (TW.Value > 1) y[ldy + 1] = FinishF32(a11, b11, w1, x1, k, n);
        }
        if (TX.Value > 2)
        {
            y[2 * ldy] = FinishF32(a02, b02, w0, x2, k, n);
            if (TW.Value > 1) y[2 * ldy + 1] = FinishF32(a12, b12, w1, x2, k, n);
        }
    }

    /// <summary>Gemv.DotF32's end: the horizontal sum of a + b, then elements k … n − 1 one at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float FinishF32(Vector256<float> a, Vector256<float> b, float* w, float* x, int k, int n)
    {
        float s = Vector256.Sum(a + b);
        for (; k < n; k++) s += w[k] * x[k];
        return s;
    }

    // ---- bf16 (managed kernel): Gemv.DotBf16's Vector256 branch, one weight row × up to three input rows per tile ----

    static void Bf16Rows(Gemv.Matrix w, float* x, int count, float* y, int ldy, int r0, int r1)
    {
        int n = w.Cols;
        for (int r = r0; r < r1; r++)
        {
            ushort* wr = (ushort*)w.Address + (long)r * n;
            // The one-row kernel takes its vector branch only for rows at 4-byte-aligned addresses.
            if (((long)wr & 3) != 0)
            {
                for (int i = 0; i < count; i++) y[(long)i * ldy + r] = Gemv.DotBf16(x + (long)i * n, wr, n);
                continue;
            }
            for (int i = 0; i < count;)
            {
                int g = Math.Min(3, count - i);
                float* xi = x + (long)i * n, yi = y + (long)i * ldy + r;
                if (g == 3) TileBf16<Three>(wr, n, xi, yi, ldy);
                else if (g == 2) TileBf16<Two>(wr, n, xi, yi, ldy);
                else TileBf16<One>(wr, n, xi, yi, ldy);
                i += g;
            }
        }
    }

    /// <summary>
    /// One bf16 weight row (4-byte aligned) against <typeparamref name="TX"/> deinterleaved X-rows x, x + n, x + 2n
    /// (Gemv.Prepare's layout): y[i·ldy] = W·x[i], each exactly as Gemv.DotBf16 computes it with Vector256 —
    /// accumulators a0/b0 (even/odd halves of lanes j … j + 7) and a1/b1 (j + 8 … j + 15), Sum((a0 + b0) + (a1 + b1)),
    /// then the scalar pairs and the odd last element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void TileBf16<TX>(ushort* w, int n, float* x0, float* y, int ldy) where TX : struct, ICount
    {
        int half = n / 2, j = 0;
        uint* p = (uint*)w;
        float* x1 = x0 + n, x2 = x1 + n;
        var mask = Vector256.Create(0xFFFF0000u);
        Vector256<float> a00 = default, b00 = default, a10 = default, b10 = default;
        Vector256<float> a01 = default, b01 = default, a11 = default, b11 = default;
        Vector256<float> a02 = default, b02 = default, a12 = default, b12 = default;
        for (; j + 16 <= half; j += 16)
        {
            var v = Vector256.Load(p + j);
            var e = Vector256.ShiftLeft(v, 16).AsSingle();
            var o = (v & mask).AsSingle();
            a00 = Vector256.FusedMultiplyAdd(e, Vector256.Load(x0 + j), a00);
            b00 = Vector256.FusedMultiplyAdd(o, Vector256.Load(x0 + half + j), b00);
            if (TX.Value > 1)
            {
                a01 = Vector256.FusedMultiplyAdd(e, Vector256.Load(x1 + j), a01);
                b01 = Vector256.FusedMultiplyAdd(o, Vector256.Load(x1 + half + j), b01);
            }
            if (TX.Value > 2)
            {
                a02 = Vector256.FusedMultiplyAdd(e, Vector256.Load(x2 + j), a02);
                b02 = Vector256.FusedMultiplyAdd(o, Vector256.Load(x2 + half + j), b02);
            }
            v = Vector256.Load(p + j + 8);
            e = Vector256.ShiftLeft(v, 16).AsSingle();
            o = (v & mask).AsSingle();
            a10 = Vector256.FusedMultiplyAdd(e, Vector256.Load(x0 + j + 8), a10);
            b10 = Vector256.FusedMultiplyAdd(o, Vector256.Load(x0 + half + j + 8), b10);
            if (TX.Value > 1)
            {
                a11 = Vector256.FusedMultiplyAdd(e, Vector256.Load(x1 + j + 8), a11);
                b11 = Vector256.FusedMultiplyAdd(o, Vector256.Load(x1 + half + j + 8), b11);
            }
            if (TX.Value > 2)
            {
                a12 = Vector256.FusedMultiplyAdd(e, Vector256.Load(x2 + j + 8), a12);
                b12 = Vector256.FusedMultiplyAdd(o, Vector256.Load(x2 + half + j + 8), b12);
            }
        }
        y[0] = FinishBf16(Vector256.Sum((a00 + b00) + (a10 + b10)), w, x0, j, n);
        if (TX.Value > 1) y[ldy] = FinishBf16(Vector256.Sum((a01 + b01) + (a11 + b11)), w, x1, j, n);
        if (TX.Value > 2) y[2 * ldy] = FinishBf16(Vector256.Sum((a02 + b02) + (a12 + b12)), w, x2, j, n);
    }

    /// <summary>Gemv.DotBf16's end: the pairs from j on, then an odd last element, one at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float FinishBf16(float s, ushort* w, float* x, int j, int n)
    {
        int half = n / 2;
        float* xe = x, xo = x + half;
        for (int i = 2 * j; i < 2 * half; i++) s += Gemv.Bf16ToFloat(w[i]) * ((i & 1) == 0 ? xe[i / 2] : xo[i / 2]);
        if ((n & 1) == 1) s += Gemv.Bf16ToFloat(w[n - 1]) * x[n - 1];
        return s;
    }

    // Tile sizes as types: the JIT compiles one body per struct type argument and folds Value to a constant.
    interface ICount { static abstract int Value { get; } }
    readonly struct One : ICount { public static int Value => 1; }
    readonly struct Two : ICount { public static int Value => 2; }
    readonly struct Three : ICount { public static int Value => 3; }
}
