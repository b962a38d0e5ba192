// Matrix–vector products for batch-1 decoding, written for the memory bus.
//
// Decoding one token reads every weight once and does 2 FLOPs per weight: it is bound by memory bandwidth.
// libtorch routes a [1, in] × [out, in]ᵀ product to MKL (fp32) or oneDNN (bf16) GEMV, which on our AMD
// machines reach 17–29 GB/s where a plain streaming reduction reads 45–78 GB/s (bench/RESULTS.md). This kernel
// splits the rows into one contiguous share per thread, handed out in chunks so that a thread done early takes over
// the chunks of one that started late (KernelThreads.For), and streams each chunk row after row
// (one sequential stream per core is what the prefetchers serve best; interleaving rows measured slower) with
// AVX-512 or AVX2: fp32 with four independent accumulators, bf16 widened to fp32 exactly (a shift or a mask per
// 32-bit lane) and accumulated in fp32, as oneDNN does. Without AVX-512 BF16 dot products (not exposed by
// .NET 10) the bf16 loop needs two FMAs per 32 weights and is compute-bound near 30 GB/s per core.
// Only used without autograd, on contiguous CPU tensors; everything else goes to F.linear.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Model;

public static unsafe class Gemv
{
    /// <summary>Off switch for comparisons (bench) and as an escape hatch; on by default.</summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("RECUR_GEMV") != "0";
    /// <summary>How far ahead of the weight row being read the AVX2 kernels prefetch.</summary>
    const int PrefetchBytes = 1024;
    static readonly int MaxThreads = int.TryParse(Environment.GetEnvironmentVariable("RECUR_GEMV_THREADS"), out int n) ? n : 0;

    /// <summary>Whether <see cref="Apply"/> handles this product: x has a single row, both on the CPU, same dtype (fp32 or bf16), contiguous, no grad.</summary>
    public static bool Handles(Tensor x, Tensor weight) =>
        Enabled && weight.dim() == 2 && x.numel() == weight.shape[1] && x.shape[^1] == weight.shape[1]
        && x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU
        && x.dtype == weight.dtype && (x.dtype == ScalarType.Float32 || x.dtype == ScalarType.BFloat16)
        && x.is_contiguous() && weight.is_contiguous()
        && !(is_grad_enabled() && (x.requires_grad || weight.requires_grad));

    /// <summary>
    /// y = x·Wᵀ for x [.., in] and W [out, in]; y has x's shape with the last dim out. One row (what <see cref="Handles"/>
    /// admits) streams W; several rows (the bench compares them with F.linear) go to the tiled kernel of <see cref="ProductRows"/>.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor weight)
    {
        long outF = weight.shape[0], inF = weight.shape[1];
        int rows = (int)(x.numel() / inF);
        var shape = x.shape.ToArray();
        shape[^1] = outF;
        var y = empty(shape, x.dtype);
        bool bf16 = x.dtype == ScalarType.BFloat16;
        var xs = new float[x.numel()];
        if (bf16)
        {
            var xb = MemoryMarshal.Cast<byte, ushort>(x.bytes);
            for (int i = 0; i < xs.Length; i++) xs[i] = Bf16ToFloat(xb[i]);
        }
        else MemoryMarshal.Cast<byte, float>(x.bytes).CopyTo(xs);
        var m = Matrix.Of(weight);
        var yf = bf16 ? new float[rows * outF] : null;
        fixed (float* xp = xs, yb = yf)
            ProductRows([m], xp, rows, bf16 ? yb : (float*)Address(y));
        if (bf16)
        {
            var yh = MemoryMarshal.Cast<byte, ushort>(y.bytes);
            for (int i = 0; i < yf!.Length; i++) yh[i] = FloatToBf16(yf[i]);
        }
        return y;
    }

    /// <summary>A contiguous [rows, cols] fp32 or bf16 CPU matrix by address; the tensor behind it must stay alive.</summary>
    internal readonly record struct Matrix(IntPtr Address, int Rows, int Cols, bool Bf16)
    {
        public static Matrix Of(Tensor w) => new(Gemv.Address(w), (int)w.shape[0], (int)w.shape[1], w.dtype == ScalarType.BFloat16);
    }

    /// <summary>x in the form the kernel for a weight dtype reads (<see cref="Prepare"/>).</summary>
    internal sealed class Input
    {
        /// <summary>fp32 weights: x as is. bf16 weights, managed kernel: x deinterleaved (see Prepare).</summary>
        public float[]? Floats { get; init; }
        /// <summary>bf16 weights, native kernel: x rounded to bf16.</summary>
        public ushort[]? Halves { get; init; }
        public int Length => Floats?.Length ?? Halves!.Length;
    }

    /// <summary>
    /// x in the layout the kernel reads: as is for fp32 weights; for bf16 weights, bf16 values for the native
    /// kernel, or for the managed one deinterleaved, [x0, x2, x4, …, x1, x3, …] (then the odd last element), so
    /// that a 32-bit lane of W (two bf16, w_2j low and w_2j+1 high) meets x_2j and x_2j+1 at the same lane index
    /// after one shift or one mask.
    /// </summary>
    internal static Input Prepare(ReadOnlySpan<float> x, bool bf16)
    {
        var xs = new float[x.Length];
        if (!bf16) { x.CopyTo(xs); return new Input { Floats = xs }; }
        if (NativeBf16.Available)
        {
            var hs = new ushort[x.Length];
            for (int i = 0; i < hs.Length; i++) hs[i] = FloatToBf16(x[i]);
            return new Input { Halves = hs };
        }
        int half = x.Length / 2;
        for (int i = 0; i < half; i++) { xs[i] = x[2 * i]; xs[half + i] = x[2 * i + 1]; }
        if ((x.Length & 1) == 1) xs[^1] = x[^1];
        return new Input { Floats = xs };
    }

    [ThreadStatic] static Input? _scratch;

    /// <summary>
    /// <see cref="Prepare"/> for bf16 weights into this thread's reused buffers: valid until this thread's next call, so
    /// only for a product that runs at once (ProductRows).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static Input PrepareScratch(ReadOnlySpan<float> x)
    {
        bool native = NativeBf16.Available;
        var s = _scratch;
        if (s is null || s.Length != x.Length || (s.Halves is not null) != native)
            _scratch = s = native ? new Input { Halves = new ushort[x.Length] } : new Input { Floats = new float[x.Length] };
        if (s.Halves is { } hs) { for (int i = 0; i < hs.Length; i++) hs[i] = FloatToBf16(x[i]); return s; }
        var xs = s.Floats!;
        int half = x.Length / 2;
        for (int i = 0; i < half; i++) { xs[i] = x[2 * i]; xs[half + i] = x[2 * i + 1]; }
        if ((x.Length & 1) == 1) xs[^1] = x[^1];
        return s;
    }

    /// <summary>y (fp32) = W·x for x from <see cref="Prepare"/>, rows split over the kernel threads.</summary>
    internal static void Product(Matrix w, Input x, Span<float> y) => ProductStacked([w], x, y);

    /// <summary>
    /// y (fp32) = [W₁; W₂; …]·x: several matrices with the same columns read as one stack of rows (q|k|v, gate|up),
    /// split over the threads in one hand-off instead of one per matrix.
    /// </summary>
    internal static void ProductStacked(Matrix[] ws, Input x, Span<float> y)
    {
        int rows = 0;
        foreach (var w in ws)
        {
            if (w.Cols != x.Length || w.Bf16 != ws[0].Bf16) throw new ArgumentException($"Gemv: stacked matrices need {x.Length} columns and one dtype");
            rows += w.Rows;
        }
        if (y.Length < rows) throw new ArgumentException($"Gemv: y has {y.Length} values for {rows} rows");
        fixed (float* yp = y)
        {
            var yAddr = (IntPtr)yp;
            KernelThreads.For(rows, Threads(rows), ChunkRows(x.Length, ws[0].Bf16), (_, lo, hi) =>
            {
                int start = 0;
                foreach (var w in ws)
                {
                    int a = Math.Max(lo, start), b = Math.Min(hi, start + w.Rows);
                    // Rows a..b of the stack are rows a−start..b−start of this matrix; its outputs start at y + start.
                    if (a < b) Rows(x, w.Address, (float*)yAddr + start, a - start, b - start, w.Cols, w.Bf16);
                    start += w.Rows;
                }
            });
        }
    }

    /// <summary>
    /// Y = X·[W₁; W₂; …]ᵀ for <paramref name="batch"/> rows: x is [batch × cols], y is [batch × Σ rows] (each row the
    /// matrices' outputs concatenated), both fp32. One row goes to the streaming kernel (<see cref="ProductStacked"/>);
    /// several to a register-tiled kernel that reads each weight row once for all of them (two weight rows × four input
    /// rows per tile: six loads feed eight FMAs), rows of the stack split over the threads as for one row.
    /// </summary>
    internal static void ProductRows(Matrix[] ws, float* x, int batch, float* y)
    {
        int rows = 0, cols = ws[0].Cols;
        foreach (var w in ws)
        {
            if (w.Cols != cols || w.Bf16 != ws[0].Bf16) throw new ArgumentException("Gemv: stacked matrices need one column count and one dtype");
            rows += w.Rows;
        }
        // One row of bf16 weights: x in the layout the bf16 kernels read (in this thread's reused buffer: a decode step
        // makes ~30 of these). One row of fp32 weights: x read in place.
        if (batch == 1 && ws[0].Bf16) { ProductStacked(ws, PrepareScratch(new ReadOnlySpan<float>(x, cols)), new Span<float>(y, rows)); return; }
        var (xAddr, yAddr) = ((IntPtr)x, (IntPtr)y);
        if (batch == 1)
        {
            KernelThreads.For(rows, Threads(rows), ChunkRows(cols, false), (_, lo, hi) =>
            {
                int start = 0;
                foreach (var w in ws)
                {
                    int a = Math.Max(lo, start), b = Math.Min(hi, start + w.Rows);
                    for (int r = a - start; r < b - start; r++) ((float*)yAddr)[start + r] = DotF32((float*)xAddr, (float*)w.Address + (long)r * cols, cols);
                    start += w.Rows;
                }
            });
            return;
        }
        int threads = Math.Max(1, Math.Min(MaxThreads > 0 ? MaxThreads : KernelThreads.Width, rows / 32));
        int per = (rows + threads - 1) / threads;
        per += per & 1; // whole pairs of rows per thread: the tiles round differently from single rows (RowsBatch)
        KernelThreads.Run(threads, t =>
        {
            int lo = t * per, hi = Math.Min(rows, lo + per), start = 0;
            foreach (var w in ws)
            {
                int a = Math.Max(lo, start), b = Math.Min(hi, start + w.Rows);
                if (a < b) RowsBatch(w, (float*)xAddr, batch, (float*)yAddr + start, rows, a - start, b - start);
                start += w.Rows;
            }
        });
    }

    /// <summary>Threads for a one-row product of <paramref name="rows"/> rows: at least 64 rows each.</summary>
    internal static int Threads(int rows) => Math.Max(1, Math.Min(MaxThreads > 0 ? MaxThreads : KernelThreads.Width, rows / 64));

    /// <summary>
    /// Rows per chunk of a one-row product (KernelThreads.For): about <see cref="ChunkBytes"/> of weights, at least 16 rows.
    /// Smaller chunks balance the threads more finely but take more of the shared counters; bench/RESULTS.md (two-thread
    /// decode) has the sizes measured.
    /// </summary>
    internal static int ChunkRows(int cols, bool bf16) => Math.Max(16, ChunkBytes / Math.Max(1, cols * (bf16 ? 2 : 4)));

    const int ChunkBytes = 64 << 10;

    /// <summary>y[i, r] = W[r]·x[i] for weight rows r0 … r1 − 1 and every input row i; y's rows are <paramref name="ldy"/> apart.</summary>
    static void RowsBatch(Matrix w, float* x, int batch, float* y, int ldy, int r0, int r1)
    {
        int n = w.Cols;
        bool tiles = Vector256.IsHardwareAccelerated && (!w.Bf16 || System.Runtime.Intrinsics.X86.Avx2.IsSupported);
        int r = r0;
        if (tiles)
            for (; r + 2 <= r1; r += 2)
            {
                int i = 0;
                for (; i + 4 <= batch; i += 4)
                    if (w.Bf16) Tile2x4Bf16((ushort*)w.Address + (long)r * n, n, x + (long)i * n, y + (long)i * ldy + r, ldy);
                    else Tile2x4F32((float*)w.Address + (long)r * n, n, x + (long)i * n, y + (long)i * ldy + r, ldy);
                for (; i < batch; i++)
                {
                    y[(long)i * ldy + r] = DotRow(w, r, x + (long)i * n);
                    y[(long)i * ldy + r + 1] = DotRow(w, r + 1, x + (long)i * n);
                }
            }
        for (; r < r1; r++)
            for (int i = 0; i < batch; i++) y[(long)i * ldy + r] = DotRow(w, r, x + (long)i * n);
    }

    /// <summary>W[r]·x for a plain (not deinterleaved) fp32 x.</summary>
    static float DotRow(Matrix w, int r, float* x)
    {
        int n = w.Cols;
        if (!w.Bf16) return DotF32(x, (float*)w.Address + (long)r * n, n);
        ushort* p = (ushort*)w.Address + (long)r * n;
        int i = 0;
        float s = 0;
        if (Vector256.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8) acc = Vector256.FusedMultiplyAdd(WidenBf16(p + i), Vector256.Load(x + i), acc);
            s = Vector256.Sum(acc);
        }
        for (; i < n; i++) s += Bf16ToFloat(p[i]) * x[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> WidenBf16(ushort* p) =>
        Vector256.ShiftLeft(System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(p), 16).AsSingle();

    /// <summary>Two fp32 weight rows (w, w + n) against four input rows (x, x + n, …): y[i·ldy + j] = W[j]·x[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Tile2x4F32(float* w, int n, float* x, float* y, int ldy)
    {
        float* w1 = w + n, x1 = x + n, x2 = x1 + n, x3 = x2 + n;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        int k = 0;
        for (; k + 8 <= n; k += 8)
        {
            var u = Vector256.Load(w + k); var v = Vector256.Load(w1 + k);
            var p = Vector256.Load(x + k); a0 = Vector256.FusedMultiplyAdd(u, p, a0); b0 = Vector256.FusedMultiplyAdd(v, p, b0);
            p = Vector256.Load(x1 + k); a1 = Vector256.FusedMultiplyAdd(u, p, a1); b1 = Vector256.FusedMultiplyAdd(v, p, b1);
            p = Vector256.Load(x2 + k); a2 = Vector256.FusedMultiplyAdd(u, p, a2); b2 = Vector256.FusedMultiplyAdd(v, p, b2);
            p = Vector256.Load(x3 + k); a3 = Vector256.FusedMultiplyAdd(u, p, a3); b3 = Vector256.FusedMultiplyAdd(v, p, b3);
        }
        Store2x4(y, ldy, a0, a1, a2, a3, b0, b1, b2, b3);
        for (; k < n; k++)
        {
            y[0] += w[k] * x[k]; y[1] += w1[k] * x[k];
            y[ldy] += w[k] * x1[k]; y[ldy + 1] += w1[k] * x1[k];
            y[2 * ldy] += w[k] * x2[k]; y[2 * ldy + 1] += w1[k] * x2[k];
            y[3 * ldy] += w[k] * x3[k]; y[3 * ldy + 1] += w1[k] * x3[k];
        }
    }

    /// <summary><see cref="Tile2x4F32"/> for bf16 weights, widened exactly on load.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Tile2x4Bf16(ushort* w, int n, float* x, float* y, int ldy)
    {
        ushort* w1 = w + n;
        float* x1 = x + n, x2 = x1 + n, x3 = x2 + n;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        int k = 0;
        for (; k + 8 <= n; k += 8)
        {
            var u = WidenBf16(w + k); var v = WidenBf16(w1 + k);
            var p = Vector256.Load(x + k); a0 = Vector256.FusedMultiplyAdd(u, p, a0); b0 = Vector256.FusedMultiplyAdd(v, p, b0);
            p = Vector256.Load(x1 + k); a1 = Vector256.FusedMultiplyAdd(u, p, a1); b1 = Vector256.FusedMultiplyAdd(v, p, b1);
            p = Vector256.Load(x2 + k); a2 = Vector256.FusedMultiplyAdd(u, p, a2); b2 = Vector256.FusedMultiplyAdd(v, p, b2);
            p = Vector256.Load(x3 + k); a3 = Vector256.FusedMultiplyAdd(u, p, a3); b3 = Vector256.FusedMultiplyAdd(v, p, b3);
        }
        Store2x4(y, ldy, a0, a1, a2, a3, b0, b1, b2, b3);
        for (; k < n; k++)
        {
            float u = Bf16ToFloat(w[k]), v = Bf16ToFloat(w1[k]);
            y[0] += u * x[k]; y[1] += v * x[k];
            y[ldy] += u * x1[k]; y[ldy + 1] += v * x1[k];
            y[2 * ldy] += u * x2[k]; y[2 * ldy + 1] += v * x2[k];
            y[3 * ldy] += u * x3[k]; y[3 * ldy + 1] += v * x3[k];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store2x4(float* y, int ldy, Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3,
        Vector256<float> b0, Vector256<float> b1, Vector256<float> b2, Vector256<float> b3)
    {
        y[0] = Vector256.Sum(a0); y[1] = Vector256.Sum(b0);
        y[ldy] = Vector256.Sum(a1); y[ldy + 1] = Vector256.Sum(b1);
        y[2 * ldy] = Vector256.Sum(a2); y[2 * ldy + 1] = Vector256.Sum(b2);
        y[3 * ldy] = Vector256.Sum(a3); y[3 * ldy + 1] = Vector256.Sum(b3);
    }

    /// <summary>The first element's address; the tensor (kept alive by the caller) owns the memory.</summary>
    internal static IntPtr Address(Tensor t) => THSTensor_data(t.Handle);

    // The address of a tensor's first element (storage offset included), from TorchSharp's own native library:
    // one call, and no 2 GiB limit as with Tensor.bytes.
    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr handle);

    internal static void Rows(Input x, IntPtr w, float* y, int r0, int r1, int cols, bool bf16)
    {
        if (x.Halves is { } hs)
        {
            fixed (ushort* hp = hs) NativeBf16.Rows((ushort*)w, hp, y, r0, r1, cols);
            return;
        }
        fixed (float* xp = x.Floats)
        {
            if (bf16)
            {
                ushort* wp = (ushort*)w;
                for (int r = r0; r < r1; r++) y[r] = DotBf16(xp, wp + (long)r * cols, cols);
            }
            else
            {
                float* wp = (float*)w;
                for (int r = r0; r < r1; r++) y[r] = DotF32(xp, wp + (long)r * cols, cols);
            }
        }
    }

    /// <summary>
    /// The optional native AVX-512 BF16 kernel (src/Recur/Native/recur_kernels.c), loaded from beside the
    /// assemblies or the app's native search path when the build compiled it and the CPU has the instructions. RECUR_NATIVE=0 turns it off.
    /// </summary>
    internal static class NativeBf16
    {
        static readonly delegate* unmanaged<ushort*, ushort*, float*, long, long, long, void> Kernel = Load();

        /// <summary>The kernel is present and usable.</summary>
        public static bool Loaded => Kernel != null;
        /// <summary>Switch for comparisons (tests, bench); on by default.</summary>
        public static bool Enabled { get; set; } = true;
        public static bool Available => Kernel != null && Enabled;

        public static void Rows(ushort* w, ushort* x, float* y, int r0, int r1, int cols) => Kernel(w, x, y, r0, r1, cols);

        static delegate* unmanaged<ushort*, ushort*, float*, long, long, long, void> Load()
        {
            if (Environment.GetEnvironmentVariable("RECUR_NATIVE") == "0" || !System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return null;
            // Beside the assemblies (repository builds, the dotnet tool, apps with a RuntimeIdentifier) or where the
            // app's deps.json puts the package's runtimes/linux-x64/native asset (apps without one).
            string path = Path.Combine(AppContext.BaseDirectory, "librecur_kernels.so");
            if (!(File.Exists(path) && NativeLibrary.TryLoad(path, out var lib))
                && !NativeLibrary.TryLoad("recur_kernels", typeof(NativeBf16).Assembly, null, out lib)) return null;
            if (!NativeLibrary.TryGetExport(lib, "recur_kernels_abi", out var abi) || ((delegate* unmanaged<int>)abi)() != 1) return null;
            if (!NativeLibrary.TryGetExport(lib, "recur_has_avx512_bf16", out var has) || ((delegate* unmanaged<int>)has)() != 1) return null;
            return NativeLibrary.TryGetExport(lib, "recur_gemv_bf16", out var k) ? (delegate* unmanaged<ushort*, ushort*, float*, long, long, long, void>)k : null;
        }
    }

    // ---- fp32 ----

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotF32(float* x, float* w, int n)
    {
        float s = 0;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a = default, b = default, c = default, d = default;
            for (; i + 64 <= n; i += 64)
            {
                a = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a);
                b = Vector512.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), b);
                c = Vector512.FusedMultiplyAdd(Vector512.Load(w + i + 32), Vector512.Load(x + i + 32), c);
                d = Vector512.FusedMultiplyAdd(Vector512.Load(w + i + 48), Vector512.Load(x + i + 48), d);
            }
            for (; i + 16 <= n; i += 16) a = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a);
            s = Vector512.Sum((a + b) + (c + d));
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            // A prefetch of the weights PrefetchBytes ahead (one 64-byte line per iteration): one core's stream keeps more
            // lines in flight than the hardware prefetcher alone and reads more of the memory bus (bench/RESULTS.md,
            // "Per-token overhead on small models"). A prefetch past the matrix's end is harmless (it never faults). The
            // arithmetic, and so the reduction order GemvRows reproduces, is unchanged.
            Vector256<float> a = default, b = default;
            for (; i + 16 <= n; i += 16)
            {
                if (Sse.IsSupported) Sse.Prefetch0((byte*)(w + i) + PrefetchBytes);
                a = Vector256.FusedMultiplyAdd(Vector256.Load(w + i), Vector256.Load(x + i), a);
                b = Vector256.FusedMultiplyAdd(Vector256.Load(w + i + 8), Vector256.Load(x + i + 8), b);
            }
            s = Vector256.Sum(a + b);
        }
        for (; i < n; i++) s += w[i] * x[i];
        return s;
    }

    // ---- bf16: the upper 16 bits of an fp32 ----
    // A 32-bit lane of W holds w_2j (low half) and w_2j+1 (high half): `lane << 16` is w_2j as an fp32 and
    // `lane & 0xFFFF0000` is w_2j+1, exactly. With x deinterleaved (evens, then odds) one load of W feeds two FMAs
    // and no lane shuffles are needed. Rows of odd length start at odd addresses every other row: those go scalar.

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotBf16(float* x, ushort* w, int n)
    {
        int half = n / 2, j = 0;
        float* xe = x, xo = x + half;
        uint* p = (uint*)w;
        float s = 0;
        if (Vector512.IsHardwareAccelerated && ((long)w & 3) == 0)
        {
            var mask = Vector512.Create(0xFFFF0000u);
            // Four independent accumulators (even/odd × two vectors) so FMA latency never stalls the stream.
            Vector512<float> a0 = default, b0 = default, a1 = default, b1 = default;
            for (; j + 32 <= half; j += 32)
            {
                var v0 = Vector512.Load(p + j); var v1 = Vector512.Load(p + j + 16);
                a0 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(v0, 16).AsSingle(), Vector512.Load(xe + j), a0);
                b0 = Vector512.FusedMultiplyAdd((v0 & mask).AsSingle(), Vector512.Load(xo + j), b0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(v1, 16).AsSingle(), Vector512.Load(xe + j + 16), a1);
                b1 = Vector512.FusedMultiplyAdd((v1 & mask).AsSingle(), Vector512.Load(xo + j + 16), b1);
            }
            for (; j + 16 <= half; j += 16)
            {
                var v0 = Vector512.Load(p + j);
                a0 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(v0, 16).AsSingle(), Vector512.Load(xe + j), a0);
                b0 = Vector512.FusedMultiplyAdd((v0 & mask).AsSingle(), Vector512.Load(xo + j), b0);
            }
            s = Vector512.Sum((a0 + b0) + (a1 + b1));
        }
        else if (Vector256.IsHardwareAccelerated && ((long)w & 3) == 0)
        {
            var mask = Vector256.Create(0xFFFF0000u);
            Vector256<float> a0 = default, b0 = default, a1 = default, b1 = default;
            for (; j + 16 <= half; j += 16)
            {
                if (Sse.IsSupported) Sse.Prefetch0((byte*)(p + j) + PrefetchBytes); // one 64-byte line per iteration, as DotF32
                var v0 = Vector256.Load(p + j); var v1 = Vector256.Load(p + j + 8);
                a0 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(v0, 16).AsSingle(), Vector256.Load(xe + j), a0);
                b0 = Vector256.FusedMultiplyAdd((v0 & mask).AsSingle(), Vector256.Load(xo + j), b0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(v1, 16).AsSingle(), Vector256.Load(xe + j + 8), a1);
                b1 = Vector256.FusedMultiplyAdd((v1 & mask).AsSingle(), Vector256.Load(xo + j + 8), b1);
            }
            s = Vector256.Sum((a0 + b0) + (a1 + b1));
        }
        // Scalar remainder: the pairs from j on, then an odd last element.
        for (int i = 2 * j; i < 2 * half; i++) s += Bf16ToFloat(w[i]) * ((i & 1) == 0 ? xe[i / 2] : xo[i / 2]);
        if ((n & 1) == 1) s += Bf16ToFloat(w[n - 1]) * x[n - 1];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Bf16ToFloat(ushort b) => BitConverter.Int32BitsToSingle(b << 16);

    /// <summary>Round to nearest even, as libtorch's fp32 → bf16 conversion (NaN stays NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort FloatToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7FFFFFFF) > 0x7F800000) return 0x7FC0;
        return (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    }
}
