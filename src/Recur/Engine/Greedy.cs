using System.Runtime.Intrinsics;

namespace Recur.Engine;

/// <summary>
/// Greedy choice over fp32 logits in managed code. Apart from <see cref="Sampler"/> (which holds libtorch scalars) so
/// that the libtorch-free generation path (MappedDecoder.cs) can use it without loading libtorch.
/// </summary>
internal static class Greedy
{
    /// <summary>Logits from this many values on are scanned by the kernel threads (<see cref="Argmax"/>).</summary>
    internal const int ParallelFrom = 16384;

    /// <summary>
    /// The index of the first maximum of x[0 … n − 1]; the first NaN if there is one (libtorch's argmax). A vocabulary's
    /// worth of logits is split over the kernel threads the way Gemv splits the classifier's rows that wrote them (equal
    /// contiguous shares, Gemv.Threads), so each thread mostly scans values still in its own cache instead of the calling
    /// thread pulling a helper's half across cores; the shares' answers combine to the same index.
    /// </summary>
    public static unsafe int Argmax(float* x, int n)
    {
        int parts = n >= ParallelFrom ? Model.Gemv.Threads(n) : 1;
        if (parts <= 1) return ArgmaxSerial(x, n);
        int per = (n + parts - 1) / parts;
        var found = new int[parts];
        var xAddr = (IntPtr)x;
        Model.KernelThreads.Run(parts, t =>
        {
            int lo = t * per, len = Math.Min(n, lo + per) - lo;
            found[t] = len > 0 ? lo + ArgmaxSerial((float*)xAddr + lo, len) : -1;
        });
        // The first share holding a NaN gives the first NaN; else the largest of the shares' first maxima, the earliest
        // share winning a tie (so, the first maximum overall).
        foreach (int i in found) if (i >= 0 && float.IsNaN(x[i])) return i;
        int best = found[0];
        for (int p = 1; p < parts; p++) if (found[p] >= 0 && x[found[p]] > x[best]) best = found[p];
        return best;
    }

    /// <summary><see cref="Argmax"/> on the calling thread alone.</summary>
    internal static unsafe int ArgmaxSerial(float* x, int n)
    {
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            int i = 0;
            var m = Vector256.Create(float.NegativeInfinity);
            var ordered = Vector256<float>.AllBitsSet;
            for (; i + 8 <= n; i += 8)
            {
                var v = Vector256.Load(x + i);
                ordered &= Vector256.Equals(v, v); // a lane that held a NaN turns false
                m = Vector256.Max(m, v);
            }
            bool nan = ordered != Vector256<float>.AllBitsSet;
            for (int t = i; t < n && !nan; t++) nan = float.IsNaN(x[t]);
            if (!nan)
            {
                float max = m[0];
                for (int k = 1; k < 8; k++) max = Math.Max(max, m[k]);
                // The first position holding the vector part's maximum, then the tail may hold a larger value.
                var target = Vector256.Create(max);
                int best = 0;
                for (int j = 0; j < i; j += 8)
                {
                    uint hit = Vector256.Equals(Vector256.Load(x + j), target).ExtractMostSignificantBits();
                    if (hit != 0) { best = j + System.Numerics.BitOperations.TrailingZeroCount(hit); break; }
                }
                for (int t = i; t < n; t++) if (x[t] > x[best]) best = t;
                return best;
            }
        }
        int first = 0;
        for (int t = 0; t < n; t++)
        {
            if (float.IsNaN(x[t])) return t;
            if (x[t] > x[first]) first = t;
        }
        return first;
    }
}
