using Recur.Engine;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// The GEMV kernel is chosen explicitly (IKvCache.MatVec), never by Ops.Linear on its own: the reference forward is
/// F.linear throughout. Flips Gemv.Enabled, so it runs alone.
/// </summary>
[Collection(ProcessSwitchesCollection.Name)]
public class MatVecRoutingTests
{
    static Tensor Last(ICausalLM m, IKvCache? cache)
    {
        using var _ = no_grad();
        var ids = tensor(new long[] { 1, 7, 3 }).reshape(1, 3);
        if (cache is null) return m.Forward(ids.narrow(1, 2, 1));
        m.Forward(ids.narrow(1, 0, 2), cache: cache);
        return m.Forward(ids.narrow(1, 2, 1), cache: cache);
    }

    static Tensor WithGemv(bool enabled, Func<Tensor> f)
    {
        bool was = Gemv.Enabled;
        Gemv.Enabled = enabled;
        try { return f(); }
        finally { Gemv.Enabled = was; }
    }

    [Fact]
    public void A_single_row_forward_without_the_opt_in_is_the_reference_forward()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 31);
        var on = WithGemv(true, () => Last(m, null));
        var off = WithGemv(false, () => Last(m, null));
        Assert.True(TensorAssert.Same(on, off), "a batch-1 forward without a cache that asks for it went to the GEMV kernel");
        using var cache = new KvCache(m.CacheSlots);
        using var cacheOff = new KvCache(m.CacheSlots);
        Assert.True(TensorAssert.Same(WithGemv(true, () => Last(m, cache)), WithGemv(false, () => Last(m, cacheOff))));
    }

    [Fact]
    public void A_decode_cache_that_opts_in_uses_the_kernel_and_agrees_with_the_reference()
    {
        using var m = TestModels.Random(Presets.Get("tiny"), seed: 32);
        using var a = new KvCache(m.CacheSlots) { MatVec = true };
        using var b = new KvCache(m.CacheSlots) { MatVec = true };
        var kernel = WithGemv(true, () => Last(m, a));
        var reference = WithGemv(false, () => Last(m, b));
        Assert.False(TensorAssert.Same(kernel, reference), "the opt-in did not reach the GEMV kernel (bit-identical to F.linear)");
        Assert.True(kernel.allclose(reference, rtol: 0, atol: 1e-4), $"max diff {(kernel - reference).abs().max().item<float>()}");
    }
}
