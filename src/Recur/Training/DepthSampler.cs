using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>One micro-batch's depth: <see cref="N"/> no-grad iterations, then <see cref="K"/> grad iterations.</summary>
/// <param name="Lambda">The float32 log-normal rate the Poisson draw used (NaN for a fixed depth); logged for audits.</param>
public readonly record struct DepthSample(int N, int K, double Lambda)
{
    public int Total => N + K;
}

/// <summary>
/// "poisson-lognormal-filling" depth sampler (METHOD §3.1), or a fixed (n, k) (METHOD §3.3, Fig. 2).
/// <para>
/// For a scheduled mean μ_rec and backprop depth s (capped at μ_rec): λ ~ LogNormal(ln(t + s) − σ²/2, σ)
/// with t = max(μ_rec − s, 0) and σ = 0.5, p = Poisson(λ) + 1, n = max(p − s, 0), k = min(s, p).
/// </para>
/// <para>
/// Every draw uses a fresh CPU generator seeded with (514229 + data_step) mod (2³¹ − 1), so the draw depends
/// only on the micro-batch counter: a resumed run and every data-parallel rank see the same (n, k)
/// (STYLE §7). The calls mirror mcleish7/retrofitting-recurrence:train.py <c>num_steps_sampler</c> one for one:
/// a float32 <c>log_normal_</c> on a one-element tensor, then <c>poisson</c> of that tensor with the same
/// generator. The reference also seeds a second generator (317811 + data_step) that is never drawn from;
/// creating it has no effect on the first, so it is omitted here.
/// </para>
/// <para>
/// TorchSharp binds the same libtorch CPU kernels (mt19937, Box–Muller normal, then Poisson by multiplication for
/// λ &lt; 10 and by transformed rejection above), so equal seeds and call order give PyTorch's draws: the fixture
/// test reproduces all 30 λ bit patterns and (n, k) recorded with PyTorch 1.13 (METHOD §3.1 [inferred] → pinned).
/// </para>
/// </summary>
public sealed class DepthSampler
{
    /// <summary>Seed offset of the generator both draws use (mcleish7/retrofitting-recurrence:train.py).</summary>
    public const long SeedOffset = 514229;

    /// <summary>2³¹ − 1, the modulus applied to the seed.</summary>
    public const long SeedModulus = 2147483647;

    /// <summary>σ of the log-normal rate.</summary>
    public const double Sigma = 0.5;

    /// <summary>The paper's <c>mean_backprop_depth</c>.</summary>
    public const int DefaultBackpropDepth = 8;

    readonly (int N, int K)? _fixed;

    /// <summary>The Poisson-lognormal sampler.</summary>
    public DepthSampler() { }

    DepthSampler(int n, int k) => _fixed = (n, k);

    /// <summary>A sampler that always returns (n, k), ignoring the scheduled mean (Fig. 2's fixed 32 with k = 8 is (24, 8)).</summary>
    public static DepthSampler FixedDepth(int n, int k)
    {
        if (n < 0) throw new RecurUserException($"fixed depth: n (no-grad iterations) must be ≥ 0 (got {n})");
        if (k < 1) throw new RecurUserException($"fixed depth: k (grad iterations) must be ≥ 1 (got {k})");
        return new DepthSampler(n, k);
    }

    /// <summary>True for a <see cref="FixedDepth"/> sampler.</summary>
    public bool IsFixed => _fixed is not null;

    /// <summary>The seed of the generator for a micro-batch counter.</summary>
    public static long Seed(long dataStep) => ((SeedOffset + dataStep) % SeedModulus + SeedModulus) % SeedModulus;

    /// <summary>Draws (n, k) for micro-batch <paramref name="dataStep"/> (1-based, restored on resume) at scheduled mean <paramref name="meanRecurrence"/>.</summary>
    public DepthSample Sample(int meanRecurrence, long dataStep, int backpropDepth = DefaultBackpropDepth)
    {
        if (_fixed is { } f) return new DepthSample(f.N, f.K, double.NaN);
        if (backpropDepth < 1) throw new RecurUserException($"backprop depth must be ≥ 1 (got {backpropDepth})");
        // mcleish7/retrofitting-recurrence:train.py sheduler_n_k_handler: a scheduled mean ≤ 0 counts as 1,
        // and below the backprop depth the depth is capped at the mean.
        int mean = Math.Max(meanRecurrence, 1);
        int s = Math.Min(backpropDepth, mean);
        int t = Math.Max(mean - s, 0);
        double mu = Math.Log(t + s) - Sigma * Sigma / 2;

        using var scope = NewDisposeScope();
        using var gen = new Generator(0, CPU);
        gen.manual_seed(Seed(dataStep));
        var rate = zeros(new long[] { 1 }, ScalarType.Float32).log_normal_(mu, Sigma, gen);
        var p = Scalars.Add(poisson(rate, gen), 1);
        float lambda = rate.item<float>();
        int total = checked((int)p.item<float>());
        int n = Math.Max(total - s, 0), k = Math.Min(s, total);
        return new DepthSample(n, k, lambda);
    }
}
