namespace Recur.Data;

/// <summary>
/// SplitMix64 (Steele, Lea &amp; Flood, "Fast splittable pseudorandom number generators", 2014):
/// a 64-bit state advanced by a fixed odd increment and scrambled on output. The data pipeline
/// uses it instead of <see cref="System.Random"/>, whose algorithm is an implementation detail
/// of the runtime, so that row orders are the same on every machine and .NET version.
/// </summary>
public struct SplitMix64
{
    private const ulong Gamma = 0x9E3779B97F4A7C15UL;

    /// <summary>The whole generator state: saving it and constructing from it continues the stream.</summary>
    public ulong State { get; private set; }

    public SplitMix64(ulong state) => State = state;

    /// <summary>The next 64 uniformly distributed bits.</summary>
    public ulong Next()
    {
        State += Gamma;
        return Mix(State);
    }

    /// <summary>A uniform integer in [0, <paramref name="bound"/>), without modulo bias (Lemire's multiply-and-reject).</summary>
    public ulong NextBelow(ulong bound)
    {
        ArgumentOutOfRangeException.ThrowIfZero(bound);
        ulong hi = Math.BigMul(Next(), bound, out ulong lo);
        if (lo < bound)
        {
            // Reject the few low products that would make small results more likely.
            ulong threshold = (0 - bound) % bound;
            while (lo < threshold)
                hi = Math.BigMul(Next(), bound, out lo);
        }
        return hi;
    }

    /// <summary>The SplitMix64 output function, also used to derive independent seeds.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>
    /// A generator for one (seed, stream) pair; distinct streams (e.g. one per data source)
    /// give unrelated sequences for the same seed.
    /// </summary>
    public static SplitMix64 For(long seed, ulong stream) => new(Mix((ulong)seed) ^ Mix(stream * Gamma + 1));

    /// <summary>A uniformly random permutation of 0..n-1 (Fisher–Yates, drawing from the top down).</summary>
    public static int[] Permutation(int n, SplitMix64 rng)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = (int)rng.NextBelow((ulong)i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}
