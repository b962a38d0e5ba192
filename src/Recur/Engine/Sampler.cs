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
    internal static unsafe int Argmax(float* x, int n) => Greedy.Argmax(x, n);

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
