using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>Decoding settings. Temperature 0 is greedy; TopK 0 and TopP 1 switch those filters off.</summary>
public sealed record SamplingOptions(double Temperature = 0.0, int TopK = 0, double TopP = 1.0, long? Seed = null)
{
    public bool Greedy => Temperature <= 0;

    public SamplingOptions Validate()
    {
        if (!double.IsFinite(Temperature) || Temperature < 0) throw RecurUserException.About($"Temperature must be a finite number ≥ 0 (got {Temperature})", "Temperature");
        if (TopK < 0) throw RecurUserException.About($"TopK must be ≥ 0 (got {TopK})", "TopK");
        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1) throw RecurUserException.About($"TopP must be in (0, 1] (got {TopP})", "TopP");
        return this;
    }
}

/// <summary>Picks next tokens from logits with a seedable generator.</summary>
public sealed class Sampler : IDisposable
{
    readonly SamplingOptions _o;
    readonly Generator? _gen;
    // Scalars held while the sampler lives: temporaries could be freed during the libtorch call (Model.Ops.One).
    readonly Scalar? _temperature, _topP;
    static readonly Scalar NegativeInfinity = double.NegativeInfinity;

    public Sampler(SamplingOptions options)
    {
        _o = options.Validate();
        if (!_o.Greedy)
        {
            _gen = new Generator((ulong)(options.Seed ?? Random.Shared.NextInt64()));
            _temperature = _o.Temperature;
            _topP = _o.TopP;
        }
    }

    /// <summary>
    /// Next token ids for logits [B, V], as an array. Greedy decoding of contiguous fp32 CPU logits (what the decoders
    /// return) reads them in place instead of through four libtorch calls; the choice is libtorch's argmax: the first
    /// maximum, a NaN counting as the maximum.
    /// </summary>
    public long[] Next(Tensor logits)
    {
        if (_o.Greedy && logits.dim() == 2 && logits.dtype == ScalarType.Float32 && logits.device_type == DeviceType.CPU && logits.is_contiguous())
        {
            int b = (int)logits.shape[0], v = (int)logits.shape[1];
            var ids = new long[b];
            unsafe
            {
                float* p = (float*)Model.Gemv.Address(logits);
                for (int r = 0; r < b; r++) ids[r] = Argmax(p + (long)r * v, v);
            }
            return ids;
        }
        using var t = Sample(logits);
        return t.data<long>().ToArray();
    }

    /// <summary>The index of the first maximum of x[0 … n − 1]; the first NaN if there is one (libtorch's argmax).</summary>
    internal static unsafe int Argmax(float* x, int n)
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

    /// <summary>Next token ids [B] (int64, CPU) for logits [B, V].</summary>
    public Tensor Sample(Tensor logits)
    {
        using var scope = NewDisposeScope();
        var l = logits.to(ScalarType.Float32).cpu();
        if (_o.Greedy) return l.argmax(-1).MoveToOuterDisposeScope();
        l = l.div(_temperature!);
        if (_o.TopK > 0 && _o.TopK < l.shape[^1])
        {
            var kth = l.topk(_o.TopK, -1).values.narrow(-1, _o.TopK - 1, 1);
            l = l.masked_fill(l.lt(kth), NegativeInfinity);
        }
        if (_o.TopP < 1.0)
        {
            var (sorted, idx) = l.sort(-1, descending: true);
            var probs = sorted.softmax(-1);
            // Drop a token when the mass before it already reaches top_p; the first token always stays.
            var before = Model.Ops.Add(probs.cumsum(-1), probs.neg());
            var drop = before.gt(_topP!);
            var dropOriginal = zeros_like(drop).scatter(-1, idx, drop);
            l = l.masked_fill(dropOriginal, NegativeInfinity);
        }
        var p = l.softmax(-1);
        return multinomial(p, 1, generator: _gen).squeeze(-1).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _gen?.Dispose();
        _temperature?.Dispose();
        _topP?.Dispose();
    }
}
